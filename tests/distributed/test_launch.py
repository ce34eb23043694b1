"""Launcher set-up, DDP and SyncBN handling, and the launcher scripts, in a single process.

The scripts run with stand-ins for the interpreter and for srun that print their arguments, so
no process group or Slurm cluster is involved.
"""

import copy
import os
import stat
import subprocess

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.model import convert_sync_batchnorm
from mmengine.registry import MODELS

from kd_plugin.dist import (
    CPUDistributedDataParallel,
    count_sync_batchnorms,
    cpu_model_wrapper_cfg,
    read_launcher_env,
    setup_distributed,
)
from tests.conftest import REPO_ROOT, random_batch
from tests.distributed import probe  # noqa: F401  (registers ProbeScaledClsDistillLoss)

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason='checks the CPU-only code path')


@pytest.mark.parametrize(
    'launcher, environ, expected',
    [
        (
            'pytorch',
            dict(RANK='3', WORLD_SIZE='4', LOCAL_RANK='1', MASTER_ADDR='node0', MASTER_PORT='1234'),
            dict(RANK='3', WORLD_SIZE='4', LOCAL_RANK='1', MASTER_ADDR='node0', MASTER_PORT='1234'),
        ),
        (
            'slurm',
            dict(SLURM_PROCID='5', SLURM_NTASKS='8', SLURM_LOCALID='1', MASTER_ADDR='node0'),
            dict(
                RANK='5', WORLD_SIZE='8', LOCAL_RANK='1', MASTER_ADDR='node0', MASTER_PORT='29500'
            ),
        ),
        (
            'mpi',
            dict(
                OMPI_COMM_WORLD_RANK='2',
                OMPI_COMM_WORLD_SIZE='4',
                OMPI_COMM_WORLD_LOCAL_RANK='0',
                MASTER_ADDR='node0',
                MASTER_PORT='4321',
            ),
            dict(RANK='2', WORLD_SIZE='4', LOCAL_RANK='0', MASTER_ADDR='node0', MASTER_PORT='4321'),
        ),
    ],
)
def test_launcher_env_maps_to_torch_variables(launcher, environ, expected):
    assert read_launcher_env(launcher, environ) == expected


@pytest.mark.parametrize(
    'launcher, environ, message',
    [
        ('pytorch', dict(RANK='0', WORLD_SIZE='2', LOCAL_RANK='0', MASTER_ADDR='a'), 'MASTER_PORT'),
        ('mpi', dict(OMPI_COMM_WORLD_RANK='0', OMPI_COMM_WORLD_SIZE='2'), 'OMPI_COMM_WORLD_LOCAL'),
        (
            'pytorch',
            dict(RANK='2', WORLD_SIZE='2', LOCAL_RANK='0', MASTER_ADDR='a', MASTER_PORT='1'),
            'not below',
        ),
        ('pytorch', dict(RANK='x', WORLD_SIZE='2', LOCAL_RANK='0'), 'non-negative integer'),
        ('horovod', dict(), 'launcher must be one of'),
    ],
)
def test_launcher_env_rejects_invalid(launcher, environ, message):
    with pytest.raises(ValueError, match=message):
        read_launcher_env(launcher, environ)


def test_slurm_env_without_scontrol_asks_for_master_addr(tmp_path, monkeypatch):
    monkeypatch.setenv('PATH', str(tmp_path))  # no scontrol on PATH
    environ = dict(SLURM_PROCID='0', SLURM_NTASKS='2', SLURM_LOCALID='0', SLURM_NODELIST='n[1-2]')
    with pytest.raises(ValueError, match='set MASTER_ADDR'):
        read_launcher_env('slurm', environ)


def test_model_wrapper_cfg_defaults_to_cpu_ddp():
    cfg = Config(dict(find_unused_parameters=True))
    assert cpu_model_wrapper_cfg(cfg) == dict(
        type='kd_plugin.CPUDistributedDataParallel',
        device_ids=None,
        broadcast_buffers=False,
        find_unused_parameters=True,
    )


