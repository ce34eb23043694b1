"""LocalizationDistillLoss on real, tiny MMDetection GFLHead and MMYOLO YOLOv8Head modules."""

import copy

import pytest
import torch
import torch.nn.functional as F
from mmengine.registry import MODELS, DefaultScope

from kd_plugin.losses import DistillContext, LocalizationDistillLoss
from kd_plugin.losses.localization import _edge_distributions

STRIDES = [8, 16]
INPUT_SIZE = 64


def gfl_head(seed: int, reg_max: int = 4) -> torch.nn.Module:
    torch.manual_seed(seed)
    # GFLHead builds its losses by unprefixed names, so it is built in mmdet's scope.
    with DefaultScope.overwrite_default_scope('mmdet'):
        head = _build_gfl_head(reg_max)
    head.init_weights()
    # init_weights draws the regression weights with std 0.01; larger ones give sharper bins.
    with torch.no_grad():
        head.gfl_reg.weight.normal_(std=0.5)
    return head


def _build_gfl_head(reg_max: int) -> torch.nn.Module:
    return MODELS.build(
        dict(
            type='GFLHead',
            num_classes=3,
            in_channels=8,
            feat_channels=8,
            stacked_convs=1,
            norm_cfg=dict(type='GN', num_groups=4),
            reg_max=reg_max,
            anchor_generator=dict(
                type='AnchorGenerator',
                ratios=[1.0],
                octave_base_scale=8,
                scales_per_octave=1,
                strides=STRIDES,
            ),
        )
    )


def yolov8_head(seed: int, reg_max: int = 16) -> torch.nn.Module:
    torch.manual_seed(seed)
    return MODELS.build(
        dict(
            type='mmyolo.YOLOv8Head',
            head_module=dict(
                type='mmyolo.YOLOv8HeadModule',
                num_classes=3,
                in_channels=[16, 32],
                widen_factor=1.0,
                reg_max=reg_max,
                featmap_strides=STRIDES,
            ),
            prior_generator=dict(type='mmdet.MlvlPointGenerator', offset=0.5, strides=STRIDES),
        )
    )


