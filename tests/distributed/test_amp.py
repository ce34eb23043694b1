"""Mixed precision on the CPU: the distiller under bfloat16 autocast, CPUAmpOptimWrapper, --amp."""

import copy
import os.path as osp

import pytest
import torch
import torch.nn as nn
from mmengine.optim import build_optim_wrapper
from mmengine.registry import MODELS
from mmengine.runner.amp import autocast

from kd_plugin.apis.train import load_config, parse_args
from kd_plugin.dist import CPUAmpOptimWrapper
from tests.conftest import BCCD_CONFIG_DIR, random_batch

KD_CONFIG = osp.join(BCCD_CONFIG_DIR, 'kd_yolov5_s-to-n_320_20e_bccd.py')
KD_LOSSES = ('loss_kd_cls', 'loss_kd_obj', 'loss_kd_bbox')
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason='checks the CPU-only code path')


def record_loss_input_dtypes(model) -> dict:
    """Record the dtype of the first student and teacher map each distillation loss receives."""
    dtypes = {}
    for name, loss in model.distill_losses.items():

        def record(module, args, kwargs, name=name):
            student_outputs, teacher_outputs = args[0], args[1]
            dtypes[name] = (student_outputs[0][0].dtype, teacher_outputs[0][0].dtype)

        loss.register_forward_pre_hook(record, with_kwargs=True)
    return dtypes


def test_distiller_losses_float32_under_bfloat16_autocast(distiller_cfg):
    torch.manual_seed(0)
    model = MODELS.build(copy.deepcopy(distiller_cfg)).train()
    batch = random_batch()
    with torch.no_grad():
        float32_losses = model(**batch, mode='loss')
    dtypes = record_loss_input_dtypes(model)

    with autocast(device_type='cpu', dtype=torch.bfloat16):
        losses = model(**batch, mode='loss')
    sum(value for name, value in losses.items() if name.startswith('loss_kd_')).backward()

    for name in KD_LOSSES:
        # Both heads ran under autocast, so the loss receives bfloat16 maps from both models.
        assert dtypes[name] == (torch.bfloat16, torch.bfloat16), name
        assert losses[name].dtype == torch.float32, name
        assert torch.isfinite(losses[name]), name
        assert losses[name].item() > 0, name
        # bfloat16 keeps 8 significant bits. With these tiny models the distillation losses
        # differed from float32 by at most 3 % over seeds 0-2, so 10 % leaves a margin.
        assert losses[name].item() == pytest.approx(float32_losses[name].item(), rel=0.1), name
    student_grads = [p.grad for p in model.student.parameters() if p.grad is not None]
    assert student_grads
    assert all(grad.dtype == torch.float32 for grad in student_grads)
    assert all(p.grad is None for p in model.teacher.parameters())


def sgd_linear(seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return model, optimizer


def train_step(model: nn.Module, optim_wrapper: CPUAmpOptimWrapper, scale: float = 1.0) -> None:
    inputs = torch.ones(3, 4)
    with optim_wrapper.optim_context(model):
        loss = model(inputs).float().sum() * scale
    optim_wrapper.update_params(loss)


@no_cuda
def test_amp_wrapper_autocasts_bfloat16_on_cpu():
    model, optimizer = sgd_linear()
    optim_wrapper = CPUAmpOptimWrapper(optimizer=optimizer)
    with optim_wrapper.optim_context(model):
        assert torch.is_autocast_enabled('cpu')
        assert torch.get_autocast_dtype('cpu') == torch.bfloat16
        assert model(torch.ones(1, 4)).dtype == torch.bfloat16


@no_cuda
def test_amp_wrapper_skips_overflowing_step():
    model, optimizer = sgd_linear()
    optim_wrapper = CPUAmpOptimWrapper(optimizer=optimizer)
    train_step(model, optim_wrapper)
    params = [p.detach().clone() for p in model.parameters()]
    momentum = [optimizer.state[p]['momentum_buffer'].clone() for p in model.parameters()]
    scale = optim_wrapper.loss_scaler.get_scale()

    # An infinite loss gives infinite gradients: the step is skipped and the scale halves.
    train_step(model, optim_wrapper, scale=float('inf'))
    for before, param in zip(params, model.parameters()):
        assert torch.equal(before, param)
    for before, param in zip(momentum, model.parameters()):
        assert torch.equal(before, optimizer.state[param]['momentum_buffer'])
    assert optim_wrapper.loss_scaler.get_scale() == scale / 2

    # The next finite step updates the parameters again.
    train_step(model, optim_wrapper)
    assert not torch.equal(params[0], model.weight)
    assert all(torch.isfinite(param).all() for param in model.parameters())


@no_cuda
def test_amp_wrapper_state_dict_restores_scale():
    model, optimizer = sgd_linear()
    optim_wrapper = CPUAmpOptimWrapper(optimizer=optimizer, loss_scale=dict(init_scale=1024.0))
    train_step(model, optim_wrapper, scale=float('inf'))
    state = optim_wrapper.state_dict()
    assert state['loss_scaler']['scale'] == 512.0

    model, optimizer = sgd_linear()
    restored = CPUAmpOptimWrapper(optimizer=optimizer)
    restored.load_state_dict(state)
    assert restored.loss_scaler.get_scale() == 512.0


@no_cuda
@pytest.mark.parametrize(
    'kwargs, error',
    [
        (dict(dtype='float16'), ValueError),
        (dict(dtype=torch.float16), ValueError),
        (dict(loss_scale='static'), TypeError),
    ],
)
def test_amp_wrapper_rejects_invalid_arguments(kwargs, error):
    _, optimizer = sgd_linear()
    with pytest.raises(error):
        CPUAmpOptimWrapper(optimizer=optimizer, **kwargs)


@no_cuda
def test_amp_flag_selects_cpu_wrapper(distiller_cfg):
    cfg = load_config(parse_args([KD_CONFIG, '--amp']))
    assert cfg.optim_wrapper.type == 'kd_plugin.CPUAmpOptimWrapper'
    assert cfg.optim_wrapper.dtype == 'bfloat16'

    # The distillation optimizer constructor of the config builds the CPU wrapper.
    model = MODELS.build(copy.deepcopy(distiller_cfg))
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    assert isinstance(optim_wrapper, CPUAmpOptimWrapper)


@no_cuda
def test_gpu_amp_wrapper_rejected_without_cuda():
    args = parse_args([KD_CONFIG, '--cfg-options', 'optim_wrapper.type=AmpOptimWrapper'])
    with pytest.raises(ValueError, match='kd_plugin.CPUAmpOptimWrapper'):
        load_config(args)
