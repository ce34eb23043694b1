"""DetectionDistiller with tiny real MMYOLO YOLOv5 detectors on random images."""

import copy

import pytest
import torch
from mmengine.model import ExponentialMovingAverage
from mmengine.optim import build_optim_wrapper
from mmengine.registry import MODELS

from kd_plugin.losses import YOLOv5ClsDistillLoss
from kd_plugin.registry import MODELS as KD_MODELS
from tests.conftest import TINY_TEACHER_WIDEN, random_batch, save_checkpoint, yolov5_model_cfg


def build(cfg: dict):
    return MODELS.build(copy.deepcopy(cfg))


def test_loss_returns_task_and_distillation_keys(distiller_cfg):
    model = build(distiller_cfg)
    losses = model(**random_batch(), mode='loss')
    assert {'loss_cls', 'loss_obj', 'loss_bbox'} <= set(losses)
    for name in ('loss_kd_cls', 'loss_kd_obj', 'loss_kd_bbox'):
        assert torch.isfinite(losses[name])
        assert losses[name].item() > 0


def test_no_gradient_reaches_teacher(distiller_cfg):
    model = build(distiller_cfg)
    losses = model(**random_batch(), mode='loss')
    sum(value for name, value in losses.items() if name.startswith('loss_kd_')).backward()
    assert all(p.grad is None for p in model.teacher.parameters())
    assert all(not p.requires_grad for p in model.teacher.parameters())
    student_grads = [p.grad for p in model.student.parameters() if p.grad is not None]
    assert student_grads
    assert any(g.abs().sum() > 0 for g in student_grads)


