"""Temperature-scaled distillation of YOLOv5 head outputs: classes, objectness and boxes.

Shapes used in this module: N images, A anchors (base priors) per grid cell, K classes, L
feature levels with H_l x W_l cells each, and P = sum_l A * H_l * W_l priors per image.

MMYOLO's ``YOLOv5Head.forward`` returns ``(cls_scores, bbox_preds, objectnesses)``, each a list
of L raw maps shaped [N, A*K, H, W], [N, A*4, H, W] and [N, A, H, W]. Channels are anchor-major
(anchor 0's K classes, then anchor 1's, ...), so each map is split per anchor before any
per-prior operation: a softmax over dimension 1 of a raw map would mix the anchors' classes.

YOLOv5 scores every class, every box coordinate and the objectness with an independent sigmoid,
so the softened teacher target of each is a Bernoulli distribution sigmoid(z_t / T), matched by
KL divergence against sigmoid(z_s / T) and multiplied by T^2. The T^2 factor keeps the gradient
size roughly constant across temperatures, as in Hinton et al., "Distilling the Knowledge in a
Neural Network" (2015): for large T the gradient of T^2 * KL tends to (z_s - z_t) / 4 per
sigmoid output. Class and box terms are averaged over priors weighted by the teacher's
objectness probability, so that the many background cells do not drown the few object cells.
All terms are computed in float32, also under automatic mixed precision.

MMYOLO's YOLOv5Head multiplies its own losses by the number of images in the whole batch
(images per GPU x GPUs), so by default these losses are multiplied by it too. A loss weight then
keeps the same balance against the task losses at any batch size or GPU count.
"""

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmengine.dist import get_world_size

from ..registry import MODELS
from .base import (
    DistillContext,
    DistillLoss,
    binary_kl_with_logits,
    softmax_kl_with_logits,
    validate_temperature,
)
from .regions import RegionWeighting

HeadOutputs = Tuple[Sequence[torch.Tensor], Sequence[torch.Tensor], Sequence[torch.Tensor]]


def flatten_priors(maps: Sequence[torch.Tensor], num_attributes: int, name: str) -> torch.Tensor:
    """Turn L raw head maps [N, A*C, H, W] into one float32 tensor [N, P, C], prior-major."""
    flat = []
    for level, level_map in enumerate(maps):
        batch, channels, height, width = level_map.shape
        if channels % num_attributes:
            raise ValueError(
                f'{name} map of level {level} has {channels} channels, not a multiple of '
                f'{num_attributes} attributes per anchor'
            )
        num_anchors = channels // num_attributes
        # [N, A*C, H, W] -> [N, A, C, H, W] -> [N, A, H, W, C] -> [N, A*H*W, C]
        per_anchor = level_map.float().view(batch, num_anchors, num_attributes, height, width)
        flat.append(per_anchor.permute(0, 1, 3, 4, 2).reshape(batch, -1, num_attributes))
    return torch.cat(flat, dim=1)


def check_same_shapes(
    student_maps: Sequence[torch.Tensor], teacher_maps: Sequence[torch.Tensor], name: str
) -> None:
    """Raise ValueError naming both shapes when the student's and teacher's maps differ."""
    if len(student_maps) != len(teacher_maps):
        raise ValueError(
            f'student has {len(student_maps)} {name} levels, teacher {len(teacher_maps)}; '
            'distill heads with the same feature strides'
        )
    for level, (student_map, teacher_map) in enumerate(zip(student_maps, teacher_maps)):
        if student_map.shape != teacher_map.shape:
            raise ValueError(
                f'{name} level {level}: student shape {tuple(student_map.shape)} differs from '
                f'teacher shape {tuple(teacher_map.shape)}; teacher and student heads need the '
                'same classes, anchors and strides'
            )


def weighted_prior_mean(values: torch.Tensor, weights: Optional[torch.Tensor]) -> torch.Tensor:
    """Mean of per-prior values [N, P], weighted by [N, P] weights when given."""
    if weights is None:
        return values.mean()
    return (values * weights).sum() / weights.sum().clamp(min=1e-6)


