"""Start distributed runs of MMEngine's Runner on machines without CUDA.

MMEngine 0.10.7 starts the process group itself (``Runner.setup_env`` calls
``mmengine.dist.init_dist``), but its pytorch, slurm and mpi launchers first call
``torch.cuda.set_device(local_rank)``, which raises on a CPU-only torch build, and its
``Runner.wrap_model`` gives DistributedDataParallel ``device_ids=[LOCAL_RANK]``, which DDP
rejects for CPU modules. :func:`setup_distributed` works around both before the Runner is built:
it starts a gloo process group from the launcher's environment variables, so that
``Runner.setup_env`` finds it started and skips ``init_dist``, and it points
``model_wrapper_cfg`` at :class:`~kd_plugin.dist.CPUDistributedDataParallel`. With CUDA it
changes nothing, and MMEngine's own code starts the run.
"""

import datetime
import os
import subprocess
from typing import Dict, Mapping, Optional

import torch
import torch.distributed as torch_dist
from mmengine.config import Config
from mmengine.dist import is_distributed
from mmengine.logging import print_log
from mmengine.registry import MODEL_WRAPPERS
from torch.nn.parallel import DistributedDataParallel

LAUNCHERS = ('none', 'pytorch', 'slurm', 'mpi')
CPU_BACKENDS = ('gloo', 'mpi')
CPU_MODEL_WRAPPER = 'kd_plugin.CPUDistributedDataParallel'
# torch.distributed's default port, which MMEngine's slurm and mpi launchers fall back to as well.
DEFAULT_MASTER_PORT = '29500'

# Environment variables that give rank, world size and local rank, per launcher.
_RANK_VARIABLES = {
    'pytorch': ('RANK', 'WORLD_SIZE', 'LOCAL_RANK'),
    'slurm': ('SLURM_PROCID', 'SLURM_NTASKS', 'SLURM_LOCALID'),
    'mpi': ('OMPI_COMM_WORLD_RANK', 'OMPI_COMM_WORLD_SIZE', 'OMPI_COMM_WORLD_LOCAL_RANK'),
}


def _require(environ: Mapping[str, str], name: str, launcher: str) -> str:
    if name not in environ:
        raise ValueError(
            f'environment variable {name} is missing for launcher {launcher!r}; start '
            'the run with the matching launcher (tools/dist_train.sh runs torchrun for '
            "'pytorch', tools/slurm_train.sh runs srun for 'slurm') or set the variable"
        )
    return environ[name]


def _first_slurm_host(node_list: str) -> str:
    """Return the first host name of a Slurm node list such as ``node[01-04]``."""
    try:
        completed = subprocess.run(
            ['scontrol', 'show', 'hostnames', node_list],
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError) as error:
        raise ValueError(
            f'cannot find the first host of SLURM_NODELIST={node_list!r} with scontrol ({error}); '
            'set MASTER_ADDR to the address of the node that runs rank 0'
        ) from error
    hosts = completed.stdout.split()
    if not hosts:
        raise ValueError(
            f'scontrol listed no host for SLURM_NODELIST={node_list!r}; set MASTER_ADDR to the '
            'address of the node that runs rank 0'
        )
    return hosts[0]


def read_launcher_env(launcher: str, environ: Mapping[str, str]) -> Dict[str, str]:
    """Read this process's place in the run from the environment its launcher set.

    Args:
        launcher: ``'pytorch'`` (torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
            ``MASTER_ADDR`` and ``MASTER_PORT``), ``'slurm'`` (srun sets ``SLURM_PROCID``,
            ``SLURM_NTASKS``, ``SLURM_LOCALID`` and ``SLURM_NODELIST``) or ``'mpi'`` (Open MPI
            sets ``OMPI_COMM_WORLD_*``; ``MASTER_ADDR`` must be set by the user).
        environ: The environment variables, usually ``os.environ``.

    Returns:
        The variables torch.distributed's ``env://`` initialisation reads: ``RANK``,
        ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``, as strings. For
        slurm and mpi, a ``MASTER_ADDR`` or ``MASTER_PORT`` already in ``environ`` is kept. Slurm
        runs without ``MASTER_ADDR`` use the first host of ``SLURM_NODELIST``, and slurm and
        mpi runs without ``MASTER_PORT`` use 29500.

    Raises:
        ValueError: ``launcher`` is unknown, a variable is missing, or a rank variable is not
            a valid integer.
    """
    if launcher not in _RANK_VARIABLES:
        raise ValueError(f'launcher must be one of {sorted(_RANK_VARIABLES)}, got {launcher!r}')
    rank_name, world_size_name, local_rank_name = _RANK_VARIABLES[launcher]
    env = {
        'RANK': _require(environ, rank_name, launcher),
        'WORLD_SIZE': _require(environ, world_size_name, launcher),
        'LOCAL_RANK': _require(environ, local_rank_name, launcher),
    }
    for key, name in zip(('RANK', 'WORLD_SIZE', 'LOCAL_RANK'), _RANK_VARIABLES[launcher]):
        if not env[key].isdigit():
            raise ValueError(f'{name} must be a non-negative integer, got {env[key]!r}')
    if int(env['RANK']) >= int(env['WORLD_SIZE']):
        raise ValueError(
            f'{rank_name}={env["RANK"]} is not below {world_size_name}={env["WORLD_SIZE"]}'
        )

    if launcher == 'pytorch':
        env['MASTER_ADDR'] = _require(environ, 'MASTER_ADDR', launcher)
        env['MASTER_PORT'] = _require(environ, 'MASTER_PORT', launcher)
    elif launcher == 'slurm':
        master_addr = environ.get('MASTER_ADDR')
        if master_addr is None:
            master_addr = _first_slurm_host(_require(environ, 'SLURM_NODELIST', launcher))
        env['MASTER_ADDR'] = master_addr
        env['MASTER_PORT'] = environ.get('MASTER_PORT', DEFAULT_MASTER_PORT)
    else:
        env['MASTER_ADDR'] = _require(environ, 'MASTER_ADDR', launcher)
        env['MASTER_PORT'] = environ.get('MASTER_PORT', DEFAULT_MASTER_PORT)
    return env


