"""A real two-run temperature sweep on a BCCD subset, then its tables and curves.

tools/train.py and tools/test.py run in this process through their ``main`` functions, with
the argument lists that the sweep would give its child processes. They train a tiny baseline
student and a tiny distilled student at temperature 2, and evaluate a tiny teacher, each with
a real MMEngine Runner. The collector then reads the scalars.json files those runs logged.
"""

import csv
import json
import os
import os.path as osp
from typing import Dict, List

import pytest
import torch
from mmengine.config import Config

from kd_plugin.analysis.cli import plot_curves_main, sweep_main
from kd_plugin.analysis.curves import accuracy_figure, loss_figure
from kd_plugin.analysis.logs import scalar_files
from kd_plugin.apis import test as test_cli
from kd_plugin.apis import train as train_cli
from kd_plugin.datasets import convert_voc_to_coco, read_image_set
from tests.conftest import (
    BCCD_CLASSES,
    BCCD_VOC_ROOT,
    REPO_ROOT,
    TINY_STUDENT_WIDEN,
    TINY_TEACHER_WIDEN,
    bccd_config,
    use_bccd_subset,
    yolov5_model_cfg,
)
from tests.test_end_to_end import kd_config

MAX_EPOCHS = 2  # 8 images / batch 8 = 1 iteration per epoch, validated after each epoch
TEMPERATURE = 2.0

SEED = 1  # not the configs' seed 0, so that the override is visible


def tiny_config(name: str, widen_factor: float, subset: dict) -> Config:
    """A BCCD config at a tiny width on the subset, on the schedule of kd_config."""
    cfg = bccd_config(name)
    cfg.model = yolov5_model_cfg(widen_factor)
    use_bccd_subset(cfg, subset)
    cfg.train_cfg.max_epochs = MAX_EPOCHS
    cfg.train_cfg.val_interval = 1
    cfg.default_hooks.param_scheduler.max_epochs = MAX_EPOCHS
    cfg.default_hooks.checkpoint.interval = 1
    cfg.default_hooks.logger.interval = 1
    return cfg


@pytest.fixture(scope='module')
def small_subset(tmp_path_factory) -> dict:
    """The first 8 BCCD training and 2 validation images, as tests.conftest.bccd_subset."""
    out_dir = tmp_path_factory.mktemp('small_bccd')
    files = {}
    for split, count in (('train', 8), ('val', 2)):
        image_ids = read_image_set(osp.join(BCCD_VOC_ROOT, 'ImageSets', 'Main', f'{split}.txt'))
        files[split] = str(out_dir / f'{split}.json')
        annotations = osp.join(BCCD_VOC_ROOT, 'Annotations')
        convert_voc_to_coco(annotations, image_ids[:count], BCCD_CLASSES, files[split])
    return dict(
        data_root=osp.join(REPO_ROOT, 'data', 'bccd') + os.sep,
        train_ann=files['train'],
        val_ann=files['val'],
        img_prefix='BCCD/JPEGImages/',
    )


def run_in_process(command: List[str], log_file: str) -> int:
    """Execute a sweep command (python tools/X.py ARGS) by calling X's main with ARGS."""
    tool = osp.basename(command[1])
    mains = {'train.py': train_cli.main, 'test.py': test_cli.main}
    mains[tool](command[2:])
    return 0


def read_logged_val(work_dir: str) -> List[dict]:
    """Validation lines of a work dir's scalars.json, read without kd_plugin.analysis."""
    (path,) = scalar_files(work_dir)
    with open(path) as f:
        records = [json.loads(line) for line in f if line.strip()]
    return [record for record in records if 'coco/bbox_mAP' in record]


@pytest.fixture(scope='module')
def real_sweep(small_subset, teacher_checkpoint, tmp_path_factory, monkeypatch_module) -> Dict:
    torch.set_num_threads(1)
    config_dir = tmp_path_factory.mktemp('configs')
    configs = {}
    kd_cfg = kd_config(small_subset, teacher_checkpoint, str(config_dir), MAX_EPOCHS)
    kd_cfg.train_dataloader.batch_size = 8
    baseline_cfg = tiny_config('yolov5_n_320_20e_bccd.py', TINY_STUDENT_WIDEN, small_subset)
    baseline_cfg.train_dataloader.batch_size = 8
    teacher_cfg = tiny_config('yolov5_s_320_30e_bccd.py', TINY_TEACHER_WIDEN, small_subset)
    for name, cfg in (('kd', kd_cfg), ('baseline', baseline_cfg), ('teacher', teacher_cfg)):
        configs[name] = str(config_dir / f'{name}.py')
        cfg.dump(configs[name])

    monkeypatch_module.setattr('kd_plugin.analysis.sweep.run_logged', run_in_process)
    work_dir = str(tmp_path_factory.mktemp('sweep'))
    argv = [
        configs['kd'],
        '--baseline-config',
        configs['baseline'],
        '--temperatures',
        str(TEMPERATURE),
        '--seeds',
        str(SEED),
        '--work-dir',
        work_dir,
        '--eval-teacher',
        '--teacher-config',
        configs['teacher'],
        '--teacher-checkpoint',
        teacher_checkpoint,
    ]
    paths = sweep_main(argv)
    return dict(argv=argv, paths=paths, work_dir=work_dir)


