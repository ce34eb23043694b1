"""Checkpoint loading under ``torch.load(weights_only=True)`` and student-only export.

Since torch 2.6, ``torch.load`` defaults to ``weights_only=True``, which refuses any pickled
global that is not allow-listed. MMEngine 0.10 checkpoints hold a few such globals besides
tensors (the MessageHub's ``HistoryBuffer`` objects and the numpy arrays and scalars inside
them), so ``--resume`` fails with "Weights only load failed". :func:`register_safe_globals`
allow-lists exactly those types, which keeps arbitrary pickled code from running while MMEngine
checkpoints load. Loading a checkpoint that needs any other global requires an explicit opt-in,
either :func:`trusted_pickle_loading` or the ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` environment
variable that ``tools/train.py --trust-checkpoint`` sets.
"""

import contextlib
import os
import os.path as osp
import pickle
from collections import OrderedDict
from typing import Any, Dict, Iterator, List, Optional

import numpy as np
import torch
from mmengine.logging import HistoryBuffer, print_log
from mmengine.runner.checkpoint import _load_checkpoint

_TRUST_ENV = 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'
STUDENT_PREFIX = 'student.'


def _numpy_safe_globals() -> List:
    """Return the numpy globals that pickled arrays, dtypes and scalars refer to."""
    try:  # numpy >= 2 keeps the pickling helpers in numpy._core
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct, scalar
    dtype_classes = [type(np.dtype(name)) for name in np.sctypeDict.values()]
    return [_reconstruct, scalar, np.ndarray, np.dtype, *set(dtype_classes)]


_HISTORY_BUFFER_STATISTICS = ('min', 'max', 'mean', 'current')


def _history_buffer_getattr(owner: Any, name: str) -> Any:
    """Stand-in for ``getattr`` that only fetches HistoryBuffer's statistics methods.

    A HistoryBuffer pickles its statistics methods (``HistoryBuffer.min`` and so on) as
    ``getattr(HistoryBuffer, 'min')``. Allow-listing the real ``getattr`` would let a crafted
    file reach any attribute of any object, so the loader gets this narrower function instead.
    """
    allowed = set(_HISTORY_BUFFER_STATISTICS) | set(HistoryBuffer._statistics_methods)
    if owner is HistoryBuffer and name in allowed:
        return getattr(owner, name)
    raise pickle.UnpicklingError(
        f'checkpoint asks for getattr({owner!r}, {name!r}), which is not a HistoryBuffer '
        'statistics method; load it with trust_checkpoint=True only if the file is trusted'
    )


def register_safe_globals() -> None:
    """Allow-list the non-tensor types of MMEngine checkpoints for ``weights_only`` loading."""
    if hasattr(torch.serialization, 'add_safe_globals'):  # torch >= 2.4
        torch.serialization.add_safe_globals(
            [
                HistoryBuffer,
                (_history_buffer_getattr, 'builtins.getattr'),
                *_numpy_safe_globals(),
            ]
        )


@contextlib.contextmanager
def trusted_pickle_loading(enabled: bool = True) -> Iterator[None]:
    """Let ``torch.load`` calls that do not pass ``weights_only`` unpickle anything inside.

    Only use it for checkpoints from a trusted source: a full pickle can run arbitrary code.
    """
    if not enabled:
        yield
        return
    previous = os.environ.get(_TRUST_ENV)
    os.environ[_TRUST_ENV] = '1'
    try:
        yield
    finally:
        if previous is None:
            del os.environ[_TRUST_ENV]
        else:
            os.environ[_TRUST_ENV] = previous


def _is_remote(path: str) -> bool:
    return '://' in path or path.startswith(('open-mmlab:', 'torchvision:', 'mmcls:'))


def load_checkpoint_file(path: str, trusted: bool = False) -> dict:
    """Load a checkpoint (local path or URL) onto the CPU.

    Args:
        path: Local file, ``http(s)://`` URL or any other prefix MMEngine's loader supports.
        trusted: Unpickle any object in the file. Leave False unless the file is trusted.

    Raises:
        FileNotFoundError: ``path`` is local and does not exist.
        RuntimeError: The file needs globals outside the allow-list and ``trusted`` is False.
    """
    if not _is_remote(path) and not osp.isfile(path):
        raise FileNotFoundError(f'checkpoint not found: {path!r}')
    try:
        with trusted_pickle_loading(trusted):
            return _load_checkpoint(path, map_location='cpu')
    except Exception as error:  # torch raises a bare UnpicklingError subclass here
        if 'Weights only load failed' not in str(error):
            raise
        raise RuntimeError(
            f'{path!r} was not loaded: it is not a checkpoint, or it contains pickled objects '
            'outside the safe allow-list. '
            'If it is a checkpoint from a source you trust, pass trust_checkpoint=True (teacher) or '
            f'--trust-checkpoint (tools/train.py). Details: {error}'
        ) from error


