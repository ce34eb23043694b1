"""Compare MultistepSGD with torch.optim.SGD on the same student training.

Every seed trains the config once with its own optimizer (torch.optim.SGD in the BCCD configs)
and once per extrapolation coefficient alpha with ``kd_plugin.MultistepSGD``. The runs of one
seed share initial weights and data order, because both come from ``randomness.seed``. Runs are
trained and resumed by the temperature sweep's machinery (see sweep.py), each in
``<work dir>/<run name>``.

The report has three parts:

- final COCO mAP, mAP50 and mAP75 per optimizer setting, mean ± std over the seeds;
- the optimizer step time of each setting over torch.optim.SGD's, timed in this process on the
  config's model and parameter groups, and the logged training iteration time of the runs;
- loss and accuracy curves of the first seed's runs, overlaid.
"""

import argparse
import copy
import json
import os.path as osp
import statistics
import time
from typing import Dict, List, Optional, Sequence

import torch
from mmengine.config import Config

from .curves import plot_accuracy, plot_losses
from .logs import read_scalars
from .summary import format_percent, mean_std, write_csv
from .sweep import log_current, run_sweep
from .sweep_plan import SweepRun, parse_cfg_options
from .sweep_results import run_row

SGD_ROLE = 'sgd'
MULTISTEP_ROLE = 'multistep_sgd'
METRICS = ('mAP', 'mAP50', 'mAP75')


def multistep_options(alpha: float) -> tuple:
    """Return the ``--cfg-options`` that switch a config's optimizer to MultistepSGD(alpha)."""
    return (
        'optim_wrapper.optimizer.type=kd_plugin.MultistepSGD',
        f'optim_wrapper.optimizer.alpha={alpha:g}',
    )


def setting_label(alpha: Optional[float]) -> str:
    """Return the table label of an optimizer setting; alpha None is torch.optim.SGD."""
    return 'torch.optim.SGD' if alpha is None else f'MultistepSGD, alpha={alpha:g}'


def plan_optimizer_runs(
    config: str,
    alphas: Sequence[float],
    seeds: Sequence[int],
    work_dir: str,
    extra_options: Sequence[str] = (),
) -> List[SweepRun]:
    """List the benchmark's runs, seed by seed: the config's own optimizer, then each alpha.

    Raises:
        FileNotFoundError: if the config does not exist.
        ValueError: on no or repeated alphas or seeds, an alpha < 0, or an extra option that
            sets the optimizer or the seed, which the benchmark sets per run.
    """
    if not osp.isfile(config):
        raise FileNotFoundError(f'config not found: {config!r}')
    if not alphas or len(set(alphas)) != len(alphas):
        raise ValueError(f'pass distinct alphas, e.g. --alphas 0.25 0.5; got {list(alphas)}')
    invalid = [alpha for alpha in alphas if not alpha >= 0]
    if invalid:
        raise ValueError(f'alphas must be >= 0, got {invalid}; 0 is plain SGD')
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f'pass distinct seeds, e.g. --seeds 0 1 2; got {list(seeds)}')
    for option in extra_options:
        key = option.split('=', 1)[0]
        if key == 'randomness.seed' or key.startswith('optim_wrapper.optimizer'):
            raise ValueError(
                f'--cfg-options {option!r} conflicts with the benchmark, which sets the seed '
                'and the optimizer per run; use --seeds and --alphas'
            )

    runs = []
    extras = tuple(extra_options)
    for seed in seeds:
        name = f'sgd_seed{seed}'
        runs.append(
            SweepRun(
                name,
                SGD_ROLE,
                config,
                seed,
                None,
                osp.join(work_dir, name),
                extras,
                description=setting_label(None),
            )
        )
        for alpha in alphas:
            name = f'msgd_a{alpha:g}_seed{seed}'
            runs.append(
                SweepRun(
                    name,
                    MULTISTEP_ROLE,
                    config,
                    seed,
                    None,
                    osp.join(work_dir, name),
                    extras + multistep_options(alpha),
                    description=setting_label(alpha),
                )
            )
    return runs


def run_alpha(run: SweepRun) -> Optional[float]:
    """Return the alpha a run sets, None for a run with the config's own optimizer."""
    for option in run.extra_options:
        key, _, value = option.partition('=')
        if key == 'optim_wrapper.optimizer.alpha':
            return float(value)
    return None


