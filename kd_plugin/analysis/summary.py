"""Aggregate per-run COCO metrics of a sweep over seeds and compare them with the baseline.

A run row is a dict with the keys of ``RUN_COLUMNS``. Its ``role`` is ``'teacher'``,
``'baseline'`` or ``'distilled'``, and its ``temperature`` is None except for distilled runs.
The metric columns contain COCO bbox AP as MMDet logs it, a fraction in [0, 1], and the
Markdown table shows them in percent.
"""

import csv
import os
import os.path as osp
import statistics
from typing import Dict, List, Optional, Sequence

METRIC_NAMES = ('mAP', 'mAP50', 'mAP75')
METRIC_COLUMNS = tuple(f'{stage}_{name}' for stage in ('final', 'best') for name in METRIC_NAMES)
RUN_COLUMNS = (
    'name',
    'role',
    'temperature',
    'seed',
    *METRIC_COLUMNS[:3],
    'final_epoch',
    *METRIC_COLUMNS[3:],
    'best_epoch',
    'work_dir',
)
ROLES = ('teacher', 'baseline', 'distilled')


def mean_std(values: Sequence[float]) -> tuple:
    """Return the mean and the sample standard deviation (n - 1 in the denominator).

    The standard deviation is None for a single value, where it is undefined.
    """
    if not values:
        raise ValueError('mean_std needs at least one value, got an empty sequence')
    std = statistics.stdev(values) if len(values) > 1 else None
    return statistics.fmean(values), std


def gap_closed(distilled: float, baseline: float, teacher: float) -> Optional[float]:
    """Return the share of the teacher-student gap that distillation closes.

    (distilled - baseline) / (teacher - baseline): 0 is no gain, 1 reaches the teacher, and a
    negative share means distillation hurt. None when teacher and baseline score the same.
    """
    if teacher == baseline:
        return None
    return (distilled - baseline) / (teacher - baseline)


def aggregate_runs(rows: Sequence[dict]) -> List[dict]:
    """Group run rows by role and temperature and average every metric over the seeds.

    Args:
        rows: Run rows as described in the module docstring. At most one teacher row.

    Returns:
        One dict per group, teacher first, then the baseline, then distilled groups by rising
        temperature. Keys: ``role``, ``temperature``, ``seeds`` (sorted, None for the teacher),
        ``runs`` (the count), ``<column>_mean`` and ``<column>_std`` for every column of
        ``METRIC_COLUMNS``, and for the final metrics ``delta_<column>`` (group mean minus the
        baseline mean, None without a baseline) and ``gap_closed_<column>`` (see
        ``gap_closed``; None without teacher or baseline).
    """
    groups: Dict[tuple, List[dict]] = {}
    for row in rows:
        if row['role'] not in ROLES:
            raise ValueError(
                f'run {row.get("name")!r} has role {row["role"]!r}; use one of {ROLES}'
            )
        if (row['role'] == 'distilled') != (row['temperature'] is not None):
            raise ValueError(
                f'run {row.get("name")!r} ({row["role"]}) has temperature {row["temperature"]!r}; '
                'distilled runs need a temperature and the others None'
            )
        groups.setdefault((row['role'], row['temperature']), []).append(row)
    teacher_count = len(groups.get(('teacher', None), []))
    if teacher_count > 1:
        raise ValueError(f'the rows contain {teacher_count} teacher runs; keep one teacher row')

    summaries = []
    for (role, temperature), members in groups.items():
        summary = dict(role=role, temperature=temperature, runs=len(members))
        seeds = [member['seed'] for member in members if member['seed'] is not None]
        summary['seeds'] = sorted(seeds) if seeds else None
        for column in METRIC_COLUMNS:
            summary[f'{column}_mean'], summary[f'{column}_std'] = mean_std(
                [member[column] for member in members]
            )
        summaries.append(summary)
    summaries.sort(key=lambda group: (ROLES.index(group['role']), group['temperature'] or 0.0))

    # Compare every group's final metrics with the baseline and, given a teacher, the gap.
    by_role = {group['role']: group for group in summaries if group['role'] != 'distilled'}
    baseline, teacher = by_role.get('baseline'), by_role.get('teacher')
    for group in summaries:
        for column in METRIC_COLUMNS[:3]:
            mean = group[f'{column}_mean']
            delta = share = None
            if baseline is not None:
                delta = mean - baseline[f'{column}_mean']
                if teacher is not None and group['role'] == 'distilled':
                    share = gap_closed(mean, baseline[f'{column}_mean'], teacher[f'{column}_mean'])
            group[f'delta_{column}'] = delta
            group[f'gap_closed_{column}'] = share
    return summaries


def group_label(group: dict) -> str:
    """Return the model column of a summary group, e.g. ``distilled, T=4``."""
    if group['role'] == 'distilled':
        return f'distilled, T={group["temperature"]:g}'
    return {'teacher': 'teacher', 'baseline': 'baseline student'}[group['role']]


def format_percent(mean: float, std: Optional[float]) -> str:
    """Format a [0, 1] metric as percent with one decimal, ``± std`` when it is defined."""
    if std is None:
        return f'{100 * mean:.1f}'
    return f'{100 * mean:.1f} ± {100 * std:.1f}'


def format_markdown(summaries: Sequence[dict]) -> str:
    """Format aggregated groups (see ``aggregate_runs``) as a Markdown table with a legend."""
    legend = (
        'COCO bbox AP on the validation set at the last epoch, in percent: mean ± sample '
        'standard deviation over the seeds. Best: the highest mAP50-95 of any validation '
        'epoch, which picks the epoch on the same set and so is optimistic. Δ: difference of '
        'means to the baseline student, in points. Gap closed: (distilled − baseline) / '
        '(teacher − baseline).'
    )
    header = (
        '| model | seeds | mAP50-95 | mAP50 | mAP75 | best mAP50-95 | Δ mAP50-95 | Δ mAP50 '
        '| gap closed mAP50-95 | gap closed mAP50 |'
    )
    lines = [legend, '', header, '|---|---|---|---|---|---|---|---|---|---|']
    for group in summaries:
        seeds = ', '.join(str(seed) for seed in group['seeds']) if group['seeds'] else '–'
        cells = [group_label(group), seeds]
        for column in (*METRIC_COLUMNS[:3], 'best_mAP'):
            cells.append(format_percent(group[f'{column}_mean'], group[f'{column}_std']))
        for column in ('final_mAP', 'final_mAP50'):
            delta = group[f'delta_{column}']
            show = delta is not None and group['role'] != 'baseline'
            cells.append(f'{100 * delta:+.1f}' if show else '–')
        for column in ('final_mAP', 'final_mAP50'):
            share = group[f'gap_closed_{column}']
            cells.append(f'{100 * share:.0f}%' if share is not None else '–')
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines) + '\n'


def write_csv(
    records: Sequence[dict], out_file: str, columns: Optional[Sequence[str]] = None
) -> str:
    """Write dicts as CSV rows, columns in ``columns`` order or the first record's key order.

    Lists (the seeds of a group) are joined with spaces; None becomes an empty cell.
    """
    if columns is None:
        columns = list(records[0]) if records else []
    os.makedirs(osp.dirname(osp.abspath(out_file)), exist_ok=True)
    with open(out_file, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=list(columns))
        writer.writeheader()
        for record in records:
            cells = {}
            for column in columns:
                value = record.get(column)
                if isinstance(value, (list, tuple)):
                    value = ' '.join(str(item) for item in value)
                cells[column] = '' if value is None else value
            writer.writerow(cells)
    return out_file
