"""DistillContext construction and RegionWeighting weight maps on small hand-made batches."""

import pytest
import torch
from mmdet.structures import DetDataSample
from mmdet.structures.bbox import HorizontalBoxes
from mmengine.structures import InstanceData

from kd_plugin.losses import DistillContext, RegionWeighting, weighted_mean


def context(boxes_per_image, input_shape=(32, 32), teacher_outputs=None) -> DistillContext:
    return DistillContext(
        batch_input_shape=input_shape,
        gt_bboxes=[
            torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4) for boxes in boxes_per_image
        ],
        teacher_outputs=teacher_outputs or {},
    )


def test_context_from_fast_collate_splits_boxes_per_image():
    inputs = torch.zeros(3, 3, 48, 64)
    rows = torch.tensor(
        [[0, 1, 1.0, 2.0, 3.0, 4.0], [2, 0, 5.0, 6.0, 7.0, 8.0], [0, 2, 9.0, 9.0, 10.0, 10.0]]
    )
    ctx = DistillContext.from_batch(inputs, dict(bboxes_labels=rows), {'neck': 'x'})
    assert ctx.batch_input_shape == (48, 64)
    assert torch.equal(ctx.gt_bboxes[0], torch.tensor([[1.0, 2, 3, 4], [9, 9, 10, 10]]))
    assert ctx.gt_bboxes[1].shape == (0, 4)
    assert torch.equal(ctx.gt_bboxes[2], torch.tensor([[5.0, 6, 7, 8]]))
    assert ctx.teacher_outputs == {'neck': 'x'}


@pytest.mark.parametrize('wrapped', [False, True])
def test_context_from_detdatasample_list(wrapped):
    samples = []
    for boxes in ([[1.0, 2.0, 3.0, 4.0]], []):
        sample = DetDataSample()
        bboxes = torch.tensor(boxes).reshape(-1, 4)
        sample.gt_instances = InstanceData(bboxes=HorizontalBoxes(bboxes) if wrapped else bboxes)
        samples.append(sample)
    ctx = DistillContext.from_batch(torch.zeros(2, 3, 16, 16), samples)
    assert torch.equal(ctx.gt_bboxes[0], torch.tensor([[1.0, 2.0, 3.0, 4.0]]))
    assert ctx.gt_bboxes[1].shape == (0, 4)


def test_context_rejects_dict_without_boxes():
    with pytest.raises(ValueError, match='without "bboxes_labels"'):
        DistillContext.from_batch(torch.zeros(1, 3, 8, 8), dict(img_metas=[]))


def test_gt_box_covers_overlapping_cells_per_level():
    # Input 32x32; box (4, 4)-(20, 12). Level 8x8 (stride 4): x 1..5, y 1..3 -> columns 1-4,
    # rows 1-2. Level 4x4 (stride 8): x 0.5..2.5, y 0.5..1.5 -> columns 0-2, rows 0-1.
    maps = RegionWeighting().weight_maps([(8, 8), (4, 4)], context([[[4, 4, 20, 12]]]))
    expected_fine = torch.zeros(8, 8)
    expected_fine[1:3, 1:5] = 1
    expected_coarse = torch.zeros(4, 4)
    expected_coarse[0:2, 0:3] = 1
    assert maps[0].shape == (1, 1, 8, 8)
    assert torch.equal(maps[0][0, 0], expected_fine)
    assert torch.equal(maps[1][0, 0], expected_coarse)


def test_margin_enlarges_boxes_around_centre():
    # Box (8, 8)-(16, 16) on a 32x32 grid of stride 1; margin 1.0 doubles it to (4, 4)-(20, 20).
    region = RegionWeighting(margin=1.0)
    weights = region.weight_maps([(32, 32)], context([[[8, 8, 16, 16]]]))[0][0, 0]
    assert weights.sum() == 16 * 16
    assert weights[4, 4] == 1
    assert weights[3, 3] == 0
    assert weights[19, 19] == 1
    assert weights[20, 20] == 0


def test_background_weight_fills_other_cells():
    weights = RegionWeighting(background_weight=0.25).weight_maps(
        [(4, 4)], context([[[0, 0, 8, 8]], []])
    )[0]
    assert weights[0, 0, 0, 0] == 1.0
    assert weights[0, 0, 3, 3] == 0.25
    assert torch.all(weights[1] == 0.25)