def test_teacher_stays_in_eval_mode_after_train(distiller_cfg):
    model = build(distiller_cfg)
    model.train()
    assert model.student.training
    assert not model.teacher.training
    batch_norms = [m for m in model.teacher.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert batch_norms
    assert all(not m.training for m in batch_norms)


def test_teacher_batchnorm_statistics_do_not_change(distiller_cfg):
    model = build(distiller_cfg).train()
    before = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    model(**random_batch(), mode='loss')
    after = model.teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_teacher_is_outside_parameters_state_dict_and_optimizer(distiller_cfg):
    model = build(distiller_cfg)
    teacher_ids = {id(p) for p in model.teacher.parameters()}
    assert not teacher_ids & {id(p) for p in model.parameters()}
    assert all(key.startswith(('student.', 'data_preprocessor.')) for key in model.state_dict())

    optim_wrapper = build_optim_wrapper(
        model,
        dict(
            type='OptimWrapper',
            optimizer=dict(type='SGD', lr=0.01, momentum=0.9, batch_size_per_gpu=2),
            constructor='YOLOv5OptimizerConstructor',
        ),
    )
    optimized = {id(p) for group in optim_wrapper.optimizer.param_groups for p in group['params']}
    assert not teacher_ids & optimized
    assert optimized == {id(p) for p in model.student.parameters()}


def test_ema_copy_shares_teacher_and_averages_student_only(distiller_cfg):
    model = build(distiller_cfg)
    ema = ExponentialMovingAverage(model)
    assert ema.module.teacher is model.teacher
    averaged = {id(p) for p in ema.module.parameters()}
    assert not averaged & {id(p) for p in model.teacher.parameters()}


def test_predict_uses_student(distiller_cfg):
    model = build(distiller_cfg).eval()
    batch = random_batch()
    with torch.no_grad():
        distiller_out = model(batch['inputs'], mode='tensor')
        student_out = model.student(batch['inputs'], mode='tensor')
    for distiller_maps, student_maps in zip(distiller_out, student_out):
        for distiller_map, student_map in zip(distiller_maps, student_maps):
            assert torch.equal(distiller_map, student_map)


def test_disabled_distillation_skips_teacher(distiller_cfg):
    model = build(distiller_cfg)
    model.distill_enabled = False
    calls = []
    model.teacher.register_forward_hook(lambda *args: calls.append(1))
    losses = model(**random_batch(), mode='loss')
    assert not any(name.startswith('loss_kd_') for name in losses)
    assert not calls


def test_weight_factor_scales_distillation_losses(distiller_cfg):
    model = build(distiller_cfg)
    batch = random_batch()
    full = model(**batch, mode='loss')['loss_kd_obj']
    model.distill_weight_factor = 0.25
    quarter = model(**batch, mode='loss')['loss_kd_obj']
    torch.testing.assert_close(quarter, 0.25 * full)


def test_temperature_fills_losses_without_their_own(distiller_cfg):
    distiller_cfg['temperature'] = 8.0
    distiller_cfg['distill_losses']['loss_kd_bbox']['temperature'] = 1.0
    model = build(distiller_cfg)
    assert model.distill_losses['loss_kd_cls'].temperature == 8.0
    assert model.distill_losses['loss_kd_obj'].temperature == 8.0
    assert model.distill_losses['loss_kd_bbox'].temperature == 1.0


@pytest.mark.parametrize('temperature', [0.0, -2.0])
def test_non_positive_temperature_is_rejected(distiller_cfg, temperature):
    distiller_cfg['temperature'] = temperature
    with pytest.raises(
        ValueError, match=f'temperature must be a finite number > 0, got {temperature}'
    ):
        build(distiller_cfg)


def test_teacher_with_other_classes_is_rejected(distiller_cfg, tmp_path):
    teacher_cfg = yolov5_model_cfg(TINY_TEACHER_WIDEN, num_classes=80)
    distiller_cfg['teacher'] = dict(
        config=teacher_cfg,
        checkpoint=save_checkpoint(build(teacher_cfg), str(tmp_path / 'coco_teacher.pth')),
    )
    with pytest.raises(ValueError, match='differ in num_classes: teacher 80, student 3'):
        build(distiller_cfg)


def test_teacher_with_other_strides_is_rejected(distiller_cfg, tmp_path):
    teacher_cfg = yolov5_model_cfg(TINY_TEACHER_WIDEN)
    teacher_cfg['bbox_head']['head_module']['featmap_strides'] = [8, 16, 64]
    teacher_cfg['bbox_head']['prior_generator']['strides'] = [8, 16, 64]
    distiller_cfg['teacher'] = dict(
        config=teacher_cfg,
        checkpoint=save_checkpoint(build(teacher_cfg), str(tmp_path / 'teacher.pth')),
    )
    with pytest.raises(ValueError, match=r'differ in featmap_strides: teacher \[8, 16, 64\]'):
        build(distiller_cfg)


def test_missing_teacher_checkpoint_is_reported(distiller_cfg, tmp_path):
    missing = str(tmp_path / 'no_such_teacher.pth')
    distiller_cfg['teacher']['checkpoint'] = missing
    with pytest.raises(FileNotFoundError, match='no_such_teacher.pth'):
        build(distiller_cfg)


def test_teacher_checkpoint_that_does_not_fit_is_refused(distiller_cfg, tmp_path):
    # A checkpoint of a wider model: every key is present but the shapes differ.
    wider = build(yolov5_model_cfg(0.5))
    distiller_cfg['teacher']['checkpoint'] = save_checkpoint(wider, str(tmp_path / 'wide.pth'))
    with pytest.raises(ValueError, match='shape mismatches.*teacher.strict=False'):
        build(distiller_cfg)

    # strict=False loads the keys whose shapes match and leaves the others as built.
    distiller_cfg['teacher']['strict'] = False
    model = build(distiller_cfg)
    assert model.teacher is not None


def test_teacher_checkpoint_with_extra_keys_lists_them(distiller_cfg, tmp_path):
    teacher = build(yolov5_model_cfg(TINY_TEACHER_WIDEN))
    state_dict = teacher.state_dict()
    state_dict['connector.weight'] = torch.zeros(1)
    path = str(tmp_path / 'extra.pth')
    torch.save({'state_dict': state_dict}, path)
    distiller_cfg['teacher']['checkpoint'] = path
    with pytest.raises(ValueError, match=r'1 unexpected keys \[connector.weight\]'):
        build(distiller_cfg)

    distiller_cfg['teacher']['strict'] = False
    model = build(distiller_cfg)
    torch.testing.assert_close(model.teacher.state_dict(), teacher.state_dict())


def test_teacher_without_checkpoint_is_rejected(distiller_cfg):
    distiller_cfg['teacher']['checkpoint'] = None
    with pytest.raises(ValueError, match='the teacher needs a checkpoint'):
        build(distiller_cfg)


def test_loss_name_without_prefix_is_rejected(distiller_cfg):
    distiller_cfg['distill_losses'] = dict(kd_cls=dict(type='YOLOv5ClsDistillLoss'))
    with pytest.raises(ValueError, match='must start with "loss_kd_"'):
        build(distiller_cfg)


def test_unknown_teacher_key_is_rejected(distiller_cfg):
    distiller_cfg['teacher']['ckpt'] = 'x.pth'
    with pytest.raises(ValueError, match=r"unknown teacher keys \['ckpt'\]"):
        build(distiller_cfg)


def test_missing_submodule_lists_available_ones(distiller_cfg):
    distiller_cfg['distill_losses']['loss_kd_cls']['student_module'] = 'roi_head'
    with pytest.raises(ValueError, match="no submodule 'roi_head'.*'bbox_head'"):
        build(distiller_cfg)


def test_ema_copy_runs_its_own_student_weights(distiller_cfg):
    # The distiller wraps the student head's forward to record outputs; a deep copy must call
    # the copy's weights, not the original's.
    model = build(distiller_cfg).eval()
    ema = ExponentialMovingAverage(model)
    for parameter in ema.module.student.bbox_head.parameters():
        parameter.data.zero_()
    inputs = random_batch()['inputs']
    with torch.no_grad():
        original_cls = model(inputs, mode='tensor')[0][0]
        copy_cls = ema.module(inputs, mode='tensor')[0][0]
    assert torch.count_nonzero(copy_cls) == 0
    assert torch.count_nonzero(original_cls) > 0


def test_student_starts_like_baseline_with_same_seed(distiller_cfg):
    # Same seed, same student weights after init_weights, with or without a teacher beside it.
    torch.manual_seed(3)
    baseline = MODELS.build(copy.deepcopy(distiller_cfg['student']))
    baseline.init_weights()
    torch.manual_seed(3)
    model = build(distiller_cfg)
    model.init_weights()
    baseline_state = baseline.state_dict()
    student_state = model.student.state_dict()
    assert baseline_state.keys() == student_state.keys()
    for key, value in baseline_state.items():
        assert torch.equal(value, student_state[key]), key


@KD_MODELS.register_module()
class ThreeArgumentClsDistillLoss(YOLOv5ClsDistillLoss):
    """A loss written for the forward signature without ``context``."""

    def forward(self, student_outputs, teacher_outputs, temperature=None):
        return super().forward(student_outputs, teacher_outputs, temperature)


def test_loss_without_context_argument_trains(distiller_cfg):
    cfg = copy.deepcopy(distiller_cfg)
    cfg['distill_losses'] = dict(loss_kd_cls=dict(type='ThreeArgumentClsDistillLoss'))
    losses = build(cfg)(**random_batch(), mode='loss')
    assert torch.isfinite(losses['loss_kd_cls'])
    assert losses['loss_kd_cls'].item() > 0