def features(channels, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    if isinstance(channels, int):
        channels = [channels] * len(STRIDES)
    return tuple(
        torch.randn(2, c, INPUT_SIZE // s, INPUT_SIZE // s, generator=generator)
        for c, s in zip(channels, STRIDES)
    )


def built_loss(student_head, teacher_head, **kwargs) -> LocalizationDistillLoss:
    loss = LocalizationDistillLoss(**kwargs)
    loss.check_modules(student_head, teacher_head)
    return loss


def test_gfl_identical_heads_give_zero_loss():
    head = gfl_head(0)
    outputs = head(features(8))
    assert built_loss(head, head)(outputs, outputs).item() == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize('temperature', [1.0, 4.0])
def test_gfl_loss_matches_kl_over_edge_bins(temperature):
    student, teacher = gfl_head(0), gfl_head(1)
    x = features(8)
    student_outputs, teacher_outputs = student(x), teacher(x)

    # The reshape GFLHead.loss_by_feat_single uses: [N, 4*B, H, W] -> [N*H*W, 4*B] -> [.., B].
    def bins(outputs):
        return torch.cat(
            [m.permute(0, 2, 3, 1).reshape(-1, 4 * 5).reshape(-1, 4, 5) for m in outputs[1]]
        )

    student_log_probs = F.log_softmax(bins(student_outputs) / temperature, dim=-1)
    teacher_probs = F.softmax(bins(teacher_outputs) / temperature, dim=-1)
    kl = (teacher_probs * (teacher_probs.log() - student_log_probs)).sum(-1)  # [positions, 4]
    expected = kl.mean() * temperature**2
    loss = built_loss(student, teacher)
    result = loss(student_outputs, teacher_outputs, temperature=temperature)
    assert result.item() > 0
    torch.testing.assert_close(result, expected, rtol=1e-5, atol=1e-7)


def test_gfl_region_weighs_positions_of_boxes():
    student, teacher = gfl_head(0), gfl_head(1)
    x = features(8)
    student_outputs, teacher_outputs = student(x), teacher(x)
    # A box over the whole image weighs every position 1: the plain mean.
    whole = DistillContext((INPUT_SIZE, INPUT_SIZE), [torch.tensor([[0.0, 0, 64, 64]])] * 2)
    region_loss = built_loss(student, teacher, region=dict(gt_boxes=True))
    plain = built_loss(student, teacher)(student_outputs, teacher_outputs)
    torch.testing.assert_close(region_loss(student_outputs, teacher_outputs, context=whole), plain)
    # A box over the top-left 16x16 pixels keeps 2x2 cells at stride 8 and 1 at stride 16.
    corner = DistillContext((INPUT_SIZE, INPUT_SIZE), [torch.tensor([[0.0, 0, 16, 16]])] * 2)
    kept = region_loss(student_outputs, teacher_outputs, context=corner)
    edited = [list(part) for part in student_outputs]
    for level_map in edited[1]:
        level_map[:, :, -1, -1] += 5.0  # bottom-right cell, outside the box at both levels
    torch.testing.assert_close(region_loss(edited, teacher_outputs, context=corner), kept)


def test_yolov8_training_dist_preds_match_reg_preds_layout():
    head = yolov8_head(0).train()
    x = features([16, 32])
    _, _, bbox_dist_preds = head(x)
    for level, level_x in enumerate(x):
        raw = head.head_module.reg_preds[level](level_x)
        torch.testing.assert_close(
            _edge_distributions(raw, 16, 'reg_preds'), bbox_dist_preds[level]
        )


def yolov8_outputs(student, teacher, x, teacher_module='bbox_head'):
    """Student outputs in training mode, teacher outputs in eval mode plus its reg_preds."""
    teacher.eval()
    with torch.no_grad():
        teacher_outputs = teacher(x)
        recorded = {
            f'{teacher_module}.head_module.reg_preds.{level}': teacher.head_module.reg_preds[level](
                level_x
            )
            for level, level_x in enumerate(x)
        }
    context = DistillContext((INPUT_SIZE, INPUT_SIZE), [torch.zeros(0, 4)] * 2, recorded)
    return student(x), teacher_outputs, context


def test_yolov8_teacher_in_eval_mode_is_read_from_reg_preds():
    teacher = yolov8_head(0)
    student = copy.deepcopy(teacher).train()
    # Keep BatchNorm on running statistics so that the copy computes what the teacher does.
    for module in student.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.eval()
    loss = built_loss(student, teacher)
    assert loss.needs_context
    assert loss.context_teacher_modules() == [
        'bbox_head.head_module.reg_preds.0',
        'bbox_head.head_module.reg_preds.1',
    ]
    student_outputs, teacher_outputs, context = yolov8_outputs(student, teacher, features([16, 32]))
    assert len(teacher_outputs) == 2  # eval mode: no distribution logits
    assert loss(student_outputs, teacher_outputs, context=context).item() == pytest.approx(
        0.0, abs=1e-7
    )

    other = yolov8_head(1).train()
    other_outputs = other(features([16, 32]))
    assert built_loss(other, teacher)(other_outputs, teacher_outputs, context=context).item() > 0


def test_yolov8_without_context_is_reported():
    student, teacher = yolov8_head(0).train(), yolov8_head(1)
    student_outputs, teacher_outputs, _ = yolov8_outputs(student, teacher, features([16, 32]))
    with pytest.raises(ValueError, match='call the loss through DetectionDistiller'):
        built_loss(student, teacher)(student_outputs, teacher_outputs)


def test_unsupported_head_is_rejected():
    head = MODELS.build(
        dict(
            type='mmyolo.YOLOv5HeadModule',
            num_classes=3,
            in_channels=[16, 32],
            widen_factor=1.0,
            featmap_strides=STRIDES,
        )
    )
    with pytest.raises(ValueError, match="supports GFLHead.*YOLOv5HeadModule.*head_type='gfl'"):
        built_loss(head, head)


def test_bin_count_mismatch_is_rejected():
    # GFLHead with reg_max 16 has 17 bins; YOLOv8Head with reg_max 16 has 16.
    with pytest.raises(ValueError, match='bins per box edge: student 17, teacher 16'):
        built_loss(gfl_head(0, reg_max=16), yolov8_head(0))


def test_invalid_head_type_is_rejected():
    with pytest.raises(ValueError, match=r"head_type must be one of \['auto', 'gfl', 'yolov8'\]"):
        LocalizationDistillLoss(head_type='dfl')


def test_forward_before_check_modules_is_reported():
    outputs = gfl_head(0)(features(8))
    with pytest.raises(ValueError, match='has not seen its heads yet'):
        LocalizationDistillLoss()(outputs, outputs)
