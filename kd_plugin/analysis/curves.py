"""Plot validation accuracy per epoch and loss terms per iteration of one or more runs."""

import os
import os.path as osp
from typing import Dict, List, Sequence

import matplotlib

matplotlib.use('Agg')  # files only; no display is needed or assumed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .logs import METRIC_KEYS, read_scalars  # noqa: E402


def smooth(values: Sequence[float], window: int) -> np.ndarray:
    """Trailing moving average over ``window`` points (shorter at the start)."""
    values = np.asarray(values, dtype=float)
    if window <= 1 or len(values) == 0:
        return values
    cumulative = np.cumsum(np.insert(values, 0, 0.0))
    counts = np.minimum(np.arange(1, len(values) + 1), window)
    return (cumulative[1:] - cumulative[np.arange(1, len(values) + 1) - counts]) / counts


def plot_accuracy(runs: Dict[str, str], out_file: str) -> str:
    """Plot COCO mAP and mAP50 per epoch, one line per run.

    Args:
        runs: Maps a legend label to a work dir.
        out_file: PNG path.
    """
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for label, work_dir in runs.items():
        val = read_scalars(work_dir)['val']
        epochs = [record['step'] for record in val]
        for axis, key in zip(axes, METRIC_KEYS[:2]):
            axis.plot(epochs, [record[key] for record in val], marker='o', label=label)
    for axis, title in zip(axes, ('mAP50-95 (COCO bbox)', 'mAP50 (COCO bbox)')):
        axis.set_xlabel('epoch')
        axis.set_ylabel(title)
        axis.set_title(f'validation {title}')
        axis.grid(alpha=0.3)
        axis.legend()
    return _save(figure, out_file)


def loss_keys(records: List[dict]) -> List[str]:
    """Loss terms in logged order, the total ``loss`` first."""
    keys = []
    for record in records:
        keys += [key for key in record if key.startswith('loss') and key not in keys]
    return sorted(keys, key=lambda key: (key != 'loss', key.startswith('loss_kd'), key))


def plot_losses(runs: Dict[str, str], out_file: str, window: int = 10) -> str:
    """Plot each loss term per iteration: raw values faint, a moving average on top."""
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
        for color, (label, run) in zip(colors, records.items()):
            points = [(record['step'], record[key]) for record in run if key in record]
            if not points:
                continue
            steps, values = zip(*points)
            axis.plot(steps, values, color=color, alpha=0.25, linewidth=0.8)
            axis.plot(steps, smooth(values, window), color=color, label=label)
        axis.set_title(key)
        axis.set_xlabel('iteration')
        axis.grid(alpha=0.3)
        axis.legend(fontsize='small')
    for index in range(len(keys), rows * columns):
        axes[index // columns][index % columns].axis('off')
    return _save(figure, out_file)


def _save(figure, out_file: str) -> str:
    os.makedirs(osp.dirname(osp.abspath(out_file)), exist_ok=True)
    figure.tight_layout()
    figure.savefig(out_file, dpi=110)
    plt.close(figure)
    return out_file
