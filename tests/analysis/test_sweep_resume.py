"""Skipping, resuming and restarting sweep runs, with a stand-in for tools/train.py and test.py.

FakeTools writes what the real tools leave in a work dir (scalars.json lines, epoch_N.pth
files, last_checkpoint, the --metrics-out file) in milliseconds, and can fail part-way, so that
every state of an interrupted sweep is cheap to build. The plan uses the real BCCD configs,
whose schedule is 20 epochs with validation every 2.
"""

import itertools
import json
import os
import os.path as osp
import sys
from typing import List, Optional

import pytest

from kd_plugin.analysis import sweep
from kd_plugin.analysis.cli import resolve_baseline_config, resolve_teacher, sweep_main
from kd_plugin.analysis.sweep import (
    DONE_MARKER,
    estimate_seconds_left,
    latest_checkpoint,
    run_sweep,
)
from kd_plugin.analysis.sweep_plan import (
    SweepRun,
    TeacherEval,
    parse_cfg_options,
    plan_sweep,
    train_command,
)
from kd_plugin.analysis.sweep_results import collect_rows, run_row
from tests.conftest import BCCD_CONFIG_DIR

KD_CONFIG = osp.join(BCCD_CONFIG_DIR, 'kd_yolov5_s-to-n_320_20e_bccd.py')
BASELINE_CONFIG = osp.join(BCCD_CONFIG_DIR, 'yolov5_n_320_20e_bccd.py')
FINAL_EPOCH = 20
ATTEMPTS = itertools.count(1)  # distinct timestamp folders across FakeTools instances


def option_value(command: List[str], key: str) -> Optional[str]:
    for item in command:
        if item.startswith(key + '='):
            return item.split('=', 1)[1]
    return None


def argument(command: List[str], flag: str) -> Optional[str]:
    return command[command.index(flag) + 1] if flag in command else None


def final_map(command: List[str]) -> float:
    """The final mAP FakeTools logs: 0.20 alone, 0.20 + T / 100 distilled, + seed / 1000."""
    temperature = float(option_value(command, 'model.temperature') or 0)
    return 0.20 + temperature / 100 + int(option_value(command, 'randomness.seed')) / 1000


class FakeTools:
    """Stand-in for run_logged that executes tools/train.py and tools/test.py commands.

    Args:
        stop_after_epoch: Maps a run folder name to the epoch after which its next training
            attempt stops with exit code 1, or raises KeyboardInterrupt when the value is
            negative (its absolute value is the epoch).
        skip_final_validation: Run folder names whose training saves the final checkpoint and
            exits with 0 without logging the final validation.
    """

    def __init__(self, stop_after_epoch=None, skip_final_validation=()):
        self.stop_after_epoch = dict(stop_after_epoch or {})
        self.skip_final_validation = set(skip_final_validation)
        self.commands: List[List[str]] = []

    def __call__(self, command: List[str], log_file: str) -> int:
        self.commands.append(command)
        if osp.basename(command[1]) == 'test.py':
            metrics_file = argument(command, '--metrics-out')
            os.makedirs(osp.dirname(metrics_file), exist_ok=True)
            with open(metrics_file, 'w') as f:
                json.dump(
                    {'coco/bbox_mAP': 0.5, 'coco/bbox_mAP_50': 0.8, 'coco/bbox_mAP_75': 0.6}, f
                )
            return 0

        work_dir = argument(command, '--work-dir')
        name = osp.basename(work_dir)
        resume = argument(command, '--resume')
        first_epoch = int(osp.basename(resume)[len('epoch_') : -len('.pth')]) + 1 if resume else 1
        stop = self.stop_after_epoch.pop(name, None)
        last_epoch = abs(stop) if stop is not None else FINAL_EPOCH
        vis_dir = osp.join(work_dir, f'20260101_{next(ATTEMPTS):06d}', 'vis_data')
        os.makedirs(vis_dir)
        with open(osp.join(vis_dir, 'scalars.json'), 'w') as scalars:
            for epoch in range(first_epoch, last_epoch + 1):
                scalars.write(json.dumps({'loss': 1.0 / epoch, 'step': 26 * epoch}) + '\n')
                checkpoint = osp.join(work_dir, f'epoch_{epoch}.pth')
                if epoch % 2 == 0 or epoch == FINAL_EPOCH:
                    with open(checkpoint, 'w') as f:
                        f.write('weights')
                    with open(osp.join(work_dir, 'last_checkpoint'), 'w') as f:
                        f.write(checkpoint)
                if epoch == FINAL_EPOCH and name in self.skip_final_validation:
                    continue
                if epoch % 2 == 0:
                    # Validation improves to the final epoch, apart from epoch 10, the best.
                    value = final_map(command) - (FINAL_EPOCH - epoch) / 1000
                    value += 0.05 if epoch == 10 else 0.0
                    record = {'coco/bbox_mAP': value, 'coco/bbox_mAP_50': value + 0.3}
                    record.update({'coco/bbox_mAP_75': value + 0.01, 'step': epoch})
                    scalars.write(json.dumps(record) + '\n')
        if stop is not None and stop < 0:
            raise KeyboardInterrupt
        return 1 if stop is not None else 0