def mean_iteration_seconds(work_dir: str) -> Optional[float]:
    """Return the mean logged ``time`` of a run's training iterations, None if none is logged.

    MMEngine logs ``time`` as the mean over the logging interval, so the first interval, which
    includes start-up, is left out when there are others.
    """
    times = [record['time'] for record in read_scalars(work_dir)['train'] if 'time' in record]
    if len(times) > 1:
        times = times[1:]
    return statistics.fmean(times) if times else None


def summarize_settings(runs: Sequence[SweepRun]) -> List[dict]:
    """Average the finished runs' final metrics and iteration times per optimizer setting.

    Returns:
        One dict per setting in plan order with ``setting``, ``alpha``, ``seeds``,
        ``<metric>_mean`` / ``<metric>_std`` of the final metrics, ``delta_<metric>`` (mean
        minus torch.optim.SGD's mean, None without SGD runs), and ``iteration_seconds_mean``.
        Settings without a finished run are left out.
    """
    groups: Dict[str, dict] = {}
    for run in runs:
        row = run_row(run)
        if row is None:
            continue
        label = setting_label(run_alpha(run))
        group = groups.setdefault(label, dict(alpha=run_alpha(run), rows=[], seconds=[]))
        group['rows'].append(row)
        seconds = mean_iteration_seconds(run.work_dir)
        if seconds is not None:
            group['seconds'].append(seconds)

    summaries = []
    for label, group in groups.items():
        summary = dict(setting=label, alpha=group['alpha'])
        summary['seeds'] = sorted(row['seed'] for row in group['rows'])
        for metric in METRICS:
            values = [row[f'final_{metric}'] for row in group['rows']]
            summary[f'{metric}_mean'], summary[f'{metric}_std'] = mean_std(values)
        seconds = group['seconds']
        summary['iteration_seconds_mean'] = statistics.fmean(seconds) if seconds else None
        summaries.append(summary)

    sgd = next((summary for summary in summaries if summary['alpha'] is None), None)
    for summary in summaries:
        for metric in METRICS:
            delta = None
            if sgd is not None:
                delta = summary[f'{metric}_mean'] - sgd[f'{metric}_mean']
            summary[f'delta_{metric}'] = delta
    return summaries


def time_optimizer_steps(
    config: str,
    alphas: Sequence[float],
    steps: int = 20,
    repeats: int = 5,
    cfg_options: Sequence[str] = (),
) -> Dict[str, float]:
    """Time ``optimizer.step()`` of each setting on the config's model and parameter groups.

    Each setting gets its own copy of the model, built by the config's optim wrapper
    constructor (YOLOv5's three groups in the BCCD configs), and fixed random gradients. The
    settings are timed in turn, ``repeats`` times ``steps`` steps, and the median of a
    setting's repeats counts, so a slow moment of the machine hits all settings alike.

    Returns:
        Median seconds per step by setting label (see ``setting_label``).
    """
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import init_default_scope

    from ..models import build_detector

    if steps < 1 or repeats < 1:
        raise ValueError(f'steps and repeats must be >= 1, got {steps} and {repeats}')
    cfg = Config.fromfile(config)
    cfg.merge_from_dict(parse_cfg_options(cfg_options))
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    model = build_detector(cfg.model)
    generator = torch.Generator().manual_seed(0)
    gradients = [torch.randn(p.shape, generator=generator) * 1e-3 for p in model.parameters()]

    optimizers = {}
    for alpha in (None, *alphas):
        copy_of_model = copy.deepcopy(model)
        for param, gradient in zip(copy_of_model.parameters(), gradients):
            param.grad = gradient.clone()
        optim_cfg = copy.deepcopy(cfg.optim_wrapper)
        if alpha is not None:
            optim_cfg.optimizer.type = 'kd_plugin.MultistepSGD'
            optim_cfg.optimizer.alpha = alpha
        optimizers[setting_label(alpha)] = build_optim_wrapper(copy_of_model, optim_cfg).optimizer

    timings: Dict[str, List[float]] = {label: [] for label in optimizers}
    for _ in range(repeats):
        for label, optimizer in optimizers.items():
            optimizer.step()  # untimed: creates the momentum and previous-gradient buffers
            start = time.perf_counter()
            for _ in range(steps):
                optimizer.step()
            timings[label].append((time.perf_counter() - start) / steps)
    return {label: statistics.median(values) for label, values in timings.items()}


