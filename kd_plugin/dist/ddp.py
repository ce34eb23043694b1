"""MMEngine's DistributedDataParallel wrapper for models that train on CPU."""

from typing import Optional, Sequence

import torch.nn as nn
from mmengine.logging import print_log
from mmengine.model import MMDistributedDataParallel, revert_sync_batchnorm

from ..registry import MODEL_WRAPPERS


def count_sync_batchnorms(module: nn.Module) -> int:
    """Count the ``torch.nn.SyncBatchNorm`` layers registered in ``module``."""
    return sum(isinstance(layer, nn.SyncBatchNorm) for layer in module.modules())


@MODEL_WRAPPERS.register_module()
class CPUDistributedDataParallel(MMDistributedDataParallel):
    """:class:`MMDistributedDataParallel` for a model whose parameters are on the CPU.

    It differs from the MMEngine class in two ways. ``device_ids`` must be None, as
    DistributedDataParallel requires for CPU modules (``Runner.wrap_model`` of MMEngine 0.10.7
    passes ``[LOCAL_RANK]`` unless the config sets ``device_ids=None``). SyncBatchNorm layers of
    the model are turned back into BatchNorm layers, with a warning, because torch's
    SyncBatchNorm raises on CPU tensors in training mode. MMYOLO's ``YOLODetector`` converts
    its own BatchNorm layers whenever it is built in a process group of two or more ranks
    (``use_syncbn=True`` is its default), so a CPU run would fail without this. Each rank then
    normalises with the statistics of its own images, as single-process training does.

    Args:
        module: The model to wrap, on the CPU.
        device_ids: Must be None.
        **kwargs: Other arguments of :class:`MMDistributedDataParallel`, such as
            ``broadcast_buffers`` and ``find_unused_parameters``.
    """

    def __init__(
        self, module: nn.Module, device_ids: Optional[Sequence[int]] = None, **kwargs
    ) -> None:
        if device_ids is not None:
            raise ValueError(
                f'device_ids must be None for a model on the CPU, got {device_ids!r}; set '
                'model_wrapper_cfg.device_ids=None'
            )
        num_sync_batchnorms = count_sync_batchnorms(module)
        if num_sync_batchnorms:
            module = revert_sync_batchnorm(module)
            print_log(
                f'turned {num_sync_batchnorms} SyncBatchNorm layers back into BatchNorm: '
                'SyncBatchNorm does not train on CPU, so each rank normalises with the '
                'statistics of its own batch',
                logger='current',
                level=30,
            )
        super().__init__(module=module, device_ids=None, **kwargs)
