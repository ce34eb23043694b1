"""ChannelWiseDistillLoss and NormalizedMSEDistillLoss on small seeded feature maps."""

import pytest
import torch
import torch.nn.functional as F

from kd_plugin.losses import ChannelWiseDistillLoss, DistillContext, NormalizedMSEDistillLoss
from kd_plugin.models import ConvConnector

FEATURE_LOSSES = [ChannelWiseDistillLoss, NormalizedMSEDistillLoss]


def feature_maps(seed: int, channels=(4, 6), sizes=(8, 4), batch: int = 2):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, c, s, s, generator=generator) * 3 for c, s in zip(channels, sizes)]


def upsample(levels):
    return [F.interpolate(level, scale_factor=2, mode='nearest') for level in levels]


def box_context(boxes_per_image, input_size: int) -> DistillContext:
    return DistillContext(
        batch_input_shape=(input_size, input_size),
        gt_bboxes=[
            torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4) for boxes in boxes_per_image
        ],
    )


@pytest.mark.parametrize('loss_cls', FEATURE_LOSSES)
def test_identical_features_give_zero_loss(loss_cls):
    features = feature_maps(0)
    assert loss_cls(temperature=2.0)(features, features).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize('loss_cls', FEATURE_LOSSES)
def test_different_features_give_positive_loss(loss_cls):
    assert loss_cls()(feature_maps(0), feature_maps(1)).item() > 0.1


@pytest.mark.parametrize('loss_cls', FEATURE_LOSSES)
@pytest.mark.parametrize('with_region', [False, True])
def test_loss_is_unchanged_at_double_resolution(loss_cls, with_region):
    student, teacher = feature_maps(0), feature_maps(1)
    loss = loss_cls(temperature=2.0, region=dict(background_weight=0.1) if with_region else None)
    # Box edges on multiples of 8 input pixels, so both grids cover exactly the same area.
    boxes = [[[0, 0, 16, 24]], [[8, 8, 32, 32]]]
    low = loss(student, teacher, context=box_context(boxes, 32))
    doubled = [[[2 * v for v in box] for box in image] for image in boxes]
    high = loss(upsample(student), upsample(teacher), context=box_context(doubled, 64))
    torch.testing.assert_close(high, low, rtol=1e-5, atol=1e-6)


def test_cwd_matches_channel_softmax_kl_times_t_squared():
    student, teacher = feature_maps(0, channels=(3,), sizes=(4,)), feature_maps(1, (3,), (4,))
    temperature = 3.0
    # KL over the 16 cells of each channel of each image, summed over cells, mean over N and C.
    student_log_probs = F.log_softmax(student[0].flatten(2) / temperature, dim=-1)
    teacher_probs = F.softmax(teacher[0].flatten(2) / temperature, dim=-1)
    kl = (teacher_probs * (teacher_probs.log() - student_log_probs)).sum(-1)
    expected = kl.mean() * temperature**2
    result = ChannelWiseDistillLoss()(student, teacher, temperature=temperature)
    torch.testing.assert_close(result, expected, rtol=1e-5, atol=1e-7)


def test_nmse_ignores_channel_scale_and_offset():
    teacher = feature_maps(1)
    student = [3.0 * level - 2.0 for level in teacher]
    assert NormalizedMSEDistillLoss()(student, teacher).item() == pytest.approx(0.0, abs=1e-6)
    assert NormalizedMSEDistillLoss()(feature_maps(0), teacher).item() > 0.5


def test_nmse_ignores_temperature():
    student, teacher = feature_maps(0), feature_maps(1)
    loss = NormalizedMSEDistillLoss()
    torch.testing.assert_close(loss(student, teacher, 1.0), loss(student, teacher, 8.0))


def test_level_weights_scale_each_level_of_the_mean():
    student, teacher = feature_maps(0), feature_maps(1)
    per_level = [ChannelWiseDistillLoss()([s], [t]) for s, t in zip(student, teacher)]
    weighted = ChannelWiseDistillLoss(level_weights=[2.0, 0.5])(student, teacher)
    torch.testing.assert_close(weighted, (2.0 * per_level[0] + 0.5 * per_level[1]) / 2)


def test_single_tensor_output_is_one_level():
    student, teacher = feature_maps(0), feature_maps(1)
    torch.testing.assert_close(
        NormalizedMSEDistillLoss()(student[0], teacher[0]),
        NormalizedMSEDistillLoss()(student[:1], teacher[:1]),
    )


