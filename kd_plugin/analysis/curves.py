"""Plot validation accuracy per epoch, loss terms per iteration and temperature sweeps.

Each ``*_figure`` function returns the matplotlib Figure, so that callers and tests can inspect
its lines. Each ``plot_*`` function saves that figure as a PNG and returns the file path.
"""

import os
import os.path as osp
from typing import Dict, List, Sequence

import matplotlib

matplotlib.use('Agg')  # files only; no display is needed or assumed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FixedLocator, MaxNLocator, NullLocator  # noqa: E402

from .logs import METRIC_KEYS, read_scalars  # noqa: E402
from .summary import aggregate_runs  # noqa: E402

ACCURACY_TITLES = ('mAP50-95 (COCO bbox)', 'mAP50 (COCO bbox)')


def smooth(values: Sequence[float], window: int) -> np.ndarray:
    """Trailing moving average over ``window`` points (shorter at the start)."""
    values = np.asarray(values, dtype=float)
    if window <= 1 or len(values) == 0:
        return values
    cumulative = np.cumsum(np.insert(values, 0, 0.0))
    counts = np.minimum(np.arange(1, len(values) + 1), window)
    return (cumulative[1:] - cumulative[np.arange(1, len(values) + 1) - counts]) / counts


def accuracy_figure(runs: Dict[str, str]) -> Figure:
    """Draw COCO mAP50-95 and mAP50 per epoch, one line per run, in two panels.

    Args:
        runs: Maps a legend label to a work dir.

    Raises:
        ValueError: if no run logged a validation result.
    """
    records = {label: read_scalars(work_dir)['val'] for label, work_dir in runs.items()}
    if not any(records.values()):
        raise ValueError(f'no validation results logged in {list(runs.values())}')

    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for label, val in records.items():
        epochs = [record['step'] for record in val]
        for axis, key in zip(axes, METRIC_KEYS[:2]):
            axis.plot(epochs, [record[key] for record in val], marker='o', label=label)
    for axis, title in zip(axes, ACCURACY_TITLES):
        axis.set_xlabel('epoch')
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_ylabel(title)
        axis.set_title(f'validation {title}')
        axis.grid(alpha=0.3)
        axis.legend()
    return figure


def plot_accuracy(runs: Dict[str, str], out_file: str) -> str:
    """Plot COCO mAP and mAP50 per epoch, one line per run.

    Args:
        runs: Maps a legend label to a work dir.
        out_file: PNG path.
    """
    return _save(accuracy_figure(runs), out_file)


def loss_keys(records: List[dict]) -> List[str]:
    """Loss terms in logged order, the total ``loss`` first."""
    keys = []
    for record in records:
        keys += [key for key in record if key.startswith('loss') and key not in keys]
    return sorted(keys, key=lambda key: (key != 'loss', key.startswith('loss_kd'), key))


