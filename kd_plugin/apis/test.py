"""Command line of ``tools/test.py``: evaluate a checkpoint with a config's test set."""

import argparse
import json
import os
import os.path as osp
from typing import List, Optional

from mmengine.config import Config, DictAction
from mmengine.dist import is_main_process
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from ..dist import setup_distributed


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Evaluate a detector checkpoint')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='folder for the evaluation logs')
    parser.add_argument(
        '--out', help='also dump the predictions to this .pkl file (mmdet DumpDetResults)'
    )
    parser.add_argument('--metrics-out', help='also write the metrics to this JSON file')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction, help='override config entries'
    )
    parser.add_argument(
        '--trust-checkpoint',
        action='store_true',
        help='let torch.load unpickle any object in the checkpoint; only for trusted files',
    )
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='how the processes were started: none (a single process), pytorch (torchrun, as '
        'tools/dist_*.sh do), slurm (srun, as tools/slurm_train.sh does) or mpi (mpirun)',
    )
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def main(argv: Optional[List[str]] = None) -> dict:
    """Evaluate and return the metrics dict (e.g. ``coco/bbox_mAP``)."""
    args = parse_args(argv)
    if args.trust_checkpoint:
        os.environ['TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'] = '1'
    import kd_plugin  # noqa: F401

    if not osp.isfile(args.checkpoint) and '://' not in args.checkpoint:
        raise FileNotFoundError(f'checkpoint not found: {args.checkpoint!r}')
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    cfg.load_from = args.checkpoint
    if args.out is not None:
        if not args.out.endswith(('.pkl', '.pickle')):
            raise ValueError(f'--out must end with .pkl or .pickle, got {args.out!r}')
        cfg.test_evaluator = [
            cfg.test_evaluator,
            dict(type='mmdet.DumpDetResults', out_file_path=args.out),
        ]

    setup_distributed(cfg)
    runner = RUNNERS.build(cfg) if 'runner_type' in cfg else Runner.from_cfg(cfg)
    metrics = runner.test()
    # Every rank gets the metrics, and only the main process writes them.
    if args.metrics_out and is_main_process():
        os.makedirs(osp.dirname(osp.abspath(args.metrics_out)), exist_ok=True)
        with open(args.metrics_out, 'w') as f:
            json.dump({key: float(value) for key, value in metrics.items()}, f, indent=2)
    return metrics