def test_channel_mismatch_without_connector_names_shapes_and_level():
    student = feature_maps(0, channels=(4, 5))
    with pytest.raises(
        ValueError,
        match=r"level 1: student feature shape \(2, 5, 4, 4\).*\(2, 6, 4, 4\).*connector='auto'",
    ):
        ChannelWiseDistillLoss()(student, feature_maps(1))


def test_level_count_mismatch_is_reported():
    with pytest.raises(ValueError, match='outputs 1 feature levels and the teacher module 2'):
        ChannelWiseDistillLoss()(feature_maps(0)[:1], feature_maps(1))


def test_level_selection_pairs_chosen_levels():
    # A three-level teacher, of which levels 1 and 2 match the student's two levels.
    student = feature_maps(0, channels=(4, 6), sizes=(8, 4))
    teacher = [feature_maps(1, channels=(3,), sizes=(16,))[0], *feature_maps(2)]
    selected = ChannelWiseDistillLoss(teacher_levels=(1, 2))(student, teacher)
    direct = ChannelWiseDistillLoss()(student, teacher[1:])
    assert torch.equal(selected, direct)
    reversed_pairs = NormalizedMSEDistillLoss(student_levels=[1, 0], teacher_levels=[2, 1])
    assert torch.allclose(
        reversed_pairs(student, teacher), NormalizedMSEDistillLoss()(student, teacher[1:])
    )


def test_level_selection_builds_connectors_per_pair():
    student = feature_maps(0, channels=(4, 5), sizes=(8, 4))
    teacher = feature_maps(1, channels=(7, 4, 6, 9), sizes=(16, 8, 4, 2))
    loss = ChannelWiseDistillLoss(connector='auto', teacher_levels=(1, 2))
    loss.configure_from_outputs(student, teacher)
    assert list(loss.connectors) == ['1']
    assert loss.connectors['1'].conv.out_channels == 6
    assert torch.isfinite(loss(student, teacher))


def test_level_selection_out_of_range_is_reported():
    loss = ChannelWiseDistillLoss(teacher_levels=(0, 5))
    with pytest.raises(ValueError, match=r'teacher_levels \[0, 5\] selects levels \[5\]'):
        loss(feature_maps(0), feature_maps(1))


@pytest.mark.parametrize(
    'kwargs, message',
    [
        (dict(connector='yes'), "connector must be None, 'auto'"),
        (dict(connector=dict(norm_cfg=None)), 'needs a "type"'),
        (dict(level_weights=[1.0, -1.0]), 'level_weights must be a list of numbers >= 0'),
        (dict(region=dict(thresh=0.5)), 'unknown region keys'),
        (dict(teacher_levels=()), 'teacher_levels must be a non-empty list'),
        (dict(student_levels=[0.5]), 'student_levels must be a non-empty list'),
    ],
)
def test_invalid_arguments_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ChannelWiseDistillLoss(**kwargs)


def test_level_weights_of_wrong_length_are_rejected():
    with pytest.raises(ValueError, match='level_weights has 3 entries for 2 feature levels'):
        ChannelWiseDistillLoss(level_weights=[1, 1, 1])(feature_maps(0), feature_maps(1))


def test_auto_connector_needs_configuration_first():
    with pytest.raises(ValueError, match='has no connectors yet'):
        ChannelWiseDistillLoss(connector='auto')(feature_maps(0), feature_maps(1))


def test_auto_connectors_only_where_shapes_differ():
    # Level 0 matches; level 1 differs in channels (5 vs 6) and size (8 vs 4).
    student = feature_maps(0, channels=(4, 5), sizes=(8, 8))
    teacher = feature_maps(1, channels=(4, 6), sizes=(8, 4))
    loss = NormalizedMSEDistillLoss(connector='auto')
    loss.configure_from_outputs(student, teacher)
    assert list(loss.connectors) == ['1']
    assert isinstance(loss.connectors['1'], ConvConnector)
    assert loss.connectors['1'].conv.in_channels == 5
    assert loss.connectors['1'].conv.out_channels == 6
    value = loss(student, teacher)
    value.backward()
    assert loss.connectors['1'].conv.weight.grad.abs().sum() > 0


def test_connector_config_applies_to_every_level():
    student, teacher = feature_maps(0), feature_maps(1)
    loss = ChannelWiseDistillLoss(
        connector=dict(type='ConvConnector', norm_cfg=dict(type='GN', num_groups=2))
    )
    loss.configure_from_outputs(student, teacher)
    assert list(loss.connectors) == ['0', '1']
    assert isinstance(loss.connectors['1'].norm, torch.nn.GroupNorm)


