"""Collect the metrics of a temperature sweep's finished runs into CSV, Markdown and a plot."""

import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple

from .curves import plot_temperature_sweep
from .logs import METRIC_KEYS, best_metrics, final_metrics, summarize_metrics
from .summary import RUN_COLUMNS, aggregate_runs, format_markdown, write_csv
from .sweep import DONE_MARKER, read_json, teacher_is_evaluated
from .sweep_plan import SweepRun, TeacherEval


def metrics_row(
    name: str,
    role: str,
    final: dict,
    best: dict,
    work_dir: str,
    temperature: Optional[float] = None,
    seed: Optional[int] = None,
) -> dict:
    """Build a run row (see summary.RUN_COLUMNS) from summarize_metrics dicts."""
    row = dict(name=name, role=role, temperature=temperature, seed=seed, work_dir=work_dir)
    for stage, metrics in (('final', final), ('best', best)):
        for key in ('mAP', 'mAP50', 'mAP75', 'epoch'):
            row[f'{stage}_{key}'] = metrics.get(key)
    return row


def run_row(run: SweepRun) -> Optional[dict]:
    """Return the row of a finished run, None if the run has no done marker.

    Final metrics are the last logged validation result, or the evaluation of the final
    checkpoint when the sweep had to replace a missing final validation. Best metrics are
    those of the epoch with the highest mAP50-95.

    Raises:
        ValueError: if the run is marked finished but logged no validation result.
    """
    marker = read_json(osp.join(run.work_dir, DONE_MARKER))
    if marker is None:
        return None
    final = final_metrics(run.work_dir)
    best = best_metrics(run.work_dir)
    if marker.get('final_eval'):
        evaluated = read_json(osp.join(run.work_dir, marker['final_eval']['metrics_file']))
        final = summarize_metrics(dict(evaluated, step=marker['final_eval']['epoch']))
        if best is None or final['mAP'] > best['mAP']:
            best = final
    if final is None:
        raise ValueError(
            f'{run.work_dir} is marked finished but contains no logged validation result '
            f'({METRIC_KEYS[0]}); delete its {DONE_MARKER} to train it again'
        )
    return metrics_row(
        run.name, run.role, final, best, run.work_dir, temperature=run.temperature, seed=run.seed
    )


def teacher_row(teacher: TeacherEval) -> Optional[dict]:
    """Return the teacher's row, None until it is evaluated; final and best are the same."""
    if not teacher_is_evaluated(teacher):
        return None
    metrics = summarize_metrics(read_json(teacher.metrics_file))
    return metrics_row('teacher', 'teacher', metrics, metrics, teacher.work_dir)


def collect_rows(
    runs: Sequence[SweepRun], teacher: Optional[TeacherEval] = None
) -> Tuple[List[dict], List[str]]:
    """Collect the rows of every finished run and of the evaluated teacher.

    Returns:
        The rows (teacher first), and the names of the runs that are not finished.
    """
    rows, missing = [], []
    if teacher is not None:
        row = teacher_row(teacher)
        rows += [row] if row else []
        missing += [] if row else ['teacher']
    for run in runs:
        row = run_row(run)
        if row is None:
            missing.append(run.name)
        else:
            rows.append(row)
    return rows, missing


def write_results(rows: Sequence[dict], out_dir: str) -> Dict[str, str]:
    """Write the run rows and their aggregate as CSV and Markdown, and plot the sweep.

    Returns:
        Paths by kind: ``runs_csv`` with one row per run, ``summary_csv`` and
        ``summary_md`` with one row per role and temperature (see summary.aggregate_runs),
        and ``plot``, a PNG written only when there are distilled runs.
    """
    if not rows:
        raise ValueError(f'no finished runs to collect for {out_dir}; train some runs first')
    summaries = aggregate_runs(rows)
    paths = dict(
        runs_csv=write_csv(rows, osp.join(out_dir, 'runs.csv'), RUN_COLUMNS),
        summary_csv=write_csv(summaries, osp.join(out_dir, 'summary.csv')),
    )
    paths['summary_md'] = osp.join(out_dir, 'summary.md')
    with open(paths['summary_md'], 'w') as f:
        f.write(format_markdown(summaries))
    if any(row['role'] == 'distilled' for row in rows):
        paths['plot'] = plot_temperature_sweep(rows, osp.join(out_dir, 'temperature_sweep.png'))
    return paths
