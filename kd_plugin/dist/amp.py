"""Mixed-precision training on the CPU: bfloat16 autocast with MMEngine's optimizer wrapper API."""

from contextlib import contextmanager
from typing import Union

import torch
import torch.nn as nn
from mmengine.optim import AmpOptimWrapper, OptimWrapper
from mmengine.runner.amp import autocast

from ..registry import OPTIM_WRAPPERS


@OPTIM_WRAPPERS.register_module()
class CPUAmpOptimWrapper(AmpOptimWrapper):
    """:class:`AmpOptimWrapper` for CPU training under bfloat16 autocast.

    MMEngine 0.10.7's AmpOptimWrapper asserts that a GPU, NPU, MLU or MUSA device is present,
    and its CPU autocast accepts bfloat16 only. This wrapper keeps the parent's backward, step,
    checkpoint state (``loss_scaler`` in the optimizer state dict) and gradient accumulation, and
    differs in three ways: it starts on machines without an accelerator (and raises on machines
    with CUDA), it autocasts on the CPU device type, and its loss scaler is
    ``torch.amp.GradScaler('cpu')``.

    bfloat16 has float32's exponent range, so gradients rarely overflow and the scaler seldom
    matters. It is kept so that checkpoints and the skipping of non-finite steps behave as in
    GPU mixed precision: a step whose gradients contain inf or NaN leaves the parameters and
    the optimizer state (momentum) untouched, and dynamic scaling then halves the scale.

    Args:
        loss_scale: ``'dynamic'`` (GradScaler's defaults), a float (a static scale) or a dict of
            ``torch.amp.GradScaler`` arguments.
        dtype: Autocast dtype; only ``'bfloat16'`` (or ``torch.bfloat16``) is valid.
        **kwargs: Arguments of :class:`OptimWrapper`, such as ``optimizer`` and ``clip_grad``.
    """

    def __init__(
        self,
        loss_scale: Union[str, float, dict] = 'dynamic',
        dtype: Union[str, torch.dtype] = 'bfloat16',
        **kwargs,
    ) -> None:
        if torch.cuda.is_available():
            # The Runner puts the model on the GPU, where CPU autocast would change nothing.
            raise ValueError(
                'CPUAmpOptimWrapper autocasts CPU operations only, but CUDA is available; use '
                "optim_wrapper.type='AmpOptimWrapper' on GPUs, or hide them with "
                "CUDA_VISIBLE_DEVICES='' to train on the CPU"
            )
        if dtype not in ('bfloat16', torch.bfloat16):
            raise ValueError(
                f"CPU autocast runs in bfloat16 only, got dtype={dtype!r}; set dtype='bfloat16'"
            )
        # AmpOptimWrapper.__init__ asserts that an accelerator is present, so it is skipped.
        OptimWrapper.__init__(self, **kwargs)
        self._scale_update_param = None
        if loss_scale == 'dynamic':
            self.loss_scaler = torch.amp.GradScaler('cpu')
        elif isinstance(loss_scale, float):
            self._scale_update_param = loss_scale
            self.loss_scaler = torch.amp.GradScaler('cpu', init_scale=loss_scale)
        elif isinstance(loss_scale, dict):
            self.loss_scaler = torch.amp.GradScaler('cpu', **loss_scale)
        else:
            raise TypeError(
                f"loss_scale must be 'dynamic', a float or a dict of GradScaler arguments, got "
                f'{loss_scale!r}'
            )
        self.cast_dtype = torch.bfloat16

    @contextmanager
    def optim_context(self, model: nn.Module):
        """Run the forward pass under CPU bfloat16 autocast (and ``no_sync`` while accumulating)."""
        with OptimWrapper.optim_context(self, model):
            with autocast(device_type='cpu', dtype=self.cast_dtype):
                yield
