"""Distributed and mixed-precision training support, including runs on machines without CUDA.

Importing the package registers ``kd_plugin.CPUDistributedDataParallel`` and
``kd_plugin.CPUAmpOptimWrapper``; ``tools/train.py`` and ``tools/test.py`` import it.
"""

from .amp import CPUAmpOptimWrapper
from .ddp import CPUDistributedDataParallel, count_sync_batchnorms
from .launch import (
    cpu_model_wrapper_cfg,
    init_cpu_process_group,
    read_launcher_env,
    setup_distributed,
)

__all__ = [
    'CPUAmpOptimWrapper',
    'CPUDistributedDataParallel',
    'count_sync_batchnorms',
    'cpu_model_wrapper_cfg',
    'init_cpu_process_group',
    'read_launcher_env',
    'setup_distributed',
]