def test_cwd_region_ignores_cells_outside_boxes():
    student, teacher = feature_maps(0), feature_maps(1)
    # Image 0: box over stride-4 cells 0-3 and stride-8 cells 0-1; image 1: the other corner.
    ctx = box_context([[[0, 0, 16, 16]], [[16, 16, 32, 32]]], 32)
    loss = ChannelWiseDistillLoss(region=dict(gt_boxes=True))
    before = loss(student, teacher, context=ctx)
    changed = [level.clone() for level in student]
    changed[0][0, :, 5:, 5:] += 10.0
    changed[1][1, :, :2, :2] -= 10.0
    torch.testing.assert_close(loss(changed, teacher, context=ctx), before)
    changed[0][0, :, 0, 0] += 10.0  # inside image 0's box
    assert not torch.isclose(loss(changed, teacher, context=ctx), before)


def test_nmse_region_ignores_errors_outside_boxes():
    student, teacher = feature_maps(0), feature_maps(1)
    ctx = box_context([[[0, 0, 16, 16]], [[16, 16, 32, 32]]], 32)
    loss = NormalizedMSEDistillLoss(region=dict(gt_boxes=True))
    before = loss(student, teacher, context=ctx)
    # Standardisation uses every cell, so swapping two cells outside the box keeps the channel
    # statistics and changes only errors that the region weighs 0.
    changed = [level.clone() for level in student]
    changed[0][0, :, 7, 7] = student[0][0, :, 6, 7]
    changed[0][0, :, 6, 7] = student[0][0, :, 7, 7]
    torch.testing.assert_close(loss(changed, teacher, context=ctx), before)
    plain = NormalizedMSEDistillLoss()
    assert not torch.isclose(plain(changed, teacher), plain(student, teacher))


@pytest.mark.parametrize('loss_cls', FEATURE_LOSSES)
def test_region_without_foreground_gives_zero_and_finite_gradients(loss_cls):
    student = [level.requires_grad_() for level in feature_maps(0)]
    value = loss_cls(region=dict(gt_boxes=True))(
        student, feature_maps(1), context=box_context([[], []], 32)
    )
    value.backward()
    assert value.item() == 0.0
    assert all(torch.isfinite(level.grad).all() for level in student)


def test_cwd_region_image_without_foreground_leaves_the_mean():
    student, teacher = feature_maps(0), feature_maps(1)
    loss = ChannelWiseDistillLoss(region=dict(gt_boxes=True))
    both = loss(student, teacher, context=box_context([[[0, 0, 32, 32]], []], 32))
    first = loss(
        [s[:1] for s in student],
        [t[:1] for t in teacher],
        context=box_context([[[0, 0, 32, 32]]], 32),
    )
    # A box over the whole image weighs every cell 1, the same as no region.
    plain = ChannelWiseDistillLoss()([s[:1] for s in student], [t[:1] for t in teacher])
    torch.testing.assert_close(both, first)
    torch.testing.assert_close(first, plain)


def test_region_needs_context():
    with pytest.raises(ValueError, match='needs the batch context'):
        ChannelWiseDistillLoss(region=dict())(feature_maps(0), feature_maps(1))


@pytest.mark.parametrize('loss_cls', FEATURE_LOSSES)
def test_loss_is_float32_under_bfloat16(loss_cls):
    student = [level.bfloat16() for level in feature_maps(0)]
    teacher = [level.bfloat16() for level in feature_maps(1)]
    with torch.autocast(device_type='cpu', dtype=torch.bfloat16):
        value = loss_cls()(student, teacher)
    assert value.dtype == torch.float32


def test_teacher_gets_no_gradient():
    student = [level.requires_grad_() for level in feature_maps(0)]
    teacher = [level.requires_grad_() for level in feature_maps(1)]
    ChannelWiseDistillLoss()(student, teacher).backward()
    assert all(level.grad is None for level in teacher)
    assert all(level.grad.abs().sum() > 0 for level in student)


def test_defaults_read_the_necks():
    loss = ChannelWiseDistillLoss()
    assert (loss.student_module, loss.teacher_module) == ('neck', 'neck')
    assert not loss.needs_context
    assert ChannelWiseDistillLoss(
        region=dict(teacher_confidence=0.5)
    ).context_teacher_modules() == ['bbox_head']
