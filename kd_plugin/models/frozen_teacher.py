"""A frozen teacher detector, hidden from the owning model's parameters and state dict."""

import os
from typing import Optional, Tuple

from mmengine.logging import print_log
from mmengine.model import revert_sync_batchnorm

from ..utils.checkpoint import check_state_dict_fits, get_state_dict, load_checkpoint_file
from .build import ModelSource, build_detector


def checkpoint_classes(checkpoint: object) -> Optional[Tuple[str, ...]]:
    """Return the class names a checkpoint's meta records, None if it records none."""
    meta = checkpoint.get('meta') if isinstance(checkpoint, dict) else None
    if not isinstance(meta, dict):
        return None
    dataset_meta = meta.get('dataset_meta') or {}
    classes = dataset_meta.get('classes') or meta.get('CLASSES')
    return tuple(classes) if classes else None


class FrozenTeacher:
    """Hold a teacher detector so that nothing trains, averages, syncs or saves it.

    The holder is a plain object, not an ``nn.Module``, so a model that keeps it as an attribute
    does not list the teacher's parameters or buffers. That keeps the teacher out of every
    optimizer, out of MMEngine's EMA models, out of DDP's parameter and buffer synchronisation,
    out of SyncBN conversion and out of checkpoints (the teacher is rebuilt from its own
    checkpoint, so nothing is lost). The owning model must forward device and dtype moves
    through :meth:`apply`.

    Args:
        config: The teacher's model config: a dict, a config file or a ``package::`` path.
        checkpoint: The teacher's weights: a local file or a URL.
        strict: Refuse a checkpoint whose keys or shapes do not match the teacher exactly.
        trust_checkpoint: Unpickle any object in the checkpoint. Only for trusted files.
    """

    def __init__(
        self,
        config: ModelSource,
        checkpoint: Optional[str],
        strict: bool = True,
        trust_checkpoint: bool = False,
    ):
        if not checkpoint:
            raise ValueError(
                'the teacher needs a checkpoint: set teacher=dict(config=..., '
                "checkpoint='path/or/url.pth'); a teacher with random weights teaches nothing"
            )
        # MMYOLO's YOLODetector turns its BatchNorm layers into SyncBatchNorm when it is built in
        # a process group of 2+ ranks (use_syncbn=True by default). The teacher only runs in eval
        # mode, where both compute the same, so it gets plain BatchNorm and never waits on
        # other ranks.
        self.module = revert_sync_batchnorm(build_detector(config))
        self.checkpoint = checkpoint
        # Class names in the checkpoint's meta (MMEngine: dataset_meta.classes, MMDetection 2.x:
        # CLASSES), in training order; None when the checkpoint does not record them.
        self.classes: Optional[Tuple[str, ...]] = None
        self._load_weights(checkpoint, strict, trust_checkpoint)
        self.module.requires_grad_(False)
        self.module.eval()

    def _load_weights(self, checkpoint: str, strict: bool, trusted: bool) -> None:
        try:
            loaded = load_checkpoint_file(checkpoint, trusted=trusted)
        except FileNotFoundError:
            raise FileNotFoundError(
                f'teacher checkpoint not found: {checkpoint!r} (relative paths start at '
                f'{os.getcwd()}); run from the repository root, or set '
                'model.teacher.checkpoint to the teacher weights'
            ) from None
        self.classes = checkpoint_classes(loaded)
        state_dict = get_state_dict(loaded)
        problem = check_state_dict_fits(self.module, state_dict, checkpoint)
        if problem and strict:
            raise ValueError(
                f'{problem}. Check that teacher.config describes the model the checkpoint was '
                'trained as, or set teacher.strict=False to load only the keys whose shapes match.'
            )
        if problem:
            print_log(f'teacher loaded non-strictly: {problem}', logger='current', level=30)
            expected = self.module.state_dict()
            state_dict = {
                key: value
                for key, value in state_dict.items()
                if key in expected and value.shape == expected[key].shape
            }
        self.module.load_state_dict(state_dict, strict=False)

    def apply(self, fn) -> None:
        """Apply a tensor conversion (``Module._apply``) to the teacher, e.g. a device move."""
        self.module._apply(fn)

    def num_parameters(self) -> int:
        return sum(parameter.numel() for parameter in self.module.parameters())

    def __deepcopy__(self, memo) -> 'FrozenTeacher':
        # The teacher never changes during training, so copies of the owning model (MMEngine's
        # EMA model is one) can share it instead of holding a second copy in memory.
        return self

    def __repr__(self) -> str:
        return (
            f'FrozenTeacher({type(self.module).__name__}, '
            f'{self.num_parameters() / 1e6:.2f}M parameters, checkpoint={self.checkpoint!r})'
        )
