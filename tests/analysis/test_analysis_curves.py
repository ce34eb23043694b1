"""Accuracy, loss and temperature-sweep figures from hand-written MMEngine scalars.json files."""

import json
import os
import os.path as osp

import matplotlib.image
import pytest

from kd_plugin.analysis.cli import plot_curves_main, run_labels
from kd_plugin.analysis.curves import (
    accuracy_figure,
    loss_figure,
    plot_accuracy,
    plot_losses,
    plot_temperature_sweep,
    smooth,
    temperature_sweep_figure,
)
from kd_plugin.analysis.logs import best_metrics, final_metrics, read_scalars

PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def write_scalars(work_dir, timestamp, records) -> None:
    """Write records as LocalVisBackend does: <work_dir>/<timestamp>/vis_data/scalars.json."""
    vis_dir = osp.join(work_dir, timestamp, 'vis_data')
    os.makedirs(vis_dir)
    with open(osp.join(vis_dir, 'scalars.json'), 'w') as f:
        for record in records:
            f.write(json.dumps(record) + '\n')


def val_record(epoch, mean_ap) -> dict:
    return {
        'coco/bbox_mAP': mean_ap,
        'coco/bbox_mAP_50': mean_ap + 0.3,
        'coco/bbox_mAP_75': mean_ap + 0.1,
        'coco/bbox_mAP_s': -1.0,
        'step': epoch,
    }


@pytest.fixture
def work_dirs(tmp_path) -> dict:
    """A baseline run and a distilled run that was interrupted after epoch 2 and resumed."""
    baseline = str(tmp_path / 'baseline')
    write_scalars(
        baseline,
        '20260101_000000',
        [
            {'lr': 0.01, 'loss': 4.0, 'loss_cls': 2.0, 'step': 1},
            {'lr': 0.01, 'loss': 3.0, 'loss_cls': 1.5, 'step': 2},
            val_record(1, 0.10),
            {'lr': 0.01, 'loss': 2.0, 'loss_cls': 1.0, 'step': 3},
            {'lr': 0.01, 'loss': 1.0, 'loss_cls': 0.5, 'step': 4},
            val_record(2, 0.20),
        ],
    )
    distilled = str(tmp_path / 'distilled')
    write_scalars(
        distilled,
        '20260101_000000',
        [
            {'loss': 5.0, 'loss_cls': 2.0, 'loss_kd_cls': 1.0, 'kd_temperature': 4.0, 'step': 2},
            val_record(1, 0.15),
            {'loss': 9.0, 'loss_cls': 2.0, 'loss_kd_cls': 9.0, 'step': 4},  # replaced on resume
        ],
    )
    write_scalars(
        distilled,
        '20260101_010000',
        [
            {'loss': 3.0, 'loss_cls': 1.0, 'loss_kd_cls': 0.5, 'step': 4},
            val_record(2, 0.25),
            val_record(3, 0.22),
        ],
    )
    return dict(baseline=baseline, distilled=distilled)


def test_smooth_trailing_mean():
    # Window 2: the first point alone, then the mean of each point and the one before it.
    assert list(smooth([4.0, 3.0, 2.0, 1.0], 2)) == [4.0, 3.5, 2.5, 1.5]
    assert list(smooth([4.0, 3.0], 1)) == [4.0, 3.0]


def test_resumed_run_records_replace_earlier(work_dirs):
    scalars = read_scalars(work_dirs['distilled'])
    assert [record['step'] for record in scalars['train']] == [2, 4]
    assert scalars['train'][1]['loss_kd_cls'] == 0.5
    assert [record['step'] for record in scalars['val']] == [1, 2, 3]
    assert final_metrics(work_dirs['distilled']) == dict(
        mAP=0.22, mAP50=pytest.approx(0.52), mAP75=pytest.approx(0.32), epoch=3
    )
    assert best_metrics(work_dirs['distilled'])['epoch'] == 2


