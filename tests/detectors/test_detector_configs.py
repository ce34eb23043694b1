"""The shipped MMDetection/MMYOLO distillation configs, trained as tiny stand-ins on BCCD images.

Each config runs 2 iterations in a real MMEngine Runner with its own hooks, optimizer and
distillation losses. Only model sizes, classes and data are swapped (see tiny_detectors.py).
"""

import math
import os.path as osp
import re

import pytest
import torch
import torch.nn.functional as F
from mmengine.runner import Runner

from kd_plugin.utils import load_checkpoint_file
from tests.detectors.tiny_detectors import (
    KD_CONFIGS,
    SnapshotHook,
    load_kd_config,
    shrink_model,
    tiny_kd_config,
    tiny_teacher,
    train_on_bccd_subset,
)

# The pairs whose neck widths differ, so that connector='auto' builds connectors.
FAMILIES_WITH_CONNECTORS = ('cross_family', 'rtmdet', 'yolov8')


def distill_loss_names(cfg) -> list:
    return sorted(cfg.model.distill_losses)


def first_batch(runner: Runner) -> dict:
    """The first training batch of the runner, preprocessed by the student's preprocessor."""
    batch = next(iter(runner.train_dataloader))
    return runner.model.data_preprocessor(batch, True)


def gt_bboxes(data: dict) -> torch.Tensor:
    """All ground-truth boxes [M, 4] (x1, y1, x2, y2) of a preprocessed batch, in input pixels."""
    samples = data['data_samples']
    if isinstance(samples, dict):  # MMYOLO fast collate: rows of (image, class, x1, y1, x2, y2)
        return samples['bboxes_labels'][:, 2:]
    return torch.cat([sample.gt_instances.bboxes for sample in samples])


def has_gradient(param: torch.Tensor) -> bool:
    return param.grad is not None and bool(param.grad.abs().sum() > 0)


@pytest.mark.parametrize('family', sorted(KD_CONFIGS))
def test_config_trains_tiny_stand_in(family, bccd_subset, tmp_path):
    cfg, teacher_checkpoint = tiny_kd_config(family, bccd_subset, str(tmp_path))
    loss_names = distill_loss_names(cfg)
    runner = Runner.from_cfg(cfg)
    snapshot = SnapshotHook()
    runner.register_hook(snapshot, priority='VERY_LOW')
    runner.train()
    distiller = runner.model

    # Both iterations logged every distillation loss, finite and above 0.
    for name in loss_names:
        values = list(runner.message_hub.log_scalars[f'train/{name}'].data[0])
        assert len(values) == 2, name
        assert all(math.isfinite(value) for value in values), (name, values)
        assert all(value > 0 for value in values), (name, values)

    # The teacher is frozen: its weights and BatchNorm statistics are the checkpoint's.
    teacher = distiller.teacher
    assert not any(param.requires_grad for param in teacher.parameters())
    assert all(param.grad is None for param in teacher.parameters())
    saved = load_checkpoint_file(teacher_checkpoint)['state_dict']
    current = teacher.state_dict()
    assert set(current) == set(saved)
    changed_teacher = [key for key, value in saved.items() if not torch.equal(value, current[key])]
    assert changed_teacher == []

    # The student and every connector trained; the teacher is not among the model's parameters.
    parameters = dict(distiller.named_parameters())
    changed = {
        name
        for name, before in snapshot.parameters.items()
        if not torch.equal(before, parameters[name])
    }
    assert any(name.startswith('student.neck.') for name in changed)
    connector_names = [name for name in parameters if '.connectors.' in name]
    if family in FAMILIES_WITH_CONNECTORS:
        assert connector_names
    else:
        assert connector_names == []
    assert set(connector_names) <= changed
    assert all(name.startswith(('student.', 'distill_losses.')) for name in parameters)

    # A student-only checkpoint was exported beside the full one.
    assert osp.isfile(osp.join(str(tmp_path), 'epoch_1_student.pth'))

    # The stand-in pipeline resized the boxes with the images.
    data = first_batch(runner)
    boxes = gt_bboxes(data)
    height, width = data['inputs'].shape[-2:]
    assert len(boxes) > 0
    assert boxes.min() >= 0
    assert (boxes[:, 2] <= width).all()
    assert (boxes[:, 3] <= height).all()

    # Each distillation loss alone sends gradients into the student module it reads and into
    # its connectors, and none into the teacher. Feature losses stop at the neck.
    distiller.train()
    for name in loss_names:
        distill_loss = distiller.distill_losses[name]
        distiller.zero_grad(set_to_none=True)
        distiller(**data, mode='loss')[name].backward()
        module = distiller.student.get_submodule(distill_loss.student_module)
        assert any(has_gradient(param) for param in module.parameters()), name
        connectors = getattr(distill_loss, 'connectors', None)
        if connectors is not None:
            assert all(has_gradient(param) for param in connectors.parameters()), name
        assert all(param.grad is None for param in teacher.parameters()), name
        if distill_loss.student_module == 'neck':
            after_neck = [
                param
                for param_name, param in distiller.student.named_parameters()
                if not param_name.startswith(('backbone.', 'neck.'))
            ]
            assert all(param.grad is None for param in after_neck), name


