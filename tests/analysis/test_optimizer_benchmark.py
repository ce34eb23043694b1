"""The optimizer benchmark: its plan, and a real two-run benchmark on a BCCD subset.

The real benchmark trains a tiny YOLOv5 student with torch.optim.SGD and with MultistepSGD
(alpha 0.5) through tools/train.py, then tabulates, times and plots them.
"""

import os.path as osp

import pytest
from mmengine.config import Config

from kd_plugin.analysis.optimizer_benchmark import (
    main,
    plan_optimizer_runs,
    setting_label,
    time_optimizer_steps,
)
from tests.analysis.test_sweep_real_runs import small_subset, tiny_config  # noqa: F401
from tests.conftest import BCCD_CONFIG_DIR, TINY_STUDENT_WIDEN

BASELINE = 'yolov5_n_320_20e_bccd.py'
ALPHA = 0.5
SEED = 1


def baseline_config_file() -> str:
    return osp.join(BCCD_CONFIG_DIR, BASELINE)


def test_plan_order_and_options(tmp_path):
    runs = plan_optimizer_runs(baseline_config_file(), [0.25, 0.5], [0, 1], str(tmp_path))
    names = [run.name for run in runs]
    assert names == [
        'sgd_seed0',
        'msgd_a0.25_seed0',
        'msgd_a0.5_seed0',
        'sgd_seed1',
        'msgd_a0.25_seed1',
        'msgd_a0.5_seed1',
    ]
    assert runs[0].cfg_options == ['randomness.seed=0']
    assert runs[2].cfg_options == [
        'randomness.seed=0',
        'optim_wrapper.optimizer.type=kd_plugin.MultistepSGD',
        'optim_wrapper.optimizer.alpha=0.5',
    ]
    assert runs[2].label == 'MultistepSGD, alpha=0.5, seed 0'
    assert runs[3].work_dir == osp.join(str(tmp_path), 'sgd_seed1')


@pytest.mark.parametrize(
    'alphas, seeds, options, message',
    [
        ([], [0], [], 'distinct alphas'),
        ([0.5, 0.5], [0], [], 'distinct alphas'),
        ([-0.1], [0], [], 'alphas must be >= 0'),
        ([0.5], [0, 0], [], 'distinct seeds'),
        ([0.5], [0], ['randomness.seed=3'], 'conflicts with the benchmark'),
        ([0.5], [0], ['optim_wrapper.optimizer.lr=0.1'], 'conflicts with the benchmark'),
    ],
)
def test_plan_rejects_invalid_input(tmp_path, alphas, seeds, options, message):
    with pytest.raises(ValueError, match=message):
        plan_optimizer_runs(baseline_config_file(), alphas, seeds, str(tmp_path), options)


def test_plan_rejects_missing_config(tmp_path):
    with pytest.raises(FileNotFoundError, match='config not found'):
        plan_optimizer_runs(str(tmp_path / 'missing.py'), [0.5], [0], str(tmp_path))


def test_step_timing_covers_settings():
    widen = f'model.backbone.widen_factor={TINY_STUDENT_WIDEN}'
    neck = f'model.neck.widen_factor={TINY_STUDENT_WIDEN}'
    head = f'model.bbox_head.head_module.widen_factor={TINY_STUDENT_WIDEN}'
    seconds = time_optimizer_steps(
        baseline_config_file(), [0.25, 0.5], steps=2, repeats=2, cfg_options=[widen, neck, head]
    )
    assert list(seconds) == [setting_label(None), setting_label(0.25), setting_label(0.5)]
    assert all(value > 0 for value in seconds.values())


@pytest.fixture(scope='module')
def real_benchmark(small_subset, tmp_path_factory):  # noqa: F811
    cfg = tiny_config(BASELINE, TINY_STUDENT_WIDEN, small_subset)
    cfg.train_dataloader.batch_size = 8
    config = str(tmp_path_factory.mktemp('configs') / 'student.py')
    cfg.dump(config)
    work_dir = str(tmp_path_factory.mktemp('optimizer_benchmark'))
    argv = [config, '--alphas', str(ALPHA), '--seeds', str(SEED), '--work-dir', work_dir]
    argv += ['--step-steps', '2', '--step-repeats', '1']
    return dict(argv=argv, paths=main(argv), work_dir=work_dir)


def test_runs_use_their_optimizer(real_benchmark):
    sgd = Config.fromfile(osp.join(real_benchmark['work_dir'], f'sgd_seed{SEED}', 'student.py'))
    assert sgd.optim_wrapper.optimizer.type == 'SGD'
    assert sgd.randomness.seed == SEED
    run_dir = osp.join(real_benchmark['work_dir'], f'msgd_a{ALPHA:g}_seed{SEED}')
    multistep = Config.fromfile(osp.join(run_dir, 'student.py'))
    assert multistep.optim_wrapper.optimizer.type == 'kd_plugin.MultistepSGD'
    assert multistep.optim_wrapper.optimizer.alpha == ALPHA
    assert multistep.randomness.seed == SEED


def test_report_lists_both_settings(real_benchmark):
    paths = real_benchmark['paths']
    assert set(paths) == {'summary_csv', 'summary_md', 'step_time', 'losses', 'accuracy'}
    with open(paths['summary_md']) as f:
        table = f.read()
    assert f'| torch.optim.SGD | {SEED} |' in table
    assert f'| MultistepSGD, alpha={ALPHA:g} | {SEED} |' in table
    sgd_line = next(line for line in table.splitlines() if line.startswith('| torch.optim'))
    assert sgd_line.endswith('| – | – | 1.00 | 1.00 |')
    for kind in ('losses', 'accuracy'):
        with open(paths[kind], 'rb') as f:
            assert f.read(8) == b'\x89PNG\r\n\x1a\n'


def test_rerun_collects_without_training(real_benchmark):
    paths = main([*real_benchmark['argv'], '--collect-only'])
    assert paths == real_benchmark['paths']