def test_accuracy_figure_lines(work_dirs):
    figure = accuracy_figure(work_dirs)
    map_axis, map50_axis = figure.axes
    assert map_axis.get_ylabel() == 'mAP50-95 (COCO bbox)'
    assert map_axis.get_xlabel() == 'epoch'
    assert [line.get_label() for line in map_axis.get_lines()] == ['baseline', 'distilled']
    baseline, distilled = map_axis.get_lines()
    assert list(baseline.get_xdata()) == [1, 2]
    assert list(baseline.get_ydata()) == [0.10, 0.20]
    assert list(distilled.get_xdata()) == [1, 2, 3]
    assert list(distilled.get_ydata()) == [0.15, 0.25, 0.22]
    assert list(map50_axis.get_lines()[1].get_ydata()) == pytest.approx([0.45, 0.55, 0.52])


def test_accuracy_figure_needs_validation(tmp_path):
    write_scalars(str(tmp_path / 'run'), '20260101_000000', [{'loss': 1.0, 'step': 1}])
    with pytest.raises(ValueError, match='no validation results'):
        accuracy_figure({'run': str(tmp_path / 'run')})


def test_loss_figure_panels_and_smoothing(work_dirs):
    figure = loss_figure(work_dirs, window=2)
    panels = {axis.get_title(): axis for axis in figure.axes if axis.get_title()}
    # The total first, then the student's terms, then the distillation terms.
    assert list(panels) == ['loss', 'loss_cls', 'loss_kd_cls']

    # Each run draws its raw values faint and the moving average over 2 points on top.
    raw, smoothed = panels['loss'].get_lines()[:2]
    assert list(raw.get_xdata()) == [1, 2, 3, 4]
    assert list(raw.get_ydata()) == [4.0, 3.0, 2.0, 1.0]
    assert raw.get_alpha() == 0.25
    assert list(smoothed.get_ydata()) == [4.0, 3.5, 2.5, 1.5]
    assert smoothed.get_label() == 'baseline'
    assert smoothed.get_color() == raw.get_color()
    legend = [text.get_text() for text in panels['loss'].get_legend().get_texts()]
    assert legend == ['baseline', 'distilled']

    # The distillation term exists only in the distilled run, with the resumed value at 4.
    kd_raw, kd_smoothed = panels['loss_kd_cls'].get_lines()
    assert list(kd_raw.get_ydata()) == [1.0, 0.5]
    assert kd_smoothed.get_label() == 'distilled'


def test_loss_figure_needs_losses(tmp_path):
    write_scalars(str(tmp_path / 'run'), '20260101_000000', [val_record(1, 0.1)])
    with pytest.raises(ValueError, match='no loss values'):
        loss_figure({'run': str(tmp_path / 'run')})


def sweep_rows() -> list:
    """Teacher 0.30; baseline 0.20 and 0.22; T=1 seed 0 0.19; T=4 0.24 and 0.26 (mAP)."""
    rows = []
    for role, temperature, seed, mean_ap in (
        ('teacher', None, None, 0.30),
        ('baseline', None, 0, 0.20),
        ('baseline', None, 1, 0.22),
        ('distilled', 1.0, 0, 0.19),
        ('distilled', 4.0, 0, 0.24),
        ('distilled', 4.0, 1, 0.26),
    ):
        row = dict(name=f'{role}{temperature}{seed}', role=role, temperature=temperature, seed=seed)
        for stage in ('final', 'best'):
            row.update({f'{stage}_mAP': mean_ap, f'{stage}_mAP75': mean_ap})
            row[f'{stage}_mAP50'] = mean_ap + 0.3
        rows.append(row)
    return rows


