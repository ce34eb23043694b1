"""Two-process distillation under ``--amp`` on this machine's CPU, through tools/dist_train.sh.

Without CUDA, ``--amp`` trains under bfloat16 autocast with kd_plugin.CPUAmpOptimWrapper. One
epoch of 2 iterations per rank runs, without validation.
"""

import os.path as osp

import pytest
import torch

from kd_plugin.utils import load_checkpoint_file
from tests.distributed.conftest import NUM_PROCS, dist_kd_config, load_probes, run_launcher

KD_LOSSES = ('loss_kd_cls', 'loss_kd_obj', 'loss_kd_bbox', 'loss_kd_probe')

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason='checks the CPU-only code path')


@pytest.fixture(scope='module')
def amp_run(bccd_subset, teacher_checkpoint, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp('dist_amp')
    work_dir = str(root / 'work')
    config_file = str(root / 'kd_config.py')
    cfg = dist_kd_config(bccd_subset, teacher_checkpoint, work_dir, max_epochs=1, validate=False)
    cfg.dump(config_file)
    result = run_launcher(
        ['tools/dist_train.sh', config_file, str(NUM_PROCS), '--amp'], str(root / 'amp.log')
    )
    assert result.returncode == 0, result.tail()
    return dict(work_dir=work_dir, result=result, probes=load_probes(work_dir))


def test_amp_ranks_use_cpu_amp_wrapper(amp_run):
    assert '--amp without CUDA: training under bfloat16 CPU autocast' in amp_run['result'].output
    for probe in amp_run['probes']:
        assert probe['optim_wrapper'] == 'CPUAmpOptimWrapper'
        assert probe['wrapper'] == 'CPUDistributedDataParallel'


def test_amp_distillation_losses_finite_and_nonzero(amp_run):
    for probe in amp_run['probes']:
        assert len(probe['iterations']) == 2
        for iteration in probe['iterations']:
            for name in KD_LOSSES:
                value = iteration['losses'][name]
                assert 0 < value < float('inf'), (probe['rank'], iteration['iter'], name)


def test_amp_student_parameters_equal_on_both_ranks(amp_run):
    rank0, rank1 = amp_run['probes']
    for name, value in rank0['student_params'].items():
        assert torch.equal(value, rank1['student_params'][name]), name


def test_amp_checkpoint_stores_loss_scaler(amp_run):
    checkpoint = load_checkpoint_file(osp.join(amp_run['work_dir'], 'epoch_1.pth'))
    loss_scaler = checkpoint['optimizer']['loss_scaler']
    # GradScaler's default initial scale, and its count of steps in a row without inf or NaN
    # gradients: neither of the 2 bfloat16 steps was skipped.
    assert loss_scaler['scale'] == 2.0**16
    assert loss_scaler['_growth_tracker'] == 2
