"""Command line of ``tools/train.py``: MMYOLO's training entry point with kd_plugin loaded."""

import argparse
import logging
import os
import os.path as osp
from typing import List, Optional

import torch
from mmengine.config import Config, DictAction
from mmengine.logging import print_log
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from ..dist import setup_distributed

CPU_AMP_WRAPPER = 'kd_plugin.CPUAmpOptimWrapper'


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a detector, with or without distillation')
    parser.add_argument('config', help='config file')
    parser.add_argument('--work-dir', help='folder for logs and checkpoints')
    parser.add_argument('--amp', action='store_true', help='train with automatic mixed precision')
    parser.add_argument(
        '--resume',
        nargs='?',
        const='auto',
        help='resume from this checkpoint, or without a value from the latest in the work dir',
    )
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config entries, e.g. model.temperature=8 train_cfg.max_epochs=10',
    )
    parser.add_argument(
        '--trust-checkpoint',
        action='store_true',
        help='let torch.load unpickle any object in the checkpoints this run loads (resume, '
        'load_from); only for files from a trusted source',
    )
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='how the processes were started: none (a single process), pytorch (torchrun, as '
        'tools/dist_*.sh do), slurm (srun, as tools/slurm_train.sh does) or mpi (mpirun)',
    )
    # torch.distributed.launch passes --local-rank; torchrun sets LOCAL_RANK instead.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def load_config(args: argparse.Namespace) -> Config:
    """Build the training config from the file and the command-line overrides."""
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)

    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])

    if args.amp:
        enable_amp(cfg)
    check_amp_device(cfg)

    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        if not osp.isfile(args.resume):
            raise FileNotFoundError(f'--resume checkpoint not found: {args.resume!r}')
        cfg.resume, cfg.load_from = True, args.resume
    return cfg


def enable_amp(cfg: Config) -> None:
    """Switch ``cfg.optim_wrapper`` to mixed precision: float16 with CUDA, bfloat16 without."""
    wrapper_type = cfg.optim_wrapper.get('type', 'OptimWrapper')
    if wrapper_type in ('AmpOptimWrapper', CPU_AMP_WRAPPER):
        print_log('AMP is already on in the config', logger='current', level=logging.WARNING)
        return
    if wrapper_type != 'OptimWrapper':
        raise ValueError(
            f'--amp needs optim_wrapper.type OptimWrapper, got {wrapper_type!r}; set '
            f"optim_wrapper.type='AmpOptimWrapper' (GPU) or {CPU_AMP_WRAPPER!r} (CPU) in the "
            'config instead'
        )
    cfg.optim_wrapper.loss_scale = 'dynamic'
    if torch.cuda.is_available():
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        return
    cfg.optim_wrapper.type = CPU_AMP_WRAPPER
    cfg.optim_wrapper.dtype = 'bfloat16'
    print_log(
        f'--amp without CUDA: training under bfloat16 CPU autocast with {CPU_AMP_WRAPPER}',
        logger='current',
    )


def check_amp_device(cfg: Config) -> None:
    """Raise ValueError if the config selects MMEngine's AmpOptimWrapper and CUDA is missing."""
    if cfg.optim_wrapper.get('type') == 'AmpOptimWrapper' and not torch.cuda.is_available():
        raise ValueError(
            "optim_wrapper.type='AmpOptimWrapper' needs a GPU (MMEngine 0.10.7 asserts one); "
            f'on this machine without CUDA set optim_wrapper.type={CPU_AMP_WRAPPER!r} and '
            "optim_wrapper.dtype='bfloat16' for bfloat16 CPU autocast"
        )


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    if args.trust_checkpoint:
        # torch >= 2.6 reads this for every torch.load call that does not pass weights_only.
        os.environ['TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'] = '1'
    import kd_plugin  # noqa: F401  (registers components, allow-lists checkpoint types)

    cfg = load_config(args)
    setup_distributed(cfg)
    runner = RUNNERS.build(cfg) if 'runner_type' in cfg else Runner.from_cfg(cfg)
    runner.train()