def test_channel_mismatch_without_connector_names_both_shapes(bccd_subset, tmp_path):
    # The RetinaNet pair has no connector. The stand-in student's FPN gets 8 channels and the
    # teacher's keeps 16. BCCD's 640 x 480 images resize to 160 x 120 and pad to 160 x 128, so
    # level 0 (stride 8) compares [4, 8, 16, 20] with [4, 16, 16, 20].
    cfg, _ = tiny_kd_config('retinanet', bccd_subset, str(tmp_path))
    assert cfg.model.distill_losses.loss_kd_fpn.get('connector') is None
    cfg.model.student.neck.out_channels = 8
    cfg.model.student.bbox_head.in_channels = 8
    runner = Runner.from_cfg(cfg)
    data = first_batch(runner)
    with pytest.raises(ValueError) as error:
        runner.model(**data, mode='loss')
    message = str(error.value)
    assert re.search(r'student feature shape \(4, 8, 16, 20\)', message), message
    assert re.search(r'teacher feature shape \(4, 16, 16, 20\)', message), message
    assert "connector='auto'" in message


@pytest.mark.parametrize('loss_type', ['ChannelWiseDistillLoss', 'NormalizedMSEDistillLoss'])
def test_feature_loss_same_at_double_resolution(loss_type, bccd_subset, tmp_path):
    # Real neck features of the RTMDet stand-ins (connectors included) on a BCCD batch, and the
    # same features at twice the height and width (each cell repeated 2 x 2). The loss is a mean
    # over channels and images of per-cell averages or distributions, so it must not change.
    cfg = load_kd_config('rtmdet')
    cfg.model.student = shrink_model(cfg.model.student, 'student').to_dict()
    cfg.model.teacher, _ = tiny_teacher(cfg, str(tmp_path))
    cfg.model.distill_losses.loss_kd_neck.type = loss_type
    train_on_bccd_subset(cfg, bccd_subset)
    cfg.work_dir = str(tmp_path)
    runner = Runner.from_cfg(cfg)
    distiller = runner.model
    inputs = first_batch(runner)['inputs']
    distill_loss = distiller.distill_losses['loss_kd_neck'].eval()
    with torch.no_grad():
        student_features = distiller.student.extract_feat(inputs)
        teacher_features = distiller.teacher.extract_feat(inputs)
        loss = distill_loss(student_features, teacher_features)
        doubled = distill_loss(
            [F.interpolate(level, scale_factor=2.0, mode='nearest') for level in student_features],
            [F.interpolate(level, scale_factor=2.0, mode='nearest') for level in teacher_features],
        )
    assert loss > 0
    torch.testing.assert_close(doubled, loss, rtol=1e-4, atol=1e-6)
