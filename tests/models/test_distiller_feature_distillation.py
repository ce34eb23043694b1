"""DetectionDistiller with feature losses, connectors, regions and localization distillation.

Real tiny MMYOLO YOLOv5 and YOLOv8 detectors on random 64-pixel batches.
"""

import copy

import pytest
import torch
from mmengine.hub import get_config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import MODELS

import kd_plugin.losses.base as losses_base
from kd_plugin.models import ConvConnector, build_detector
from kd_plugin.utils.checkpoint import student_state_dict
from tests.conftest import TINY_STUDENT_WIDEN, random_batch, save_checkpoint, yolov5_model_cfg


def build(cfg: dict):
    return MODELS.build(copy.deepcopy(cfg))


@pytest.fixture
def feature_cfg(distiller_cfg) -> dict:
    """Tiny YOLOv5 student (1/8 width) and teacher (1/4 width) with a CWD loss on the necks."""
    distiller_cfg['distill_losses'] = dict(
        loss_kd_neck=dict(type='ChannelWiseDistillLoss', connector='auto', loss_weight=1.0)
    )
    return distiller_cfg


def connector_parameters(model) -> dict:
    return {name: param for name, param in model.named_parameters() if '.connectors.' in name}


def test_auto_connectors_map_each_neck_level(feature_cfg):
    model = build(feature_cfg)
    connectors = model.distill_losses['loss_kd_neck'].connectors
    assert list(connectors) == ['0', '1', '2']
    # YOLOv5 neck outputs 256/512/1024 channels times the widen factor.
    assert [c.conv.in_channels for c in connectors.values()] == [32, 64, 128]
    assert [c.conv.out_channels for c in connectors.values()] == [64, 128, 256]
    assert all(isinstance(c, ConvConnector) for c in connectors.values())
    assert all(
        name.startswith('distill_losses.loss_kd_neck.connectors.')
        for name in connector_parameters(model)
    )


def test_auto_builds_no_connector_for_equal_shapes(feature_cfg, tmp_path):
    same_width = yolov5_model_cfg(TINY_STUDENT_WIDEN)
    feature_cfg['teacher'] = dict(
        config=same_width,
        checkpoint=save_checkpoint(build_detector(same_width), str(tmp_path / 'teacher.pth')),
    )
    model = build(feature_cfg)
    assert len(model.distill_losses['loss_kd_neck'].connectors) == 0
    assert not connector_parameters(model)


def test_loss_trains_student_and_connectors_not_teacher(feature_cfg):
    model = build(feature_cfg)
    losses = model(**random_batch(), mode='loss')
    assert {'loss_cls', 'loss_kd_neck'} <= set(losses)
    assert losses['loss_kd_neck'].item() > 0
    losses['loss_kd_neck'].backward()
    assert all(param.grad is not None for param in connector_parameters(model).values())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.student.parameters())
    assert all(p.grad is None for p in model.teacher.parameters())


