"""Aggregation, gap share and table formats of sweep results, on hand-written run rows."""

import csv
import math

import pytest

from kd_plugin.analysis.summary import (
    RUN_COLUMNS,
    aggregate_runs,
    format_markdown,
    gap_closed,
    mean_std,
    write_csv,
)


def make_row(name, role, temperature, seed, final, best) -> dict:
    """A run row; ``final`` and ``best`` are (mAP, mAP50, mAP75) fractions."""
    row = dict(name=name, role=role, temperature=temperature, seed=seed, work_dir=f'/w/{name}')
    for stage, values, epoch in (('final', final, 20), ('best', best, 18)):
        for metric, value in zip(('mAP', 'mAP50', 'mAP75'), values):
            row[f'{stage}_{metric}'] = value
        row[f'{stage}_epoch'] = epoch
    return row


@pytest.fixture
def rows() -> list:
    # Final (mAP, mAP50, mAP75) per run; the best values differ only where stated.
    return [
        make_row('teacher', 'teacher', None, None, (0.30, 0.60, 0.31), (0.30, 0.60, 0.31)),
        make_row('kd_t4_seed0', 'distilled', 4.0, 0, (0.24, 0.56, 0.25), (0.25, 0.56, 0.25)),
        make_row('baseline_seed0', 'baseline', None, 0, (0.20, 0.50, 0.19), (0.20, 0.50, 0.19)),
        make_row('kd_t1_seed0', 'distilled', 1.0, 0, (0.19, 0.48, 0.18), (0.19, 0.48, 0.18)),
        make_row('baseline_seed1', 'baseline', None, 1, (0.22, 0.54, 0.21), (0.22, 0.54, 0.21)),
        make_row('kd_t4_seed1', 'distilled', 4.0, 1, (0.26, 0.59, 0.25), (0.27, 0.59, 0.25)),
    ]


def test_mean_std_uses_sample_std():
    # Mean of 1, 2, 3, 4 is 2.5; squared deviations sum to 2.25 + 0.25 + 0.25 + 2.25 = 5,
    # so the sample variance is 5 / 3 and the std sqrt(5 / 3) = 1.2910.
    mean, std = mean_std([1.0, 2.0, 3.0, 4.0])
    assert mean == pytest.approx(2.5, abs=1e-12)
    assert std == pytest.approx(math.sqrt(5 / 3), abs=1e-12)


def test_mean_std_single_value_has_no_std():
    assert mean_std([0.3]) == (0.3, None)


def test_mean_std_rejects_empty():
    with pytest.raises(ValueError, match='at least one value'):
        mean_std([])


@pytest.mark.parametrize(
    'distilled, baseline, teacher, expected',
    [
        (0.25, 0.21, 0.30, 0.04 / 0.09),  # 44% of the 9-point gap
        (0.30, 0.21, 0.30, 1.0),  # reaches the teacher
        (0.21, 0.21, 0.30, 0.0),  # no gain
        (0.19, 0.21, 0.30, -0.02 / 0.09),  # distillation hurt
        (0.40, 0.20, 0.10, -2.0),  # teacher below the baseline: the sign flips
    ],
)
def test_gap_closed_values(distilled, baseline, teacher, expected):
    assert gap_closed(distilled, baseline, teacher) == pytest.approx(expected, abs=1e-12)


def test_gap_closed_undefined_without_gap():
    assert gap_closed(0.25, 0.21, 0.21) is None


def test_aggregate_order_and_means(rows):
    summaries = aggregate_runs(rows)
    keys = [(group['role'], group['temperature']) for group in summaries]
    assert keys == [('teacher', None), ('baseline', None), ('distilled', 1.0), ('distilled', 4.0)]
    teacher, baseline, t1, t4 = summaries
    assert teacher['seeds'] is None
    assert baseline['seeds'] == [0, 1]
    assert t4['runs'] == 2

    # Baseline mAP: mean (0.20 + 0.22) / 2 = 0.21; deviations ±0.01, so the sample std is
    # sqrt(2 * 0.01^2 / 1) = 0.014142.
    assert baseline['final_mAP_mean'] == pytest.approx(0.21, abs=1e-12)
    assert baseline['final_mAP_std'] == pytest.approx(0.0141421356, abs=1e-9)
    # T=4 mAP50: mean (0.56 + 0.59) / 2 = 0.575, std sqrt(2 * 0.015^2) = 0.0212132.
    assert t4['final_mAP50_mean'] == pytest.approx(0.575, abs=1e-12)
    assert t4['final_mAP50_std'] == pytest.approx(0.0212132034, abs=1e-9)
    # T=4 best mAP: (0.25 + 0.27) / 2 = 0.26.
    assert t4['best_mAP_mean'] == pytest.approx(0.26, abs=1e-12)
    # One seed: no standard deviation.
    assert t1['final_mAP_std'] is None


