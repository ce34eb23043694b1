"""Two-process distillation on this machine's CPU through tools/dist_train.sh and dist_test.sh.

Three launches share one work dir, each torchrun with two gloo processes:

1. training epoch 1 (2 iterations per rank) with distillation, validation and a checkpoint;
2. ``--resume`` from that checkpoint for epoch 2, in which DistillScheduleHook has stopped
   distillation, so that ``loss_kd_probe``'s learnable scale gets no gradient from the losses
   while DDP runs with ``find_unused_parameters=False``;
3. tools/dist_test.sh on the epoch-2 checkpoint.

Every rank of a training run writes a probe record (see probe.py) that the tests compare.
"""

import json
import os
import os.path as osp

import pytest
import torch

from kd_plugin.utils import load_checkpoint_file
from tests.distributed.conftest import (
    NUM_PROCS,
    dist_kd_config,
    load_probes,
    run_launcher,
)

KD_LOSSES = ('loss_kd_cls', 'loss_kd_obj', 'loss_kd_bbox', 'loss_kd_probe')


@pytest.fixture(scope='module')
def runs(bccd_subset, teacher_checkpoint, tmp_path_factory) -> dict:
    """Run the three launches once; return their results, probes and paths."""
    root = tmp_path_factory.mktemp('dist_train')
    work_dir = str(root / 'work')
    config_file = str(root / 'kd_config.py')
    resume_config_file = str(root / 'kd_config_resume.py')
    dist_kd_config(bccd_subset, teacher_checkpoint, work_dir, max_epochs=1, stop_epoch=1).dump(
        config_file
    )
    dist_kd_config(bccd_subset, teacher_checkpoint, work_dir, max_epochs=2, stop_epoch=1).dump(
        resume_config_file
    )

    first = run_launcher(
        ['tools/dist_train.sh', config_file, str(NUM_PROCS)], str(root / 'first.log')
    )
    assert first.returncode == 0, first.tail()
    first_probes = load_probes(work_dir)
    top_level_files = sorted(os.listdir(work_dir))

    checkpoint = osp.join(work_dir, 'epoch_1.pth')
    resumed = run_launcher(
        ['tools/dist_train.sh', resume_config_file, str(NUM_PROCS), '--resume', checkpoint],
        str(root / 'resumed.log'),
    )
    assert resumed.returncode == 0, resumed.tail()
    resumed_probes = load_probes(work_dir)

    metrics_file = str(root / 'metrics.json')
    tested = run_launcher(
        [
            'tools/dist_test.sh',
            resume_config_file,
            osp.join(work_dir, 'epoch_2.pth'),
            str(NUM_PROCS),
            '--work-dir',
            str(root / 'test'),
            '--metrics-out',
            metrics_file,
        ],
        str(root / 'tested.log'),
    )
    return dict(
        work_dir=work_dir,
        first=first,
        first_probes=first_probes,
        top_level_files=top_level_files,
        resumed=resumed,
        resumed_probes=resumed_probes,
        tested=tested,
        metrics_file=metrics_file,
    )


def test_ranks_wrap_model_in_cpu_ddp(runs):
    for rank, probe in enumerate(runs['first_probes'] + runs['resumed_probes']):
        assert probe['rank'] == rank % NUM_PROCS
        assert probe['world_size'] == NUM_PROCS
        assert probe['wrapper'] == 'CPUDistributedDataParallel'
        assert probe['device_ids'] is None
        assert probe['find_unused_parameters'] is False
        assert probe['num_threads'] == 1
    assert 'started the gloo process group without CUDA: rank 0 of 2' in runs['first'].output


@pytest.mark.parametrize('run', ['first_probes', 'resumed_probes'])
def test_student_parameters_equal_on_both_ranks(runs, run):
    rank0, rank1 = runs[run]
    assert rank0['student_params'].keys() == rank1['student_params'].keys()
    for name, value in rank0['student_params'].items():
        assert torch.equal(value, rank1['student_params'][name]), name
    assert rank0['distill_params'].keys() == {'loss_kd_probe.logit_scale'}
    assert torch.equal(
        rank0['distill_params']['loss_kd_probe.logit_scale'],
        rank1['distill_params']['loss_kd_probe.logit_scale'],
    )


