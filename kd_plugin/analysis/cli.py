"""Command lines of ``tools/sweep_temperature.py`` and ``tools/plot_curves.py``."""

import argparse
import os.path as osp
import signal
import sys
from typing import Dict, List, Optional

from mmengine.config import Config

from .curves import plot_accuracy, plot_losses
from .logs import read_scalars, scalar_files
from .sweep import log_current, run_sweep
from .sweep_plan import (
    SweepRun,
    TeacherEval,
    parse_cfg_options,
    plan_sweep,
    teacher_test_set_mismatch,
)
from .sweep_results import collect_rows, write_results

# Distillation configs whose baseline student is known, both in the same folder.
KNOWN_BASELINES = {'kd_yolov5_s-to-n_320_20e_bccd.py': 'yolov5_n_320_20e_bccd.py'}


def parse_sweep_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Train the baseline student and a distillation config at several '
        'temperatures and seeds, then tabulate and plot the final COCO metrics'
    )
    parser.add_argument('config', help='distillation config, e.g. a kd_*.py file')
    parser.add_argument(
        '--baseline-config',
        help='config of the student trained alone; required unless CONFIG is one of '
        + ', '.join(KNOWN_BASELINES),
    )
    parser.add_argument(
        '--temperatures',
        type=float,
        nargs='+',
        default=[1.0, 2.0, 4.0, 8.0, 16.0],
        help='values of model.temperature, each > 0 (default: 1 2 4 8 16)',
    )
    parser.add_argument(
        '--seeds',
        type=int,
        nargs='+',
        default=[0, 1],
        help='values of randomness.seed (default: 0 1)',
    )
    parser.add_argument(
        '--work-dir',
        help='folder of the sweep: one work dir per run, the tables and the plot '
        '(default: work_dirs/temperature_sweep_<config name>)',
    )
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        default=[],
        help='key=value overrides for every run, baseline included, e.g. train_cfg.max_epochs=10',
    )
    parser.add_argument(
        '--eval-teacher',
        action='store_true',
        help='also evaluate the teacher with tools/test.py, to show the share of the '
        'teacher-student gap that distillation closes',
    )
    parser.add_argument(
        '--teacher-config',
        help="teacher config (default: the distillation config's model.teacher.config)",
    )
    parser.add_argument(
        '--teacher-checkpoint',
        help="teacher checkpoint (default: the distillation config's model.teacher.checkpoint)",
    )
    parser.add_argument(
        '--gpus',
        type=int,
        default=1,
        help='GPUs per run; above 1 the runs start through tools/dist_train.sh, and the '
        "configs' batch size is per GPU (default: 1)",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        '--dry-run', action='store_true', help='print the commands of unfinished runs, run nothing'
    )
    mode.add_argument(
        '--collect-only',
        action='store_true',
        help='train nothing; tabulate and plot the runs that are finished',
    )
    return parser.parse_args(argv)


def resolve_baseline_config(kd_config: str, baseline_config: Optional[str]) -> str:
    """Return the baseline config: the given one, or the known baseline of ``kd_config``."""
    if baseline_config is not None:
        return baseline_config
    known = KNOWN_BASELINES.get(osp.basename(kd_config))
    if known is None:
        raise ValueError(
            f'no known baseline student for {kd_config!r}; pass --baseline-config with the '
            'config of the student trained alone on the same data and schedule'
        )
    return osp.join(osp.dirname(kd_config), known)


def resolve_teacher(args: argparse.Namespace) -> TeacherEval:
    """Return the teacher evaluation, filling in config and checkpoint from the KD config."""
    kd_cfg = Config.fromfile(args.config)
    kd_cfg.merge_from_dict(parse_cfg_options(args.cfg_options))
    teacher_cfg = kd_cfg.get('model', {}).get('teacher', {})
    config = args.teacher_config or teacher_cfg.get('config')
    checkpoint = args.teacher_checkpoint or teacher_cfg.get('checkpoint')
    if not isinstance(config, str) or not osp.isfile(config):
        raise ValueError(
            f'teacher config {config!r} is not a config file; pass --teacher-config FILE'
        )
    if not isinstance(checkpoint, str) or '://' in checkpoint:
        raise ValueError(
            f'teacher checkpoint {checkpoint!r} is not a local file path; pass '
            '--teacher-checkpoint FILE'
        )
    mismatch = teacher_test_set_mismatch(args.config, config, args.cfg_options)
    if mismatch:
        raise ValueError(
            f'the teacher would be evaluated on other images than the students: {mismatch}; '
            "pass a --teacher-config whose test set is the students' validation set"
        )
    return TeacherEval(config, checkpoint, osp.join(args.work_dir, 'teacher'))


