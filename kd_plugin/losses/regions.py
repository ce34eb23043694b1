"""Per-cell weights that focus a distillation loss on the key regions of each image.

A region config such as ``region=dict(gt_boxes=True, margin=0.2, teacher_confidence=0.5)`` turns
into one weight map [N, 1, H, W] per feature level. A cell is foreground when a ground-truth
box covers part of it, or when the teacher's highest class probability in it exceeds the
threshold (the union of both), and every other cell is background. Foreground cells weigh 1 and
background cells weigh ``background_weight``.

Losses use the maps as a weighted mean, sum(w * loss) / sum(w), so the value does not grow with
the number of cells and stays the same at any input resolution. When a batch has no weighted
cell at all (no foreground and ``background_weight=0``), the loss is 0, not NaN.
"""

import math
from typing import Any, List, Optional, Sequence, Tuple

import torch

from .base import DistillContext

REGION_KEYS = ('gt_boxes', 'margin', 'teacher_confidence', 'teacher_module', 'background_weight')


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class RegionWeighting:
    """Weight maps from ground-truth boxes and teacher confidence.

    Args:
        gt_boxes: Count the cells that ground-truth boxes cover as foreground.
        margin: Relative box enlargement, >= 0: each box grows by the factor ``1 + margin`` in
            width and height around its centre before it is mapped to a level's grid.
        teacher_confidence: Threshold in (0, 1) on the teacher's maximum sigmoid class score
            per cell, or None to ignore the teacher. The scores are the first element of the
            output of ``teacher_module``: one map [N, C, H, W] of class logits per level (with
            anchors, C is anchors x classes and the maximum runs over both). A feature level
            takes the head level with the same H x W.
        teacher_module: Path of the teacher head whose class logits ``teacher_confidence``
            reads.
        background_weight: Weight of the cells outside the foreground, >= 0. With 0 only the
            foreground counts.
    """

    def __init__(
        self,
        gt_boxes: bool = True,
        margin: float = 0.0,
        teacher_confidence: Optional[float] = None,
        teacher_module: str = 'bbox_head',
        background_weight: float = 0.0,
    ):
        if not isinstance(gt_boxes, bool):
            raise TypeError(f'region gt_boxes must be True or False, got {gt_boxes!r}')
        if not _is_number(margin) or margin < 0:
            raise ValueError(f'region margin must be a finite number >= 0, got {margin!r}')
        if teacher_confidence is not None and not (
            _is_number(teacher_confidence) and 0 < teacher_confidence < 1
        ):
            raise ValueError(
                'region teacher_confidence must be None or a probability threshold in (0, 1), '
                f'got {teacher_confidence!r}'
            )
        if not isinstance(teacher_module, str) or not teacher_module:
            raise TypeError(
                f'region teacher_module must be a module path such as "bbox_head", got '
                f'{teacher_module!r}'
            )
        if not _is_number(background_weight) or background_weight < 0:
            raise ValueError(
                f'region background_weight must be a finite number >= 0, got {background_weight!r}'
            )
        if not gt_boxes and teacher_confidence is None:
            raise ValueError(
                'region selects no foreground: set gt_boxes=True, a teacher_confidence '
                'threshold, or both'
            )
        self.gt_boxes = gt_boxes
        self.margin = float(margin)
        self.teacher_confidence = None if teacher_confidence is None else float(teacher_confidence)
        self.teacher_module = teacher_module
        self.background_weight = float(background_weight)

    @classmethod
    def from_config(cls, region: Optional[dict]) -> Optional['RegionWeighting']:
        """Build the weighting from a loss's ``region`` dict; None stays None."""
        if region is None:
            return None
        if not isinstance(region, dict):
            raise TypeError(
                f'region must be a dict with keys from {list(REGION_KEYS)} or None, got '
                f'{type(region).__name__}'
            )
        unknown = sorted(set(region) - set(REGION_KEYS))
        if unknown:
            raise ValueError(f'unknown region keys {unknown}; allowed keys: {list(REGION_KEYS)}')
        return cls(**region)

    def teacher_modules(self) -> List[str]:
        """Paths of the teacher modules whose outputs the weighting reads."""
        return [self.teacher_module] if self.teacher_confidence is not None else []

    def weight_maps(
        self, sizes: Sequence[Tuple[int, int]], context: Optional[DistillContext]
    ) -> List[torch.Tensor]:
        """Return one float32 weight map [N, 1, H, W] per level of size ``sizes[l] = (H, W)``."""
        if context is None:
            raise ValueError(
                'region weighting needs the batch context; the loss must be called by '
                'DetectionDistiller or given context=DistillContext(...)'
            )
        teacher_scores = None
        if self.teacher_confidence is not None:
            teacher_scores = self._teacher_class_scores(context)

        maps = []
        for height, width in sizes:
            foreground = None
            if self.gt_boxes:
                foreground = self._gt_mask(context, height, width)
            if teacher_scores is not None:
                confident = self._matching_level(teacher_scores, height, width)
                confident = confident > self.teacher_confidence
                foreground = confident if foreground is None else foreground | confident
            # [N, H, W] -> [N, 1, H, W]; foreground cells 1, the rest background_weight.
            weights = foreground.float().unsqueeze(1)
            maps.append(weights + (1.0 - weights) * self.background_weight)
        return maps

    def _gt_mask(self, context: DistillContext, height: int, width: int) -> torch.Tensor:
        input_height, input_width = context.batch_input_shape
        # A level of stride s has ceil(input / s) cells, so input / cells is not the stride when
        # the padded input is no multiple of s (RetinaNet's P7 on a 1216-pixel input: 10 cells of
        # stride 128). Detector strides are powers of two, so the ratio rounds to the stride.
        stride_x = 2.0 ** round(math.log2(input_width / width))
        stride_y = 2.0 ** round(math.log2(input_height / height))
        scale = torch.tensor([1 / stride_x, 1 / stride_y] * 2, dtype=torch.float32)
        masks = []
        for bboxes in context.gt_bboxes:
            bboxes = bboxes.float()
            if self.margin:
                centres = (bboxes[:, :2] + bboxes[:, 2:]) / 2
                half_sizes = (bboxes[:, 2:] - bboxes[:, :2]) * (1 + self.margin) / 2
                bboxes = torch.cat([centres - half_sizes, centres + half_sizes], dim=1)
            # Boxes in grid units: cell (i, j) spans [j, j + 1) x [i, i + 1).
            grid_boxes = bboxes * scale.to(bboxes.device)
            columns = torch.arange(width, device=bboxes.device, dtype=torch.float32)
            rows = torch.arange(height, device=bboxes.device, dtype=torch.float32)
            # A cell is covered when it overlaps the box with a positive area: [K, W] and [K, H].
            in_columns = (columns + 1 > grid_boxes[:, 0:1]) & (columns < grid_boxes[:, 2:3])
            in_rows = (rows + 1 > grid_boxes[:, 1:2]) & (rows < grid_boxes[:, 3:4])
            # [K, H, 1] & [K, 1, W] -> [K, H, W] -> [H, W]
            covered = (in_rows[:, :, None] & in_columns[:, None, :]).any(dim=0)
            masks.append(covered)
        return torch.stack(masks)

    def _teacher_class_scores(self, context: DistillContext) -> List[torch.Tensor]:
        """Return the teacher's maximum class probability per cell, one [N, H, W] per level."""
        output = context.teacher_outputs.get(self.teacher_module)
        if output is None:
            raise ValueError(
                f'region teacher_confidence needs the output of teacher module '
                f'{self.teacher_module!r}, which was not recorded for this batch'
            )
        class_logits = output[0] if isinstance(output, (tuple, list)) else None
        if isinstance(class_logits, torch.Tensor):
            class_logits = [class_logits]
        if not isinstance(class_logits, (tuple, list)) or not all(
            isinstance(level, torch.Tensor) and level.dim() == 4 for level in class_logits
        ):
            raise ValueError(
                f'region teacher_confidence expects the output of {self.teacher_module!r} to be '
                'a tuple whose first element is a list of class logit maps [N, C, H, W], got '
                f'{type(output).__name__}'
            )
        quality = output[2] if isinstance(output, (tuple, list)) and len(output) == 3 else None
        if not self._is_quality_output(class_logits, quality):
            # The maximum of sigmoids is the sigmoid of the maximum logit.
            return [level.detach().float().amax(dim=1).sigmoid() for level in class_logits]

        # Heads with objectness (YOLOv5, YOLOX) or centerness (FCOS) score a prior as
        # sigmoid(class) x sigmoid(quality); their class logits alone are only trained on
        # positives. With A priors per cell, class maps have A x C channels, quality maps A.
        scores = []
        for level_logits, level_quality in zip(class_logits, quality):
            batch, channels, height, width = level_logits.shape
            num_priors = level_quality.shape[1]
            per_prior = (
                level_logits.detach()
                .float()
                .reshape(batch, num_priors, channels // num_priors, height, width)
            )
            class_scores = per_prior.amax(dim=2).sigmoid()
            prior_scores = class_scores * level_quality.detach().float().sigmoid()
            scores.append(prior_scores.amax(dim=1))
        return scores

    @staticmethod
    def _is_quality_output(class_logits: List[torch.Tensor], quality: Any) -> bool:
        """Return whether ``quality`` is one objectness or centerness map per class map."""
        if not isinstance(quality, (tuple, list)) or len(quality) != len(class_logits):
            return False
        for level_logits, level_quality in zip(class_logits, quality):
            if not isinstance(level_quality, torch.Tensor) or level_quality.dim() != 4:
                return False
            if level_quality.shape[-2:] != level_logits.shape[-2:]:
                return False
            if level_logits.shape[1] % level_quality.shape[1] != 0:
                return False
        return True

    def _matching_level(self, scores: List[torch.Tensor], height: int, width: int) -> torch.Tensor:
        for level_scores in scores:
            if tuple(level_scores.shape[-2:]) == (height, width):
                return level_scores
        raise ValueError(
            f'region teacher_confidence: no level of {self.teacher_module!r} has the feature '
            f'size {height}x{width}; its levels are '
            f'{[tuple(level.shape[-2:]) for level in scores]}. Distill levels whose strides the '
            'teacher head also has, or use gt_boxes only'
        )

    def __repr__(self) -> str:
        return (
            f'RegionWeighting(gt_boxes={self.gt_boxes}, margin={self.margin}, '
            f'teacher_confidence={self.teacher_confidence}, '
            f'teacher_module={self.teacher_module!r}, '
            f'background_weight={self.background_weight})'
        )


def weighted_mean(values: torch.Tensor, weights: Optional[torch.Tensor]) -> torch.Tensor:
    """Return sum(weights * values) / sum(weights), or 0 when all weights are 0.

    Args:
        values: Per-cell values, any shape.
        weights: Non-negative weights broadcastable to ``values``, or None for a plain mean.
    """
    if weights is None:
        return values.mean()
    weights = weights.expand_as(values)
    return (values * weights).sum() / weights.sum().clamp(min=1e-12)