def test_model_wrapper_cfg_keeps_user_options():
    cfg = Config(dict(model_wrapper_cfg=dict(type='MMDistributedDataParallel', static_graph=True)))
    assert cpu_model_wrapper_cfg(cfg) == dict(
        type='kd_plugin.CPUDistributedDataParallel', static_graph=True, device_ids=None
    )


def test_model_wrapper_cfg_leaves_non_ddp_wrapper():
    cfg = Config(dict(model_wrapper_cfg=dict(type='MMFullyShardedDataParallel')))
    assert cpu_model_wrapper_cfg(cfg) == dict(type='MMFullyShardedDataParallel')


def test_setup_without_launcher_changes_nothing():
    cfg = Config(dict(launcher='none'))
    setup_distributed(cfg)
    assert 'model_wrapper_cfg' not in cfg


@no_cuda
def test_setup_rejects_sync_bn_without_cuda():
    with pytest.raises(ValueError, match='sync_bn'):
        setup_distributed(Config(dict(launcher='pytorch', sync_bn='torch')))


def test_setup_rejects_unknown_launcher():
    with pytest.raises(ValueError, match='launcher must be one of'):
        setup_distributed(Config(dict(launcher='horovod')))


def test_cpu_ddp_rejects_device_ids():
    with pytest.raises(ValueError, match='device_ids=None'):
        CPUDistributedDataParallel(nn.Linear(2, 2), device_ids=[0])


def test_sync_bn_option_converts_student_only(distiller_cfg):
    # What Runner.wrap_model does with cfg.sync_bn='torch' before wrapping the model in DDP.
    model = convert_sync_batchnorm(MODELS.build(copy.deepcopy(distiller_cfg)), 'torch')
    assert count_sync_batchnorms(model.student) > 0
    assert count_sync_batchnorms(model.teacher) == 0
    assert any(isinstance(layer, nn.BatchNorm2d) for layer in model.teacher.modules())


def test_teacher_built_with_sync_bn_gets_plain_bn(distiller_cfg, monkeypatch):
    # YOLODetector converts itself to SyncBatchNorm when the world size is above 1.
    monkeypatch.setattr('mmyolo.models.detectors.yolo_detector.get_world_size', lambda: 2)
    model = MODELS.build(copy.deepcopy(distiller_cfg))
    assert count_sync_batchnorms(model.student) > 0
    assert count_sync_batchnorms(model.teacher) == 0
    assert not any(param.requires_grad for param in model.teacher.parameters())
    assert not model.teacher.training


def test_idle_distill_parameters_get_zero_gradient(distiller_cfg):
    cfg = copy.deepcopy(distiller_cfg)
    cfg['distill_losses']['loss_kd_probe'] = dict(type='ProbeScaledClsDistillLoss')
    model = MODELS.build(cfg).train()
    model.distill_enabled = False
    losses = model(**random_batch(), mode='loss')
    # A new batch: YOLOv5Head.loss normalises the boxes of its data samples in place.
    batch = random_batch()
    student_losses = model.student.loss(batch['inputs'], batch['data_samples'])
    assert set(losses) == set(student_losses)
    for name, value in student_losses.items():
        assert torch.equal(losses[name], value), name
    sum(losses.values()).backward()
    scale_grad = model.distill_losses['loss_kd_probe'].logit_scale.grad
    assert scale_grad is not None
    assert scale_grad.item() == 0.0


def write_stub(path, name: str) -> str:
    """Write an executable that prints its arguments, one a line, and MASTER_PORT."""
    stub = path / name
    stub.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@"\necho "MASTER_PORT=$MASTER_PORT"\n')
    stub.chmod(stub.stat().st_mode | stat.S_IEXEC)
    return str(stub)