def test_aggregate_delta_and_gap(rows):
    teacher, baseline, t1, t4 = aggregate_runs(rows)
    # T=4 mAP: 0.25 - 0.21 = +0.04 of the teacher gap 0.30 - 0.21 = 0.09, a share of 0.444.
    assert t4['delta_final_mAP'] == pytest.approx(0.04, abs=1e-12)
    assert t4['gap_closed_final_mAP'] == pytest.approx(0.04 / 0.09, abs=1e-12)
    # T=4 mAP50: 0.575 - 0.52 = +0.055 of the gap 0.60 - 0.52 = 0.08, a share of 0.6875.
    assert t4['delta_final_mAP50'] == pytest.approx(0.055, abs=1e-12)
    assert t4['gap_closed_final_mAP50'] == pytest.approx(0.6875, abs=1e-12)
    # T=1 mAP: 0.19 - 0.21 = -0.02, a share of -0.02 / 0.09 = -0.222; mAP50: 0.48 - 0.52 =
    # -0.04, a share of -0.04 / 0.08 = -0.5.
    assert t1['delta_final_mAP'] == pytest.approx(-0.02, abs=1e-12)
    assert t1['gap_closed_final_mAP'] == pytest.approx(-0.02 / 0.09, abs=1e-12)
    assert t1['gap_closed_final_mAP50'] == pytest.approx(-0.5, abs=1e-12)
    # The teacher's delta is the gap itself; teacher and baseline get no share.
    assert teacher['delta_final_mAP'] == pytest.approx(0.09, abs=1e-12)
    assert teacher['gap_closed_final_mAP'] is None
    assert baseline['delta_final_mAP'] == pytest.approx(0.0, abs=1e-12)
    assert baseline['gap_closed_final_mAP'] is None


def test_aggregate_without_teacher_or_baseline(rows):
    students = [row for row in rows if row['role'] == 'distilled']
    for group in aggregate_runs(students):
        assert group['delta_final_mAP'] is None
        assert group['gap_closed_final_mAP'] is None
    without_teacher = [row for row in rows if row['role'] != 'teacher']
    t4 = aggregate_runs(without_teacher)[-1]
    assert t4['delta_final_mAP'] == pytest.approx(0.04, abs=1e-12)
    assert t4['gap_closed_final_mAP'] is None


@pytest.mark.parametrize(
    'change, message',
    [
        (dict(role='student'), 'has role'),
        (dict(temperature=None), 'distilled runs need a temperature'),
    ],
)
def test_aggregate_rejects_bad_rows(rows, change, message):
    rows[1].update(change)
    with pytest.raises(ValueError, match=message):
        aggregate_runs(rows)


def test_aggregate_rejects_two_teachers(rows):
    with pytest.raises(ValueError, match='2 teacher runs'):
        aggregate_runs(rows + [dict(rows[0])])


def test_markdown_table_lines(rows):
    lines = format_markdown(aggregate_runs(rows)).splitlines()
    assert lines[2].startswith('| model | seeds | mAP50-95 | mAP50 | mAP75 | best mAP50-95 |')
    # Percent with one decimal; Δ in points; gap share in whole percent. T=4 mAP75 is 0.25
    # for both seeds, so its std is 0.0.
    assert lines[4:] == [
        '| teacher | – | 30.0 | 60.0 | 31.0 | 30.0 | +9.0 | +8.0 | – | – |',
        '| baseline student | 0, 1 | 21.0 ± 1.4 | 52.0 ± 2.8 | 20.0 ± 1.4 | 21.0 ± 1.4 | – | – '
        '| – | – |',
        '| distilled, T=1 | 0 | 19.0 | 48.0 | 18.0 | 19.0 | -2.0 | -4.0 | -22% | -50% |',
        '| distilled, T=4 | 0, 1 | 25.0 ± 1.4 | 57.5 ± 2.1 | 25.0 ± 0.0 | 26.0 ± 1.4 | +4.0 | '
        '+5.5 | 44% | 69% |',
    ]


def test_csv_files_round_trip(rows, tmp_path):
    runs_file = write_csv(rows, str(tmp_path / 'runs.csv'), RUN_COLUMNS)
    with open(runs_file) as f:
        read = list(csv.DictReader(f))
    assert list(read[0]) == list(RUN_COLUMNS)
    assert read[0]['name'] == 'teacher'
    assert read[0]['temperature'] == ''
    assert float(read[1]['final_mAP50']) == 0.56

    summary_file = write_csv(aggregate_runs(rows), str(tmp_path / 'summary.csv'))
    with open(summary_file) as f:
        read = list(csv.DictReader(f))
    t4 = read[3]
    assert t4['seeds'] == '0 1'
    assert float(t4['temperature']) == 4.0
    assert float(t4['gap_closed_final_mAP']) == pytest.approx(0.04 / 0.09, abs=1e-12)
    assert read[0]['gap_closed_final_mAP'] == ''