def init_cpu_process_group(launcher: str, dist_cfg: Optional[dict] = None) -> None:
    """Start the default process group of a CPU run from the launcher's environment.

    The variables :func:`read_launcher_env` returns are also written to ``os.environ``, where
    ``env://`` initialisation and MMEngine read them.

    Args:
        launcher: ``'pytorch'``, ``'slurm'`` or ``'mpi'``.
        dist_cfg: ``env_cfg.dist_cfg`` of the config. ``backend`` may be ``'gloo'`` (the
            default) or ``'mpi'``; any other backend, such as ``'nccl'``, needs GPUs and is
            replaced by ``'gloo'`` with a warning. ``timeout`` is in seconds. The remaining keys
            go to ``torch.distributed.init_process_group``.
    """
    kwargs = dict(dist_cfg or {})
    backend = kwargs.pop('backend', 'gloo')
    init_backend = kwargs.pop('init_backend', 'torch')
    if init_backend != 'torch':
        raise ValueError(
            f"dist_cfg.init_backend={init_backend!r} is not supported without CUDA; use 'torch'"
        )
    if backend not in CPU_BACKENDS:
        print_log(
            f'dist_cfg.backend={backend!r} needs GPUs; this machine has no CUDA, so the run uses '
            "'gloo'. Set env_cfg.dist_cfg.backend='gloo' to silence this warning.",
            logger='current',
            level=30,
        )
        backend = 'gloo'
    if kwargs.get('timeout') is not None:
        kwargs['timeout'] = datetime.timedelta(seconds=kwargs['timeout'])

    env = read_launcher_env(launcher, os.environ)
    os.environ.update(env)
    torch_dist.init_process_group(
        backend=backend,
        init_method='env://',
        rank=int(env['RANK']),
        world_size=int(env['WORLD_SIZE']),
        **kwargs,
    )
    print_log(
        f'started the {backend} process group without CUDA: rank {env["RANK"]} of '
        f'{env["WORLD_SIZE"]}, master {env["MASTER_ADDR"]}:{env["MASTER_PORT"]}',
        logger='current',
    )


def cpu_model_wrapper_cfg(cfg: Config) -> dict:
    """Return the ``model_wrapper_cfg`` that makes ``Runner.wrap_model`` work on CPU modules.

    Without a ``model_wrapper_cfg``, or with MMEngine's default ``MMDistributedDataParallel``,
    the model is wrapped by :class:`~kd_plugin.dist.CPUDistributedDataParallel` with
    MMEngine's defaults (``broadcast_buffers=False`` and the config's
    ``find_unused_parameters``, False unless set). Any other DistributedDataParallel subclass
    keeps its type and gets ``device_ids=None``. Other wrappers are returned unchanged.
    """
    wrapper_cfg = cfg.get('model_wrapper_cfg')
    if wrapper_cfg is None:
        return dict(
            type=CPU_MODEL_WRAPPER,
            device_ids=None,
            broadcast_buffers=False,
            find_unused_parameters=cfg.get('find_unused_parameters', False),
        )
    wrapper_cfg = dict(wrapper_cfg)
    wrapper_type = wrapper_cfg.get('type', 'MMDistributedDataParallel')
    if wrapper_type in ('MMDistributedDataParallel', 'mmengine.MMDistributedDataParallel'):
        wrapper_cfg['type'] = CPU_MODEL_WRAPPER
        wrapper_cfg.setdefault('device_ids', None)
        return wrapper_cfg
    wrapper_class = MODEL_WRAPPERS.get(wrapper_type) if isinstance(wrapper_type, str) else None
    if isinstance(wrapper_class, type) and issubclass(wrapper_class, DistributedDataParallel):
        wrapper_cfg.setdefault('device_ids', None)
    return wrapper_cfg


def setup_distributed(cfg: Config) -> None:
    """Prepare a distributed run of ``cfg`` on a machine without CUDA; do nothing otherwise.

    Call it after ``cfg.launcher`` is set and before the Runner is built. On a machine without
    CUDA and with a launcher other than ``'none'``, it starts the process group (see
    :func:`init_cpu_process_group`) unless one is running, and sets ``cfg.model_wrapper_cfg``
    (see :func:`cpu_model_wrapper_cfg`).

    Raises:
        ValueError: ``cfg.launcher`` is unknown, or ``cfg.sync_bn`` is set on a machine without
            CUDA (torch's SyncBatchNorm raises on CPU tensors in training mode).
    """
    launcher = cfg.get('launcher', 'none')
    if launcher not in LAUNCHERS:
        raise ValueError(f'launcher must be one of {LAUNCHERS}, got {launcher!r}')
    if launcher == 'none' or torch.cuda.is_available():
        return
    if cfg.get('sync_bn') is not None:
        raise ValueError(
            f'sync_bn={cfg.sync_bn!r} needs GPUs: torch SyncBatchNorm rejects CPU tensors in '
            'training mode. Remove sync_bn from the config (or pass --cfg-options sync_bn=None) '
            'for CPU runs'
        )
    if not is_distributed():
        init_cpu_process_group(launcher, cfg.get('env_cfg', {}).get('dist_cfg'))
    cfg.model_wrapper_cfg = cpu_model_wrapper_cfg(cfg)