def loss_figure(runs: Dict[str, str], window: int = 10) -> Figure:
    """Draw each loss term per iteration in its own panel, runs overlaid.

    The raw logged values are faint. On top, in the same color and with the run's label, is
    their trailing moving average over ``window`` logged points.

    Raises:
        ValueError: if no run logged a loss value.
    """
    records = {label: read_scalars(work_dir)['train'] for label, work_dir in runs.items()}
    keys = loss_keys([record for run in records.values() for record in run])
    if not keys:
        raise ValueError(f'no loss values logged in {list(runs.values())}')

    columns = min(3, len(keys))
    rows = (len(keys) + columns - 1) // columns
    figure, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.4 * rows), squeeze=False)
    colors = plt.rcParams['axes.prop_cycle'].by_key()['color']
    for index, key in enumerate(keys):
        axis = axes[index // columns][index % columns]
        for run_index, (label, run) in enumerate(records.items()):
            color = colors[run_index % len(colors)]
            points = [(record['step'], record[key]) for record in run if key in record]
            if not points:
                continue
            steps, values = zip(*points)
            axis.plot(steps, values, color=color, alpha=0.25, linewidth=0.8)
            axis.plot(steps, smooth(values, window), color=color, label=label)
        axis.set_title(key)
        axis.set_xlabel('iteration')
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
        axis.legend(fontsize='small')
    for index in range(len(keys), rows * columns):
        axes[index // columns][index % columns].axis('off')
    return figure


def plot_losses(runs: Dict[str, str], out_file: str, window: int = 10) -> str:
    """Plot each loss term per iteration: raw values faint, a moving average on top."""
    return _save(loss_figure(runs, window), out_file)


def temperature_sweep_figure(rows: Sequence[dict]) -> Figure:
    """Draw final mAP50-95 and mAP50 of the distilled runs against the temperature.

    Each panel shows the mean over seeds with sample-standard-deviation error bars, every seed
    as a faint dot, the baseline student's mean as a horizontal line with a ±1 std band, and
    the teacher as a dashed horizontal line. The temperature axis is logarithmic (base 2),
    with a tick at every swept temperature.

    Args:
        rows: Run rows as ``summary.aggregate_runs`` takes them.

    Raises:
        ValueError: if the rows contain no distilled run.
    """
    summaries = aggregate_runs(rows)
    distilled = [group for group in summaries if group['role'] == 'distilled']
    if not distilled:
        raise ValueError('no distilled runs to plot against the temperature')
    references = {group['role']: group for group in summaries if group['role'] != 'distilled'}
    temperatures = [group['temperature'] for group in distilled]

    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for axis, column, title in zip(axes, ('final_mAP', 'final_mAP50'), ('mAP50-95', 'mAP50')):
        # Distilled runs: the seeds as faint dots, their mean with error bars on top.
        seed_rows = [row for row in rows if row['role'] == 'distilled']
        axis.scatter(
            [row['temperature'] for row in seed_rows],
            [100 * row[column] for row in seed_rows],
            color='C0',
            alpha=0.3,
            s=14,
        )
        means = [100 * group[f'{column}_mean'] for group in distilled]
        stds = [100 * (group[f'{column}_std'] or 0.0) for group in distilled]
        axis.errorbar(
            temperatures,
            means,
            yerr=stds,
            color='C0',
            marker='o',
            capsize=3,
            label='distilled (mean ± std over seeds)',
        )

        # The baseline and teacher as horizontal references.
        baseline = references.get('baseline')
        if baseline is not None:
            mean = 100 * baseline[f'{column}_mean']
            std = 100 * (baseline[f'{column}_std'] or 0.0)
            seeds = 'seed' if baseline['runs'] == 1 else f'mean of {baseline["runs"]} seeds'
            axis.axhline(mean, color='C1', label=f'baseline student ({seeds})')
            if std > 0:
                axis.axhspan(mean - std, mean + std, color='C1', alpha=0.15)
        teacher = references.get('teacher')
        if teacher is not None:
            axis.axhline(
                100 * teacher[f'{column}_mean'], color='C2', linestyle='--', label='teacher'
            )

        axis.set_xscale('log', base=2)
        axis.xaxis.set_major_locator(FixedLocator(temperatures))
        axis.xaxis.set_minor_locator(NullLocator())
        axis.set_xticklabels([f'{temperature:g}' for temperature in temperatures])
        axis.set_xlabel('distillation temperature')
        axis.set_ylabel(f'{title} (%)')
        axis.set_title(f'final validation {title} (COCO bbox)')
        axis.grid(alpha=0.3)
        axis.legend(fontsize='small')
    return figure


def plot_temperature_sweep(rows: Sequence[dict], out_file: str) -> str:
    """Plot final mAP50-95 and mAP50 against the temperature (see temperature_sweep_figure)."""
    return _save(temperature_sweep_figure(rows), out_file)


def _save(figure: Figure, out_file: str) -> str:
    os.makedirs(osp.dirname(osp.abspath(out_file)), exist_ok=True)
    figure.tight_layout()
    figure.savefig(out_file, dpi=110)
    plt.close(figure)
    return out_file