def test_probe_leaves_student_modes_and_batchnorm_statistics(feature_cfg):
    model = build(feature_cfg)
    assert all(module.training for module in model.student.modules())
    batch_norms = [m for m in model.student.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert batch_norms
    for batch_norm in batch_norms:
        assert batch_norm.num_batches_tracked.item() == 0
        assert torch.all(batch_norm.running_mean == 0)


def test_connectors_keep_student_initialisation(feature_cfg):
    torch.manual_seed(5)
    baseline = MODELS.build(copy.deepcopy(feature_cfg['student']))
    baseline.init_weights()
    torch.manual_seed(5)
    model = build(feature_cfg)
    model.init_weights()
    student_state = model.student.state_dict()
    for key, value in baseline.state_dict().items():
        assert torch.equal(value, student_state[key]), key


def test_connectors_are_in_distillation_group_and_out_of_export(feature_cfg):
    model = build(feature_cfg)
    optim_wrapper = build_optim_wrapper(
        model,
        dict(
            type='OptimWrapper',
            optimizer=dict(type='SGD', lr=0.01, momentum=0.9),
            constructor='kd_plugin.DistillOptimizerConstructor',
        ),
    )
    groups = optim_wrapper.optimizer.param_groups
    assert len(groups) == 4
    assert {id(p) for p in groups[3]['params']} == {
        id(p) for p in connector_parameters(model).values()
    }

    exported = student_state_dict(model.state_dict())
    assert not [key for key in exported if 'connectors' in key]
    assert exported.keys() == model.student.state_dict().keys()


def test_idle_connectors_get_zero_gradients(feature_cfg):
    model = build(feature_cfg)
    model.distill_enabled = False
    losses = model(**random_batch(), mode='loss')
    sum(value for name, value in losses.items() if 'loss' in name).backward()
    for name, param in connector_parameters(model).items():
        assert param.grad is not None, name
        assert torch.count_nonzero(param.grad) == 0, name


def test_context_is_built_only_when_a_loss_needs_it(distiller_cfg, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError('DistillContext built although no loss needs it')

    model = build(distiller_cfg)
    monkeypatch.setattr(losses_base.DistillContext, 'from_batch', fail)
    losses = model(**random_batch(), mode='loss')
    assert torch.isfinite(losses['loss_kd_cls'])


def test_gt_region_changes_yolov5_class_loss(distiller_cfg):
    batch = random_batch()
    plain = build(distiller_cfg)(**batch, mode='loss')['loss_kd_cls']
    distiller_cfg['distill_losses']['loss_kd_cls']['region'] = dict(gt_boxes=True)
    focused = build(distiller_cfg)(**batch, mode='loss')['loss_kd_cls']
    assert torch.isfinite(focused)
    assert not torch.isclose(plain, focused)


def test_teacher_confidence_region_records_teacher_head(feature_cfg):
    feature_cfg['distill_losses']['loss_kd_neck']['region'] = dict(
        gt_boxes=True, teacher_confidence=0.01, background_weight=0.1
    )
    model = build(feature_cfg)
    assert set(model._records['teacher']) == {'neck', 'bbox_head'}
    assert 'bbox_head' not in model._records['student']
    losses = model(**random_batch(), mode='loss')
    assert torch.isfinite(losses['loss_kd_neck'])
    assert losses['loss_kd_neck'].item() > 0


def test_region_loss_without_boxes_is_zero(feature_cfg):
    feature_cfg['distill_losses']['loss_kd_neck']['region'] = dict(gt_boxes=True)
    model = build(feature_cfg)
    batch = random_batch()
    batch['data_samples']['bboxes_labels'] = torch.zeros(0, 6)
    losses = model(**batch, mode='loss')
    assert losses['loss_kd_neck'].item() == 0.0


def test_unequal_neck_shapes_without_connector_are_reported(feature_cfg):
    feature_cfg['distill_losses']['loss_kd_neck']['connector'] = None
    model = build(feature_cfg)
    with pytest.raises(
        ValueError, match=r'level 0: student feature shape \(2, 32, 8, 8\).*\(2, 64, 8, 8\)'
    ):
        model(**random_batch(), mode='loss')


def yolov8_model_cfg(widen_factor: float) -> dict:
    model = copy.deepcopy(
        get_config('mmyolo::yolov8/yolov8_n_syncbn_fast_8xb16-500e_coco.py').model
    )
    model.backbone.widen_factor = widen_factor
    model.neck.widen_factor = widen_factor
    model.bbox_head.head_module.widen_factor = widen_factor
    model.bbox_head.head_module.num_classes = 3
    model.train_cfg.assigner.num_classes = 3
    return model.to_dict()


@pytest.fixture(scope='module')
def yolov8_teacher_checkpoint(tmp_path_factory) -> str:
    torch.manual_seed(1)
    teacher = build_detector(yolov8_model_cfg(0.25))
    return save_checkpoint(teacher, str(tmp_path_factory.mktemp('yolov8') / 'teacher.pth'))


def test_localization_distillation_between_yolov8_detectors(yolov8_teacher_checkpoint):
    cfg = dict(
        type='kd_plugin.DetectionDistiller',
        student=yolov8_model_cfg(0.125),
        teacher=dict(config=yolov8_model_cfg(0.25), checkpoint=yolov8_teacher_checkpoint),
        temperature=2.0,
        distill_losses=dict(
            loss_kd_ld=dict(type='LocalizationDistillLoss', region=dict(background_weight=0.5)),
            loss_kd_neck=dict(type='NormalizedMSEDistillLoss', connector='auto'),
        ),
    )
    model = build(cfg)
    teacher_paths = set(model._records['teacher'])
    assert {f'bbox_head.head_module.reg_preds.{level}' for level in range(3)} <= teacher_paths
    losses = model(**random_batch(), mode='loss')
    assert {'loss_dfl', 'loss_kd_ld', 'loss_kd_neck'} <= set(losses)
    assert losses['loss_kd_ld'].item() > 0
    assert torch.isfinite(losses['loss_kd_ld'])
    losses['loss_kd_ld'].backward()
    reg_weight = model.student.bbox_head.head_module.reg_preds[0][-1].weight
    assert reg_weight.grad is not None
    assert reg_weight.grad.abs().sum() > 0