def get_state_dict(checkpoint: dict) -> Dict[str, torch.Tensor]:
    """Return the model weights of a loaded checkpoint without a DDP ``module.`` prefix."""
    state_dict = checkpoint.get('state_dict', checkpoint)
    return OrderedDict(
        (key[len('module.') :] if key.startswith('module.') else key, value)
        for key, value in state_dict.items()
    )


def student_state_dict(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Keep the student's weights of a distillation state dict, with the prefix removed.

    Connectors and distillation-loss parameters are left out: the student detector does not
    use them at inference.

    Raises:
        ValueError: The state dict contains no ``student.`` keys, so it is not a distillation one.
    """
    student = OrderedDict(
        (key[len(STUDENT_PREFIX) :], value)
        for key, value in state_dict.items()
        if key.startswith(STUDENT_PREFIX)
    )
    if not student:
        raise ValueError(
            "the checkpoint has no 'student.' weights, so it is not a kd_plugin distillation "
            f'checkpoint (first keys: {list(state_dict)[:3]})'
        )
    return student


def _write_weights_checkpoint(src: str, checkpoint: dict, weights: dict, dst: str) -> str:
    """Save ``weights`` with the plain parts of ``checkpoint['meta']`` to ``dst`` atomically."""
    source_meta = checkpoint.get('meta', {})
    meta = {
        key: source_meta[key]
        for key in ('epoch', 'iter', 'dataset_meta', 'mmengine_version', 'experiment_name')
        if key in source_meta
    }
    meta['kd_plugin'] = dict(exported_from=src if _is_remote(src) else osp.abspath(src))
    os.makedirs(osp.dirname(osp.abspath(dst)), exist_ok=True)
    # Write to a temporary name first so an interrupted save never leaves a truncated file.
    partial = dst + '.partial'
    torch.save(dict(meta=meta, state_dict=weights), partial)
    os.replace(partial, dst)
    return dst


def export_student_checkpoint(src: str, dst: str, trusted: bool = False) -> str:
    """Write the student of distillation checkpoint ``src`` as a plain detector checkpoint.

    The output holds only tensors and plain Python values, so plain MMYOLO/MMDetection load it
    with ``torch.load(weights_only=True)`` and without kd_plugin installed. When training used
    EMA, MMEngine's checkpoint ``state_dict`` already contains the averaged weights, which are the
    ones exported.

    Returns:
        ``dst``.
    """
    checkpoint = load_checkpoint_file(src, trusted=trusted)
    weights = student_state_dict(get_state_dict(checkpoint))
    _write_weights_checkpoint(src, checkpoint, weights, dst)
    print_log(f'exported {len(weights)} student tensors from {src} to {dst}', logger='current')
    return dst


def slim_checkpoint(src: str, dst: str, half: bool = False, trusted: bool = False) -> str:
    """Write the model weights of training checkpoint ``src`` without optimizer or log state.

    Args:
        src: Checkpoint written by MMEngine training.
        dst: Output path.
        half: Store floating-point tensors as float16, which halves the file. Loading casts
            them back to the model's dtype.
        trusted: Unpickle any object in ``src``. Only for trusted files.

    Returns:
        ``dst``.
    """
    checkpoint = load_checkpoint_file(src, trusted=trusted)
    weights = get_state_dict(checkpoint)
    if half:
        weights = OrderedDict(
            (key, value.half() if value.is_floating_point() else value)
            for key, value in weights.items()
        )
    return _write_weights_checkpoint(src, checkpoint, weights, dst)


def check_state_dict_fits(
    model: torch.nn.Module, state_dict: Dict[str, torch.Tensor], source: str
) -> Optional[str]:
    """Describe how ``state_dict`` fails to fit ``model``; None when every key and shape fits."""
    expected = model.state_dict()
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    mismatched = [
        f'{key}: checkpoint {tuple(state_dict[key].shape)} vs model {tuple(value.shape)}'
        for key, value in expected.items()
        if key in state_dict and tuple(state_dict[key].shape) != tuple(value.shape)
    ]
    if not (missing or unexpected or mismatched):
        return None

    def sample(keys: List[str]) -> str:
        more = f' ... (+{len(keys) - 5} more)' if len(keys) > 5 else ''
        return ', '.join(keys[:5]) + more

    parts = [f'checkpoint {source!r} does not fit the model:']
    if missing:
        parts.append(f'{len(missing)} missing keys [{sample(missing)}]')
    if unexpected:
        parts.append(f'{len(unexpected)} unexpected keys [{sample(unexpected)}]')
    if mismatched:
        parts.append(f'{len(mismatched)} shape mismatches [{sample(mismatched)}]')
    return ' '.join(parts)