@pytest.fixture(scope='module')
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_runs_csv_matches_logged_validation(real_sweep):
    with open(real_sweep['paths']['runs_csv']) as f:
        rows = {row['name']: row for row in csv.DictReader(f)}
    assert list(rows) == ['teacher', 'baseline_seed1', f'kd_t{TEMPERATURE:g}_seed1']
    for name in ('baseline_seed1', f'kd_t{TEMPERATURE:g}_seed1'):
        val = read_logged_val(osp.join(real_sweep['work_dir'], name))
        assert [record['step'] for record in val] == [1, 2]
        best = max(val, key=lambda record: record['coco/bbox_mAP'])
        assert float(rows[name]['final_mAP']) == val[-1]['coco/bbox_mAP']
        assert float(rows[name]['final_mAP50']) == val[-1]['coco/bbox_mAP_50']
        assert float(rows[name]['final_mAP75']) == val[-1]['coco/bbox_mAP_75']
        assert int(rows[name]['final_epoch']) == MAX_EPOCHS
        assert float(rows[name]['best_mAP']) == best['coco/bbox_mAP']
        assert int(rows[name]['best_epoch']) == best['step']
    with open(osp.join(real_sweep['work_dir'], 'teacher', 'metrics.json')) as f:
        teacher_metrics = json.load(f)
    assert float(rows['teacher']['final_mAP']) == teacher_metrics['coco/bbox_mAP']
    assert rows['teacher']['seed'] == ''


def test_overrides_reach_the_runs(real_sweep):
    kd_dir = osp.join(real_sweep['work_dir'], f'kd_t{TEMPERATURE:g}_seed1')
    dumped = Config.fromfile(osp.join(kd_dir, 'kd.py'))
    assert dumped.model.temperature == TEMPERATURE
    assert dumped.randomness.seed == SEED
    baseline = Config.fromfile(osp.join(real_sweep['work_dir'], 'baseline_seed1', 'baseline.py'))
    assert baseline.randomness.seed == SEED
    assert 'temperature' not in baseline.model

    # DistillScheduleHook logs the temperature it applies; without a schedule it is the config's.
    (path,) = scalar_files(kd_dir)
    with open(path) as f:
        logged = [json.loads(line) for line in f if 'kd_temperature' in line]
    assert logged
    assert all(record['kd_temperature'] == TEMPERATURE for record in logged)


def test_summary_and_plot_written(real_sweep):
    paths = real_sweep['paths']
    assert set(paths) == {'runs_csv', 'summary_csv', 'summary_md', 'plot'}
    with open(paths['summary_md']) as f:
        table = f.read()
    assert '| teacher |' in table
    assert '| baseline student | 1 |' in table
    assert f'| distilled, T={TEMPERATURE:g} | 1 |' in table
    with open(paths['plot'], 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'


def test_rerun_skips_finished_runs(real_sweep, monkeypatch):
    def fail(command, log_file):
        raise AssertionError(f'finished run started again: {command}')

    monkeypatch.setattr('kd_plugin.analysis.sweep.run_logged', fail)
    paths = sweep_main(real_sweep['argv'])
    assert paths == real_sweep['paths']


def test_plot_curves_of_real_runs(real_sweep, tmp_path):
    work_dirs = [
        osp.join(real_sweep['work_dir'], name)
        for name in ('baseline_seed1', f'kd_t{TEMPERATURE:g}_seed1')
    ]
    paths = plot_curves_main(
        [*work_dirs, '--labels', 'alone', 'distilled', '--out-dir', str(tmp_path)]
    )
    assert paths == {
        'losses': str(tmp_path / 'losses.png'),
        'accuracy': str(tmp_path / 'accuracy.png'),
    }
    for path in paths.values():
        with open(path, 'rb') as f:
            assert f.read(8) == b'\x89PNG\r\n\x1a\n'

    # Accuracy: one line per run and panel, at the logged epochs and values.
    runs = {'alone': work_dirs[0], 'distilled': work_dirs[1]}
    figure = accuracy_figure(runs)
    map_axis = figure.axes[0]
    assert [line.get_label() for line in map_axis.get_lines()] == ['alone', 'distilled']
    for line, work_dir in zip(map_axis.get_lines(), work_dirs):
        val = read_logged_val(work_dir)
        assert list(line.get_xdata()) == [1, 2]
        assert list(line.get_ydata()) == [record['coco/bbox_mAP'] for record in val]

    # Losses: the student's terms in both runs, the distillation terms only in the second.
    figure = loss_figure(runs, window=2)
    titles = [axis.get_title() for axis in figure.axes if axis.get_title()]
    assert titles == [
        'loss',
        'loss_bbox',
        'loss_cls',
        'loss_obj',
        'loss_kd_bbox',
        'loss_kd_cls',
        'loss_kd_obj',
    ]
    panels = {axis.get_title(): axis for axis in figure.axes}
    assert [line.get_label() for line in panels['loss'].get_legend().get_lines()] == [
        'alone',
        'distilled',
    ]
    assert [text.get_text() for text in panels['loss_kd_cls'].get_legend().get_texts()] == [
        'distilled'
    ]