class YOLOv5HeadDistillLoss(DistillLoss):
    """Shared checks and reshaping of the YOLOv5 head distillation losses.

    Args:
        weight_by_teacher_objectness: Average over priors weighted by sigmoid of the teacher's
            objectness logit. When False, every prior counts the same.
        scale_by_batch_size: Multiply the loss by the images per GPU times the number of GPUs,
            as YOLOv5Head does with its task losses. When False, the loss is a plain mean.
        region: Region weighting config (see :class:`RegionWeighting`), or None. The region
            weight of a grid cell applies to all its anchors and multiplies the objectness
            weight when both are on.
        **kwargs: ``loss_weight``, ``temperature``, ``student_module`` and ``teacher_module``
            of :class:`DistillLoss`.
    """

    def __init__(
        self,
        weight_by_teacher_objectness: bool = True,
        scale_by_batch_size: bool = True,
        region: Optional[dict] = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.weight_by_teacher_objectness = weight_by_teacher_objectness
        self.scale_by_batch_size = scale_by_batch_size
        self.region = RegionWeighting.from_config(region)

    def _batch_scale(self, student_outputs: HeadOutputs) -> float:
        if not self.scale_by_batch_size:
            return 1.0
        return float(student_outputs[0][0].shape[0] * get_world_size())

    def check_modules(self, student_module: nn.Module, teacher_module: nn.Module) -> None:
        for attribute in ('num_classes', 'num_base_priors', 'featmap_strides'):
            student_value = getattr(student_module, attribute, None)
            teacher_value = getattr(teacher_module, attribute, None)
            if student_value is None or teacher_value is None:
                raise ValueError(
                    f'{type(self).__name__} needs YOLOv5-style heads with `{attribute}`, but '
                    f'the student head is {type(student_module).__name__} and the teacher head '
                    f'is {type(teacher_module).__name__}'
                )
            if isinstance(student_value, (list, tuple)):
                # Configs give strides as lists or tuples; compare the values only.
                student_value, teacher_value = list(student_value), list(teacher_value)
            if student_value != teacher_value:
                raise ValueError(
                    f'teacher and student heads differ in {attribute}: teacher {teacher_value}, '
                    f'student {student_value}. Output distillation compares the heads prior by '
                    'prior, so train the teacher with the same classes, anchors and strides'
                )

    def _prepare(
        self,
        student_outputs: HeadOutputs,
        teacher_outputs: HeadOutputs,
        part: int,
        width: int,
        context: Optional[DistillContext] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """Return student and teacher logits [N, P, width] of one head part and prior weights."""
        names = ('cls_scores', 'bbox_preds', 'objectnesses')
        check_same_shapes(student_outputs[part], teacher_outputs[part], names[part])
        student_logits = flatten_priors(student_outputs[part], width, names[part])
        teacher_logits = flatten_priors(teacher_outputs[part], width, names[part])
        weights = None
        if self.weight_by_teacher_objectness:
            check_same_shapes(student_outputs[2], teacher_outputs[2], names[2])
            weights = torch.sigmoid(flatten_priors(teacher_outputs[2], 1, names[2])[..., 0])
        if self.region is not None:
            region_weights = self._region_prior_weights(teacher_outputs, context)
            weights = region_weights if weights is None else weights * region_weights
        return student_logits, teacher_logits, weights

    def _region_prior_weights(
        self, teacher_outputs: HeadOutputs, context: Optional[DistillContext]
    ) -> torch.Tensor:
        """Return the region weight of every prior, [N, P] in ``flatten_priors`` order."""
        objectness_maps = teacher_outputs[2]
        sizes = [tuple(level_map.shape[-2:]) for level_map in objectness_maps]
        flat = []
        for level_map, cell_weights in zip(
            objectness_maps, self.region.weight_maps(sizes, context)
        ):
            batch, num_anchors, height, width = level_map.shape
            # [N, 1, H, W] -> [N, A, H, W] -> [N, A*H*W], the anchor-major prior order.
            per_anchor = cell_weights.to(level_map.device).expand(batch, num_anchors, -1, -1)
            flat.append(per_anchor.reshape(batch, -1))
        return torch.cat(flat, dim=1)

    def _temperature(self, temperature: Optional[float]) -> float:
        return self.temperature if temperature is None else validate_temperature(temperature)


@MODELS.register_module()
class YOLOv5ClsDistillLoss(YOLOv5HeadDistillLoss):
    """Distill the class scores of a YOLOv5 head.

    Args:
        mode: ``'sigmoid'`` matches each class as an independent Bernoulli, the way YOLOv5
            scores classes; ``'softmax'`` matches the distribution over the K classes of each
            prior with a softmax KL divergence.
        **kwargs: See :class:`YOLOv5HeadDistillLoss`.
    """

    def __init__(self, mode: str = 'sigmoid', **kwargs):
        super().__init__(**kwargs)
        if mode not in ('sigmoid', 'softmax'):
            raise ValueError(f"mode must be 'sigmoid' or 'softmax', got {mode!r}")
        self.mode = mode

    def forward(
        self,
        student_outputs: HeadOutputs,
        teacher_outputs: HeadOutputs,
        temperature: Optional[float] = None,
        context: Optional[DistillContext] = None,
    ) -> torch.Tensor:
        """Return the weighted loss, a float32 scalar.

        Args:
            student_outputs: The student head's ``(cls_scores, bbox_preds, objectnesses)``.
            teacher_outputs: The teacher head's outputs, shaped like the student's.
            temperature: Overrides ``self.temperature`` for this call (used by schedules).
            context: Batch context; required when ``region`` is set.
        """
        temperature = self._temperature(temperature)
        num_classes = student_outputs[0][0].shape[1] // student_outputs[2][0].shape[1]
        with torch.autocast(device_type=student_outputs[0][0].device.type, enabled=False):
            student_logits, teacher_logits, weights = self._prepare(
                student_outputs, teacher_outputs, part=0, width=num_classes, context=context
            )
            student_logits = student_logits / temperature
            teacher_logits = teacher_logits / temperature
            if self.mode == 'sigmoid':
                # [N, P, K] -> [N, P]: mean over classes keeps the scale independent of K.
                per_prior = binary_kl_with_logits(student_logits, teacher_logits).mean(dim=-1)
            else:
                per_prior = softmax_kl_with_logits(student_logits, teacher_logits, dim=-1)
            loss = weighted_prior_mean(per_prior, weights) * temperature**2
        return self.loss_weight * self._batch_scale(student_outputs) * loss

    def extra_repr(self) -> str:
        return f'{super().extra_repr()}, mode={self.mode!r}'


@MODELS.register_module()
class YOLOv5ObjDistillLoss(YOLOv5HeadDistillLoss):
    """Distill the objectness of a YOLOv5 head, averaged over all priors.

    Objectness is what tells objects from background, so every prior counts the same here:
    the default ``weight_by_teacher_objectness`` is False.
    """

    def __init__(self, weight_by_teacher_objectness: bool = False, **kwargs):
        super().__init__(weight_by_teacher_objectness=weight_by_teacher_objectness, **kwargs)

    def forward(
        self,
        student_outputs: HeadOutputs,
        teacher_outputs: HeadOutputs,
        temperature: Optional[float] = None,
        context: Optional[DistillContext] = None,
    ) -> torch.Tensor:
        """Return the weighted loss, a float32 scalar (arguments as in the class loss)."""
        temperature = self._temperature(temperature)
        with torch.autocast(device_type=student_outputs[2][0].device.type, enabled=False):
            student_logits, teacher_logits, weights = self._prepare(
                student_outputs, teacher_outputs, part=2, width=1, context=context
            )
            per_prior = binary_kl_with_logits(
                student_logits[..., 0] / temperature, teacher_logits[..., 0] / temperature
            )
            loss = weighted_prior_mean(per_prior, weights) * temperature**2
        return self.loss_weight * self._batch_scale(student_outputs) * loss


@MODELS.register_module()
class YOLOv5BBoxDistillLoss(YOLOv5HeadDistillLoss):
    """Distill the box regression of a YOLOv5 head.

    YOLOv5 decodes each of its four box outputs through a sigmoid (centre offset
    ``2 * sigmoid - 0.5``, size ``(2 * sigmoid)^2 * anchor``), so each output is matched like a
    Bernoulli probability: KL between sigmoid(b_t / T) and sigmoid(b_s / T), times T^2, averaged
    over the four outputs and weighted by the teacher's objectness.
    """

    def forward(
        self,
        student_outputs: HeadOutputs,
        teacher_outputs: HeadOutputs,
        temperature: Optional[float] = None,
        context: Optional[DistillContext] = None,
    ) -> torch.Tensor:
        """Return the weighted loss, a float32 scalar (arguments as in the class loss)."""
        temperature = self._temperature(temperature)
        with torch.autocast(device_type=student_outputs[1][0].device.type, enabled=False):
            student_logits, teacher_logits, weights = self._prepare(
                student_outputs, teacher_outputs, part=1, width=4, context=context
            )
            per_prior = binary_kl_with_logits(
                student_logits / temperature, teacher_logits / temperature
            ).mean(dim=-1)
            loss = weighted_prior_mean(per_prior, weights) * temperature**2
        return self.loss_weight * self._batch_scale(student_outputs) * loss


__all__: List[str] = [
    'YOLOv5HeadDistillLoss',
    'YOLOv5ClsDistillLoss',
    'YOLOv5ObjDistillLoss',
    'YOLOv5BBoxDistillLoss',
    'flatten_priors',
]