def plan(work_dir, temperatures=(1.0, 4.0), seeds=(0,), extra_options=()) -> List[SweepRun]:
    return plan_sweep(KD_CONFIG, BASELINE_CONFIG, temperatures, seeds, str(work_dir), extra_options)


def train_dirs(tools: FakeTools) -> List[str]:
    """Run folder names of the training commands, in order."""
    return [
        osp.basename(argument(command, '--work-dir'))
        for command in tools.commands
        if osp.basename(command[1]) == 'train.py'
    ]


def test_plan_order_and_commands(tmp_path):
    runs = plan(tmp_path, temperatures=(1.0, 0.5), seeds=(0, 1))
    assert [run.name for run in runs] == [
        'baseline_seed0',
        'kd_t1_seed0',
        'kd_t0.5_seed0',
        'baseline_seed1',
        'kd_t1_seed1',
        'kd_t0.5_seed1',
    ]
    command = train_command(runs[2])
    assert command[1:] == [
        osp.relpath(osp.join(sweep.TOOLS_DIR, 'train.py')),
        KD_CONFIG,
        '--work-dir',
        str(tmp_path / 'kd_t0.5_seed0'),
        '--cfg-options',
        'model.temperature=0.5',
        'randomness.seed=0',
    ]
    baseline = train_command(runs[3], resume_from='/w/epoch_4.pth')
    assert baseline[2:] == [
        BASELINE_CONFIG,
        '--work-dir',
        str(tmp_path / 'baseline_seed1'),
        '--resume',
        '/w/epoch_4.pth',
        '--cfg-options',
        'randomness.seed=1',
    ]


def test_multi_gpu_commands_use_dist_train(tmp_path):
    run = plan(tmp_path, extra_options=['train_cfg.max_epochs=10'])[1]
    command = train_command(run, gpus=8)
    assert command[:3] == ['env', f'PYTHON={sys.executable}', 'bash']
    assert command[3] == osp.relpath(osp.join(sweep.TOOLS_DIR, 'dist_train.sh'))
    assert command[4:8] == [KD_CONFIG, '8', '--work-dir', str(tmp_path / 'kd_t1_seed0')]
    assert command[-3:] == ['model.temperature=1', 'randomness.seed=0', 'train_cfg.max_epochs=10']


@pytest.mark.parametrize(
    'temperatures, seeds, extra_options, message',
    [
        ((), (0,), (), 'no temperatures'),
        ((0.0, 2.0), (0,), (), 'must be > 0'),
        ((2.0, 2.0), (0,), (), 'temperatures repeat'),
        ((2.0,), (), (), 'no seeds'),
        ((2.0,), (1, 1), (), 'seeds repeat'),
        ((2.0,), (0,), ('model.temperature=3',), 'conflicts with the sweep'),
        ((2.0,), (0,), ('randomness.seed=3',), 'conflicts with the sweep'),
    ],
)
def test_plan_rejects_bad_input(tmp_path, temperatures, seeds, extra_options, message):
    with pytest.raises(ValueError, match=message):
        plan(tmp_path, temperatures, seeds, extra_options)