def test_teacher_confidence_union_with_gt_and_level_matching():
    # Teacher class logits: 2 classes on levels 4x4 and 2x2; one confident cell per level.
    level0 = torch.full((1, 2, 4, 4), -5.0)
    level0[0, 1, 3, 3] = 3.0  # sigmoid 0.95
    level1 = torch.full((1, 2, 2, 2), -5.0)
    level1[0, 0, 0, 1] = 0.0  # sigmoid 0.5, below the threshold
    outputs = {'bbox_head': ([level0, level1], [])}
    region = RegionWeighting(gt_boxes=True, teacher_confidence=0.6)
    ctx = context([[[0, 0, 8, 8]]], teacher_outputs=outputs)
    # Sizes in reverse order: each level finds the head level with its own size.
    coarse, fine = region.weight_maps([(2, 2), (4, 4)], ctx)
    assert fine[0, 0, 3, 3] == 1  # teacher
    assert fine[0, 0, 0, 0] == 1  # ground truth
    assert fine.sum() == 2
    assert coarse[0, 0, 0, 1] == 0
    assert coarse.sum() == 1


def test_gt_box_uses_stride_when_input_is_no_multiple():
    # Input 1216 wide: a stride-128 level has ceil(9.5) = 10 columns. A box at x 1030-1100 lies
    # in column 8 (1024-1152) only; input / columns = 121.6 would also mark column 9.
    maps = RegionWeighting().weight_maps([(1, 10)], context([[[1030, 0, 1100, 64]]], (128, 1216)))
    assert maps[0][0, 0, 0].nonzero().flatten().tolist() == [8]


def test_teacher_confidence_multiplies_objectness():
    # YOLOv5-style head: 2 priors x 2 classes per cell, one objectness map channel per prior.
    class_logits = torch.full((1, 4, 2, 2), 5.0)  # confident classes everywhere
    objectness = torch.full((1, 2, 2, 2), -5.0)  # but no object, except prior 1 of cell (1, 1)
    objectness[0, 1, 1, 1] = 5.0
    outputs = {'bbox_head': ([class_logits], [torch.zeros(1, 8, 2, 2)], [objectness])}
    region = RegionWeighting(gt_boxes=False, teacher_confidence=0.5)
    weights = region.weight_maps([(2, 2)], context([[]], teacher_outputs=outputs))[0]
    assert weights.sum() == 1
    assert weights[0, 0, 1, 1] == 1


def test_teacher_confidence_without_matching_level_is_reported():
    outputs = {'bbox_head': ([torch.zeros(1, 2, 4, 4)], [])}
    region = RegionWeighting(gt_boxes=False, teacher_confidence=0.5)
    with pytest.raises(ValueError, match=r'no level .* feature size 8x8'):
        region.weight_maps([(8, 8)], context([[]], teacher_outputs=outputs))


def test_teacher_confidence_needs_recorded_output():
    region = RegionWeighting(teacher_confidence=0.5, teacher_module='head')
    assert region.teacher_modules() == ['head']
    with pytest.raises(ValueError, match="'head', which was not recorded"):
        region.weight_maps([(4, 4)], context([[]]))


@pytest.mark.parametrize(
    'config, error, message',
    [
        (dict(gt_box=True), ValueError, r"unknown region keys \['gt_box'\]"),
        (dict(margin=-0.1), ValueError, 'margin must be a finite number >= 0'),
        (dict(teacher_confidence=1.5), ValueError, r'threshold in \(0, 1\)'),
        (dict(background_weight=-1), ValueError, 'background_weight must be'),
        (dict(gt_boxes=False), ValueError, 'selects no foreground'),
        (dict(gt_boxes='yes'), TypeError, 'gt_boxes must be True or False'),
        ([('gt_boxes', True)], TypeError, 'region must be a dict'),
    ],
)
def test_invalid_region_configs_are_rejected(config, error, message):
    with pytest.raises(error, match=message):
        RegionWeighting.from_config(config)


def test_weighted_mean_with_zero_weights_is_zero():
    values = torch.tensor([1.0, 2.0], requires_grad=True)
    result = weighted_mean(values, torch.zeros(2))
    result.backward()
    assert result == 0
    assert torch.isfinite(values.grad).all()
    # Weights [1, 3]: (1 * 1 + 3 * 2) / 4 = 1.75.
    assert weighted_mean(values, torch.tensor([1.0, 3.0])).item() == pytest.approx(1.75)