def exit_on_sigterm(signum: int, frame) -> None:
    sys.exit(128 + signum)


def sweep_main(argv: Optional[List[str]] = None) -> Dict[str, str]:
    """Run ``tools/sweep_temperature.py``; return the written result files by kind."""
    args = parse_sweep_args(argv)
    if args.work_dir is None:
        name = osp.splitext(osp.basename(args.config))[0]
        args.work_dir = osp.join('work_dirs', f'temperature_sweep_{name}')
    parse_cfg_options(args.cfg_options)  # fails early on a malformed key=value
    baseline_config = resolve_baseline_config(args.config, args.baseline_config)
    runs: List[SweepRun] = plan_sweep(
        args.config, baseline_config, args.temperatures, args.seeds, args.work_dir, args.cfg_options
    )
    teacher = resolve_teacher(args) if args.eval_teacher else None

    if not args.collect_only:
        # Let a SIGTERM (kill, a batch scheduler) unwind like Ctrl-C, so that run_logged stops
        # the training child instead of leaving it orphaned.
        signal.signal(signal.SIGTERM, exit_on_sigterm)
        run_sweep(runs, args.gpus, args.dry_run, teacher)
    if args.dry_run:
        return {}

    rows, missing = collect_rows(runs, teacher)
    if missing:
        log_current(f'not finished, left out of the results: {", ".join(missing)}')
    paths = write_results(rows, args.work_dir)
    with open(paths['summary_md']) as f:
        log_current('\n' + f.read())
    log_current('results: ' + ', '.join(paths.values()))
    return paths


def parse_plot_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Plot validation accuracy per epoch and loss terms per iteration of runs'
    )
    parser.add_argument('work_dirs', nargs='+', help='work dirs of tools/train.py runs')
    parser.add_argument(
        '--labels', nargs='+', help='legend label of each work dir (default: the folder names)'
    )
    parser.add_argument(
        '--out-dir',
        help='folder of accuracy.png and losses.png (default: <common parent of the work '
        'dirs>/curves)',
    )
    parser.add_argument(
        '--window',
        type=int,
        default=10,
        help='moving-average window of the smoothed loss lines, in logged points (default: 10)',
    )
    return parser.parse_args(argv)


def run_labels(work_dirs: List[str], labels: Optional[List[str]]) -> Dict[str, str]:
    """Map a unique legend label to each work dir: the given labels or the folder names.

    Folder names that repeat fall back to the paths as given.
    """
    if labels is not None:
        if len(labels) != len(work_dirs):
            raise ValueError(
                f'got {len(labels)} labels for {len(work_dirs)} work dirs; pass one per work dir'
            )
    else:
        labels = [osp.basename(osp.normpath(work_dir)) for work_dir in work_dirs]
        if len(set(labels)) != len(labels):
            labels = list(work_dirs)
    if len(set(labels)) != len(labels):
        raise ValueError(f'labels repeat: {labels}; pass distinct --labels')
    return dict(zip(labels, work_dirs))


def plot_curves_main(argv: Optional[List[str]] = None) -> Dict[str, str]:
    """Run ``tools/plot_curves.py``; return the written PNG files by kind."""
    args = parse_plot_args(argv)
    if args.window < 1:
        raise ValueError(f'--window must be >= 1 logged point, got {args.window}')
    for work_dir in args.work_dirs:
        if not scalar_files(work_dir):
            raise FileNotFoundError(
                f'no {osp.join(work_dir, "<timestamp>", "vis_data", "scalars.json")} found; '
                'pass the --work-dir of a tools/train.py run'
            )
    runs = run_labels(args.work_dirs, args.labels)
    out_dir = args.out_dir or osp.join(
        osp.commonpath([osp.abspath(work_dir) for work_dir in args.work_dirs]), 'curves'
    )

    paths = {'losses': plot_losses(runs, osp.join(out_dir, 'losses.png'), args.window)}
    if any(read_scalars(work_dir)['val'] for work_dir in runs.values()):
        paths['accuracy'] = plot_accuracy(runs, osp.join(out_dir, 'accuracy.png'))
    else:
        log_current('no validation results logged yet, so no accuracy.png')
    log_current('curves: ' + ', '.join(paths.values()))
    return paths