def test_temperature_sweep_figure_series():
    figure = temperature_sweep_figure(sweep_rows())
    map_axis, map50_axis = figure.axes
    lines = {line.get_label(): line for line in map_axis.get_lines()}

    # Means in percent: T=1 19.0, T=4 (24 + 26) / 2 = 25.0; baseline (20 + 22) / 2 = 21.0.
    (errorbar,) = map_axis.containers
    assert errorbar.get_label() == 'distilled (mean ± std over seeds)'
    distilled = errorbar.lines[0]
    assert list(distilled.get_xdata()) == [1.0, 4.0]
    assert list(distilled.get_ydata()) == pytest.approx([19.0, 25.0])
    assert list(lines['baseline student (mean of 2 seeds)'].get_ydata()) == pytest.approx(
        [21.0, 21.0]
    )
    teacher = lines['teacher']
    assert list(teacher.get_ydata()) == pytest.approx([30.0, 30.0])
    assert teacher.get_linestyle() == '--'
    assert list(map50_axis.containers[0].lines[0].get_ydata()) == pytest.approx([49.0, 55.0])
    # Error bars: T=4's sample std is sqrt(2 * 1^2) = 1.414 points, T=1 has one seed, so 0.
    (bars,) = errorbar.lines[2]
    assert [segment[:, 1].tolist() for segment in bars.get_segments()] == [
        pytest.approx([19.0, 19.0]),
        pytest.approx([25.0 - 2**0.5, 25.0 + 2**0.5]),
    ]

    # Every seed as a dot; the temperature axis in base 2 with a tick per temperature.
    dots = map_axis.collections[0].get_offsets()
    assert dots[:, 0].tolist() == [1.0, 4.0, 4.0]
    assert dots[:, 1].tolist() == pytest.approx([19.0, 24.0, 26.0])
    assert map_axis.get_xscale() == 'log'
    assert [label.get_text() for label in map_axis.get_xticklabels()] == ['1', '4']
    assert map_axis.get_xlabel() == 'distillation temperature'
    assert map_axis.get_ylabel() == 'mAP50-95 (%)'


def test_temperature_sweep_needs_distilled_runs():
    rows = [row for row in sweep_rows() if row['role'] != 'distilled']
    with pytest.raises(ValueError, match='no distilled runs'):
        temperature_sweep_figure(rows)


def test_plots_written_as_png(work_dirs, tmp_path):
    paths = [
        plot_accuracy(work_dirs, str(tmp_path / 'out' / 'accuracy.png')),
        plot_losses(work_dirs, str(tmp_path / 'out' / 'losses.png')),
        plot_temperature_sweep(sweep_rows(), str(tmp_path / 'out' / 'sweep.png')),
    ]
    for path in paths:
        with open(path, 'rb') as f:
            assert f.read(8) == PNG_SIGNATURE
        height, width, _ = matplotlib.image.imread(path).shape
        assert width > height > 300


def test_plot_curves_cli_default_out_dir(work_dirs, tmp_path):
    paths = plot_curves_main([work_dirs['baseline'], work_dirs['distilled']])
    assert paths == {
        'losses': str(tmp_path / 'curves' / 'losses.png'),
        'accuracy': str(tmp_path / 'curves' / 'accuracy.png'),
    }


def test_plot_curves_cli_without_validation(tmp_path):
    write_scalars(str(tmp_path / 'run'), '20260101_000000', [{'loss': 1.0, 'step': 1}])
    paths = plot_curves_main([str(tmp_path / 'run'), '--out-dir', str(tmp_path / 'out')])
    assert list(paths) == ['losses']


def test_plot_curves_cli_rejects_bad_input(work_dirs, tmp_path):
    with pytest.raises(FileNotFoundError, match='scalars.json'):
        plot_curves_main([str(tmp_path / 'empty')])
    with pytest.raises(ValueError, match='got 1 labels for 2 work dirs'):
        plot_curves_main([work_dirs['baseline'], work_dirs['distilled'], '--labels', 'a'])
    with pytest.raises(ValueError, match='--window must be >= 1'):
        plot_curves_main([work_dirs['baseline'], '--window', '0'])


def test_run_labels():
    assert run_labels(['a/run', 'b/other/'], None) == {'run': 'a/run', 'other': 'b/other/'}
    # Repeated folder names fall back to the paths as given.
    assert run_labels(['a/run', 'b/run'], None) == {'a/run': 'a/run', 'b/run': 'b/run'}
    assert run_labels(['a/run'], ['KD']) == {'KD': 'a/run'}
    with pytest.raises(ValueError, match='labels repeat'):
        run_labels(['a', 'b'], ['x', 'x'])