def test_cfg_options_need_key_value():
    assert parse_cfg_options(['train_cfg.max_epochs=3']) == {'train_cfg.max_epochs': 3}
    with pytest.raises(ValueError, match="key=value, got \\['max_epochs'\\]"):
        parse_cfg_options(['train_cfg.val_interval=1', 'max_epochs'])


def test_plan_rejects_missing_config(tmp_path):
    with pytest.raises(FileNotFoundError, match='config not found'):
        plan_sweep(str(tmp_path / 'kd.py'), BASELINE_CONFIG, [1.0], [0], str(tmp_path))


def test_finished_runs_are_skipped(tmp_path):
    runs = plan(tmp_path)
    tools = FakeTools()
    run_sweep(runs, execute=tools, log=lambda message: None)
    assert train_dirs(tools) == ['baseline_seed0', 'kd_t1_seed0', 'kd_t4_seed0']
    for run in runs:
        assert osp.isfile(osp.join(run.work_dir, DONE_MARKER))

    messages = []
    again = FakeTools()
    commands = run_sweep(runs, execute=again, log=messages.append)
    assert commands == []
    assert again.commands == []
    assert (
        messages[0]
        == f'[1/3] baseline student, seed 0: finished before, skipped ({runs[0].work_dir})'
    )


def test_failed_run_resumes_from_last_checkpoint(tmp_path):
    runs = plan(tmp_path)
    tools = FakeTools(stop_after_epoch={'kd_t1_seed0': 7})
    with pytest.raises(RuntimeError, match='kd_t1_seed0: training failed with exit code 1'):
        run_sweep(runs, execute=tools, log=lambda message: None)
    # The failed run has checkpoints and logs but no marker; the run after it never started.
    assert train_dirs(tools) == ['baseline_seed0', 'kd_t1_seed0']
    assert osp.isfile(osp.join(runs[1].work_dir, 'epoch_6.pth'))
    assert not osp.isfile(osp.join(runs[1].work_dir, DONE_MARKER))
    assert not osp.isdir(runs[2].work_dir)

    tools = FakeTools()
    run_sweep(runs, execute=tools, log=lambda message: None)
    assert train_dirs(tools) == ['kd_t1_seed0', 'kd_t4_seed0']
    assert argument(tools.commands[0], '--resume') == osp.join(runs[1].work_dir, 'epoch_6.pth')
    assert '--resume' not in tools.commands[1]

    # The resumed run's rows combine both attempts: final of epoch 20, best of epoch 10.
    row = run_row(runs[1])
    assert row['final_epoch'] == FINAL_EPOCH
    assert row['final_mAP'] == pytest.approx(0.21, abs=1e-12)
    assert row['best_epoch'] == 10
    assert row['best_mAP'] == pytest.approx(0.21 - 0.010 + 0.05, abs=1e-12)


def test_interrupted_run_stays_unfinished(tmp_path):
    runs = plan(tmp_path, temperatures=(2.0,))
    tools = FakeTools(stop_after_epoch={'baseline_seed0': -3})
    with pytest.raises(KeyboardInterrupt):
        run_sweep(runs, execute=tools, log=lambda message: None)
    assert not osp.isfile(osp.join(runs[0].work_dir, DONE_MARKER))
    with open(osp.join(runs[0].work_dir, sweep.RUN_SETTINGS)) as f:
        assert json.load(f)['train_seconds'] >= 0.0
    assert collect_rows(runs) == ([], ['baseline_seed0', 'kd_t2_seed0'])

    tools = FakeTools()
    run_sweep(runs, execute=tools, log=lambda message: None)
    assert argument(tools.commands[0], '--resume') == osp.join(runs[0].work_dir, 'epoch_2.pth')