def run_script(args, env_updates: dict) -> subprocess.CompletedProcess:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ('NNODES', 'NODE_RANK', 'MASTER_ADDR', 'MASTER_PORT', 'PORT')
    }
    env.update(env_updates)
    return subprocess.run(
        ['bash', *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def test_dist_train_passes_node_settings_to_torchrun(tmp_path):
    python = write_stub(tmp_path, 'python')
    env = dict(PYTHON=python, NNODES='2', NODE_RANK='1', MASTER_ADDR='10.1.1.1', PORT='29600')
    completed = run_script(['tools/dist_train.sh', 'cfg.py', '8', '--amp'], env)
    assert completed.returncode == 0, completed.stderr
    args = completed.stdout.splitlines()
    assert args[:7] == [
        '-m',
        'torch.distributed.run',
        '--nnodes=2',
        '--node-rank=1',
        '--nproc-per-node=8',
        '--master-addr=10.1.1.1',
        '--master-port=29600',
    ]
    assert args[7].endswith('tools/train.py')
    assert args[8:12] == ['cfg.py', '--launcher', 'pytorch', '--amp']


def test_dist_test_options_override_env(tmp_path):
    python = write_stub(tmp_path, 'python')
    env = dict(PYTHON=python, NNODES='2', MASTER_ADDR='10.1.1.1')
    completed = run_script(
        ['tools/dist_test.sh', 'cfg.py', 'ckpt.pth', '4', '--node-rank', '1', '--master-port', '7'],
        env,
    )
    assert completed.returncode == 0, completed.stderr
    args = completed.stdout.splitlines()
    assert '--node-rank=1' in args
    assert '--master-port=7' in args
    assert args[-5:-1] == ['cfg.py', 'ckpt.pth', '--launcher', 'pytorch']


@pytest.mark.parametrize(
    'args, env, message',
    [
        (['cfg.py', '2'], dict(NNODES='2'), 'MASTER_ADDR'),
        (['cfg.py', '0'], dict(), 'NUM_PROCS >= 1'),
        (['cfg.py', '2', '--node-rank', '1'], dict(), 'NODE_RANK < NNODES'),
        (['cfg.py', '2', '--nnodes'], dict(), '--nnodes needs a value'),
    ],
)
def test_dist_train_rejects_invalid_settings(tmp_path, args, env, message):
    env['PYTHON'] = write_stub(tmp_path, 'python')
    completed = run_script(['tools/dist_train.sh', *args], env)
    assert completed.returncode == 2
    assert message in completed.stderr


def test_slurm_train_builds_srun_command(tmp_path):
    write_stub(tmp_path, 'srun')
    env = dict(
        PATH=f'{tmp_path}:{os.environ["PATH"]}',
        GPUS='16',
        PORT='29700',
        SRUN_ARGS='--time=1:00:00 --exclusive',
        PYTHON='python3',
    )
    completed = run_script(
        ['tools/slurm_train.sh', 'gpu', 'kd', 'cfg.py', 'work_dirs/kd', '--amp'], env
    )
    assert completed.returncode == 0, completed.stderr
    args = completed.stdout.splitlines()
    assert args[:9] == [
        '--partition=gpu',
        '--job-name=kd',
        '--ntasks=16',
        '--ntasks-per-node=8',
        '--cpus-per-task=5',
        '--kill-on-bad-exit=1',
        '--gres=gpu:8',
        '--time=1:00:00',
        '--exclusive',
    ]
    assert args[9:11] == ['python3', '-u']
    assert args[11].endswith('tools/train.py')
    assert args[12:] == [
        'cfg.py',
        '--work-dir=work_dirs/kd',
        '--launcher',
        'slurm',
        '--amp',
        'MASTER_PORT=29700',
    ]


def test_slurm_train_without_gres_on_cpu_nodes(tmp_path):
    write_stub(tmp_path, 'srun')
    env = dict(PATH=f'{tmp_path}:{os.environ["PATH"]}', GPUS='2', GRES='')
    completed = run_script(['tools/slurm_train.sh', 'cpu', 'kd', 'cfg.py', 'work'], env)
    assert completed.returncode == 0, completed.stderr
    args = completed.stdout.splitlines()
    assert '--ntasks-per-node=2' in args
    assert not [arg for arg in args if arg.startswith('--gres')]