def format_report(summaries: Sequence[dict], step_seconds: Dict[str, float]) -> str:
    """Format the per-setting results and the step-time ratios as a Markdown table."""
    sgd_step = step_seconds.get(setting_label(None))
    sgd_iteration = next(
        (s['iteration_seconds_mean'] for s in summaries if s['alpha'] is None), None
    )
    lines = [
        'Final COCO bbox AP on the validation set, in percent: mean ± sample standard '
        'deviation over the seeds. Δ: difference of means to torch.optim.SGD, in points. '
        "Step time: optimizer.step() over torch.optim.SGD's, timed in one process. "
        "Iteration time: the runs' mean logged training iteration over torch.optim.SGD's.",
        '',
        '| optimizer | seeds | mAP50-95 | mAP50 | mAP75 | Δ mAP50-95 | Δ mAP50 '
        '| step time | iteration time |',
        '|---|---|---|---|---|---|---|---|---|',
    ]
    for summary in summaries:
        cells = [summary['setting'], ', '.join(str(seed) for seed in summary['seeds'])]
        for metric in METRICS:
            cells.append(format_percent(summary[f'{metric}_mean'], summary[f'{metric}_std']))
        for metric in ('mAP', 'mAP50'):
            delta = summary[f'delta_{metric}']
            cells.append(
                '–' if delta is None or summary['alpha'] is None else f'{100 * delta:+.1f}'
            )
        step = step_seconds.get(summary['setting'])
        cells.append(f'{step / sgd_step:.2f}' if step and sgd_step else '–')
        iteration = summary['iteration_seconds_mean']
        cells.append(f'{iteration / sgd_iteration:.2f}' if iteration and sgd_iteration else '–')
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines) + '\n'


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Train a config with torch.optim.SGD and with MultistepSGD at several '
        'alphas over several seeds, then compare final mAP, step time and curves'
    )
    parser.add_argument(
        'config', help='a student config whose optimizer is SGD, e.g. the BCCD YOLOv5-n config'
    )
    parser.add_argument(
        '--alphas',
        type=float,
        nargs='+',
        default=[0.25, 0.5],
        help='MultistepSGD extrapolation coefficients, each >= 0 (default: 0.25 0.5)',
    )
    parser.add_argument(
        '--seeds', type=int, nargs='+', default=[0, 1, 2], help='seeds (default: 0 1 2)'
    )
    parser.add_argument(
        '--work-dir',
        default='work_dirs/optimizer_benchmark',
        help='folder of the runs and the results (default: work_dirs/optimizer_benchmark)',
    )
    parser.add_argument(
        '--cfg-options', nargs='+', default=[], help='key=value overrides for every run'
    )
    parser.add_argument(
        '--step-steps', type=int, default=20, help='timed optimizer steps per repeat'
    )
    parser.add_argument(
        '--step-repeats', type=int, default=5, help='repeats of the step timing per setting'
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        '--dry-run', action='store_true', help='print the commands of unfinished runs, run nothing'
    )
    mode.add_argument(
        '--collect-only', action='store_true', help='train nothing; report the finished runs'
    )
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> Dict[str, str]:
    """Run ``tools/benchmark_optimizer.py``; return the written result files by kind."""
    args = parse_args(argv)
    parse_cfg_options(args.cfg_options)  # fails early on a malformed key=value
    runs = plan_optimizer_runs(
        args.config, args.alphas, args.seeds, args.work_dir, args.cfg_options
    )
    if not args.collect_only:
        run_sweep(runs, dry_run=args.dry_run)
    if args.dry_run:
        return {}

    summaries = summarize_settings(runs)
    if not summaries:
        raise ValueError(f'no finished runs in {args.work_dir}; train them first')
    step_seconds = time_optimizer_steps(
        args.config, args.alphas, args.step_steps, args.step_repeats, args.cfg_options
    )
    paths = dict(
        summary_csv=write_csv(summaries, osp.join(args.work_dir, 'summary.csv')),
        summary_md=osp.join(args.work_dir, 'summary.md'),
        step_time=osp.join(args.work_dir, 'step_time.json'),
    )
    report = format_report(summaries, step_seconds)
    with open(paths['summary_md'], 'w') as f:
        f.write(report)
    with open(paths['step_time'], 'w') as f:
        json.dump(dict(seconds_per_step=step_seconds, steps=args.step_steps), f, indent=2)

    first_seed = [run for run in runs if run.seed == args.seeds[0] and run_row(run)]
    curves = {setting_label(run_alpha(run)): run.work_dir for run in first_seed}
    if curves:
        curve_dir = osp.join(args.work_dir, 'curves')
        paths['losses'] = plot_losses(curves, osp.join(curve_dir, 'losses.png'))
        paths['accuracy'] = plot_accuracy(curves, osp.join(curve_dir, 'accuracy.png'))
    log_current('\n' + report)
    log_current('results: ' + ', '.join(paths.values()))
    return paths