def test_final_checkpoint_without_marker_resumes(tmp_path):
    # A complete-looking run (final checkpoint, validation of every epoch) whose marker is
    # missing, as after a kill between the end of tools/train.py and the marker write.
    runs = plan(tmp_path, temperatures=(2.0,))
    FakeTools()(train_command(runs[0]), '')
    assert latest_checkpoint(runs[0].work_dir).endswith('epoch_20.pth')
    tools = FakeTools()
    run_sweep(runs, execute=tools, log=lambda message: None)
    assert train_dirs(tools) == ['baseline_seed0', 'kd_t2_seed0']
    assert argument(tools.commands[0], '--resume').endswith('epoch_20.pth')


def test_dangling_last_checkpoint_restarts(tmp_path):
    runs = plan(tmp_path, temperatures=(2.0,))
    os.makedirs(runs[0].work_dir)
    with open(osp.join(runs[0].work_dir, 'last_checkpoint'), 'w') as f:
        f.write(osp.join(runs[0].work_dir, 'epoch_4.pth'))  # deleted or never completed
    assert latest_checkpoint(runs[0].work_dir) is None
    tools = FakeTools()
    run_sweep(runs, execute=tools, log=lambda message: None)
    assert '--resume' not in tools.commands[0]


def test_missing_final_validation_is_evaluated(tmp_path):
    runs = plan(tmp_path, temperatures=(2.0,))
    tools = FakeTools(skip_final_validation={'kd_t2_seed0'})
    run_sweep(runs, execute=tools, log=lambda message: None)

    # After the kd run's training: tools/test.py on its final checkpoint, same overrides.
    evaluate = tools.commands[-1]
    checkpoint = osp.join(runs[1].work_dir, 'epoch_20.pth')
    assert osp.basename(evaluate[1]) == 'test.py'
    assert evaluate[2:4] == [KD_CONFIG, checkpoint]
    assert evaluate[-2:] == ['model.temperature=2', 'randomness.seed=0']
    with open(osp.join(runs[1].work_dir, DONE_MARKER)) as f:
        assert json.load(f)['final_eval'] == dict(
            checkpoint=checkpoint, epoch=FINAL_EPOCH, metrics_file=sweep.FINAL_EVAL_METRICS
        )
    row = run_row(runs[1])
    assert row['final_mAP'] == 0.5
    assert row['final_epoch'] == FINAL_EPOCH
    assert row['best_mAP'] == 0.5  # above epoch 10's 0.2 - 0.01 + 0.05
    assert run_row(runs[0])['final_mAP'] == pytest.approx(0.2, abs=1e-12)


def test_changed_overrides_rejected(tmp_path):
    run_sweep(plan(tmp_path, temperatures=(2.0,)), execute=FakeTools(), log=lambda message: None)
    changed = plan(tmp_path, temperatures=(2.0,), extra_options=['train_cfg.max_epochs=10'])
    with pytest.raises(ValueError, match='was started with'):
        run_sweep(changed, execute=FakeTools(), log=lambda message: None)


def test_dry_run_writes_nothing(tmp_path):
    runs = plan(tmp_path / 'sweep')
    tools = FakeTools()
    messages = []
    commands = run_sweep(runs, dry_run=True, execute=tools, log=messages.append)
    assert commands == [train_command(run) for run in runs]
    assert tools.commands == []
    assert not osp.exists(tmp_path / 'sweep')
    assert messages[1].startswith('[2/3] distilled, T=1, seed 0, would start:\n  ')


def test_multi_gpu_needs_dist_train(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep, 'TOOLS_DIR', str(tmp_path))
    with pytest.raises(FileNotFoundError, match='dist_train.sh not found'):
        run_sweep(plan(tmp_path), gpus=2, execute=FakeTools(), log=lambda message: None)