def test_teacher_unchanged_frozen_and_outside_ddp(runs, teacher_checkpoint):
    original = torch.load(teacher_checkpoint, map_location='cpu', weights_only=True)['state_dict']
    for probe in runs['first_probes'] + runs['resumed_probes']:
        assert probe['teacher_state'].keys() == original.keys()
        for name, value in original.items():
            assert torch.equal(probe['teacher_state'][name], value), name
        assert probe['teacher_params_wrapped'] == 0
        assert probe['teacher_training'] is False
        assert probe['teacher_requires_grad'] is False


def test_batchnorm_plain_in_both_models_on_cpu(runs):
    # YOLODetector (use_syncbn=True) converts both models to SyncBatchNorm in a 2-rank group;
    # the distiller reverts the teacher and CPUDistributedDataParallel reverts the student.
    assert 'Using SyncBatchNorm()' in runs['first'].output
    assert 'SyncBatchNorm layers back into BatchNorm' in runs['first'].output
    for probe in runs['first_probes']:
        assert 'SyncBatchNorm' not in probe['student_norm_types']
        assert 'SyncBatchNorm' not in probe['teacher_norm_types']
        assert probe['teacher_norm_types'] == ['_BatchNormXd']


def test_distillation_losses_nonzero_on_each_rank(runs):
    for probe in runs['first_probes']:
        iterations = probe['iterations']
        assert [iteration['iter'] for iteration in iterations] == [0, 1]
        for iteration in iterations:
            assert iteration['distill_enabled'] is True
            for name in KD_LOSSES:
                value = iteration['losses'][name]
                assert 0 < value < float('inf'), (probe['rank'], iteration['iter'], name)


def test_checkpoint_and_export_written_once_by_rank_zero(runs):
    rank0, rank1 = runs['first_probes']
    assert rank0['saved_epochs'] == [0]
    assert rank1['saved_epochs'] == []
    exported = osp.join(runs['work_dir'], 'epoch_1_student.pth')
    assert rank0['exported_paths'] == [exported]
    assert rank1['exported_paths'] == []

    pth_files = [name for name in runs['top_level_files'] if name.endswith('.pth')]
    assert pth_files == ['epoch_1.pth', 'epoch_1_student.pth']
    checkpoint = load_checkpoint_file(osp.join(runs['work_dir'], 'epoch_1.pth'))
    assert checkpoint['meta']['epoch'] == 1
    assert checkpoint['meta']['iter'] == 2
    assert all(
        key.startswith(('student.', 'distill_losses.', 'data_preprocessor.'))
        for key in checkpoint['state_dict']
    )
    student = torch.load(exported, map_location='cpu', weights_only=True)
    assert all(not key.startswith('student.') for key in student['state_dict'])


def test_resume_continues_without_distillation(runs):
    for probe in runs['resumed_probes']:
        assert probe['epoch'] == 2
        assert probe['iter'] == 4
        iterations = probe['iterations']
        assert [iteration['iter'] for iteration in iterations] == [2, 3]
        for iteration in iterations:
            assert iteration['distill_enabled'] is False
            assert not set(KD_LOSSES) & set(iteration['losses'])
            assert 0 < iteration['losses']['loss'] < float('inf')
    assert runs['resumed_probes'][0]['saved_epochs'] == [1]
    assert runs['resumed_probes'][1]['saved_epochs'] == []
    assert 'resumed epoch: 1, iter: 2' in runs['resumed'].output
    checkpoint = load_checkpoint_file(osp.join(runs['work_dir'], 'epoch_2.pth'))
    assert checkpoint['meta']['epoch'] == 2
    assert checkpoint['meta']['iter'] == 4


def test_dist_test_writes_metrics(runs):
    tested = runs['tested']
    assert tested.returncode == 0, tested.tail()
    with open(runs['metrics_file']) as f:
        metrics = json.load(f)
    assert 'coco/bbox_mAP' in metrics
    assert 'started the gloo process group without CUDA: rank 0 of 2' in tested.output