def test_teacher_evaluated_once_per_checkpoint(tmp_path):
    checkpoint = tmp_path / 'teacher.pth'
    checkpoint.write_text('weights')
    teacher = TeacherEval(BASELINE_CONFIG, str(checkpoint), str(tmp_path / 'sweep' / 'teacher'))
    runs = plan(tmp_path / 'sweep', temperatures=(2.0,))
    tools = FakeTools()
    run_sweep(runs, teacher=teacher, execute=tools, log=lambda message: None)
    assert tools.commands[0][2:] == [
        BASELINE_CONFIG,
        str(checkpoint),
        '--work-dir',
        teacher.work_dir,
        '--metrics-out',
        teacher.metrics_file,
    ]
    rows, missing = collect_rows(runs, teacher)
    assert missing == []
    assert [row['role'] for row in rows] == ['teacher', 'baseline', 'distilled']
    assert rows[0]['final_mAP'] == 0.5

    tools = FakeTools()
    run_sweep(runs, teacher=teacher, execute=tools, log=lambda message: None)
    assert tools.commands == []

    # A replaced checkpoint (other size) is evaluated again.
    checkpoint.write_text('new weights')
    run_sweep(runs, teacher=teacher, execute=tools, log=lambda message: None)
    assert len(tools.commands) == 1


def test_teacher_checkpoint_missing(tmp_path):
    teacher = TeacherEval(BASELINE_CONFIG, str(tmp_path / 'missing.pth'), str(tmp_path / 't'))
    with pytest.raises(FileNotFoundError, match='teacher checkpoint not found'):
        run_sweep([], teacher=teacher, execute=FakeTools(), log=lambda message: None)


def test_estimate_seconds_left():
    baseline = SweepRun('b', 'baseline', BASELINE_CONFIG, 0, None, '/w/b')
    distilled = SweepRun('d', 'distilled', KD_CONFIG, 0, 2.0, '/w/d')
    # 60 for the baseline, (100 + 140) / 2 = 120 for each distilled run: 60 + 2 * 120 = 300.
    durations = {'baseline': [60.0], 'distilled': [100.0, 140.0]}
    assert estimate_seconds_left([baseline, distilled, distilled], durations) == 300.0
    # No distilled run finished yet: the mean of all finished runs, 60.
    assert estimate_seconds_left([distilled], {'baseline': [60.0]}) == 60.0
    assert estimate_seconds_left([distilled], {}) is None


def test_baseline_config_known_for_bccd():
    assert resolve_baseline_config(KD_CONFIG, None) == BASELINE_CONFIG
    assert resolve_baseline_config(KD_CONFIG, '/other.py') == '/other.py'
    with pytest.raises(ValueError, match='pass --baseline-config'):
        resolve_baseline_config('configs/kd_other.py', None)


def test_teacher_defaults_from_kd_config(tmp_path):
    args = sweep_args(tmp_path)
    teacher = resolve_teacher(args)
    assert teacher.config == osp.join(BCCD_CONFIG_DIR, 'yolov5_s_320_30e_bccd.py')
    assert teacher.checkpoint == 'checkpoints/bccd/yolov5_s_320_30e_bccd.pth'
    assert teacher.work_dir == str(tmp_path / 'teacher')


def test_teacher_on_other_images_rejected(tmp_path):
    args = sweep_args(tmp_path, ['val_dataloader.dataset.ann_file=annotations/test.json'])
    with pytest.raises(ValueError, match='other images than the students'):
        resolve_teacher(args)


def test_cli_dry_run_returns_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep, 'run_logged', FakeTools())
    work_dir = tmp_path / 'sweep'
    assert sweep_main([KD_CONFIG, '--work-dir', str(work_dir), '--dry-run']) == {}
    assert not osp.exists(work_dir)


def sweep_args(tmp_path, cfg_options=()):
    from kd_plugin.analysis.cli import parse_sweep_args

    argv = [KD_CONFIG, '--work-dir', str(tmp_path), '--eval-teacher']
    if cfg_options:
        argv += ['--cfg-options', *cfg_options]
    return parse_sweep_args(argv)
