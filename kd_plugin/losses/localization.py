"""Localization distillation of heads that predict a distribution over each box edge.

Shapes used in this module: N images, L levels with H x W cells each, B bins per box edge and
P = sum_l H_l * W_l positions per image. Box edges are (left, top, right, bottom) distances.

Supported heads and where their edge distributions (logits over B bins) come from:

- MMDetection's ``GFLHead`` (and subclasses such as ``LDHead``): ``forward`` returns
  ``(cls_scores, bbox_preds)``; ``bbox_preds[l]`` is [N, 4 * B, H, W] with B = reg_max + 1,
  edge-major (channel = edge * B + bin), as ``GFLHead.loss_by_feat_single`` reshapes it.
- MMYOLO's ``YOLOv8Head`` (mmyolo 0.6): its head module's ``reg_preds[l]`` gives
  [N, 4 * B, H, W] with B = reg_max (16 by default, bins 0..15), edge-major as well. In training
  mode ``forward`` also returns these logits as ``bbox_dist_preds[l]``, [N, H*W, 4, B]. The
  teacher runs in eval mode, where ``forward`` returns only class scores and decoded boxes, so
  the teacher's logits are recorded at ``reg_preds.<l>`` instead.
"""

from typing import Any, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from ..registry import MODELS
from .base import DistillContext, DistillLoss, softmax_kl_with_logits, validate_temperature
from .regions import RegionWeighting, weighted_mean

HEAD_TYPES = ('auto', 'gfl', 'yolov8')


def _detect_head_type(module: nn.Module) -> Optional[str]:
    from mmdet.models.dense_heads import GFLHead
    from mmyolo.models.dense_heads import YOLOv8Head, YOLOv8HeadModule

    if isinstance(module, GFLHead):
        return 'gfl'
    if isinstance(module, (YOLOv8Head, YOLOv8HeadModule)):
        return 'yolov8'
    return None


def _edge_distributions(level_map: torch.Tensor, num_bins: int, name: str) -> torch.Tensor:
    """Turn an edge-major logit map [N, 4*B, H, W] into [N, H*W, 4, B]."""
    batch, channels, height, width = level_map.shape
    if channels != 4 * num_bins:
        raise ValueError(
            f'{name} has {channels} channels, expected 4 edges x {num_bins} bins = {4 * num_bins}'
        )
    # [N, 4*B, H, W] -> [N, 4, B, H*W] -> [N, H*W, 4, B]
    return level_map.reshape(batch, 4, num_bins, height * width).permute(0, 3, 1, 2)


class _HeadLayout:
    """Location and bin count of one model's edge distributions."""

    def __init__(self, module: nn.Module, path: str, head_type: str, role: str):
        self.head_type = head_type
        self.path = path
        self.dist_paths: List[str] = []
        if head_type == 'gfl':
            reg_max = getattr(module, 'reg_max', None)
            if not isinstance(reg_max, int) or reg_max < 1:
                raise ValueError(
                    f'the {role} head {type(module).__name__} has no int reg_max >= 1, so it is '
                    "not a GFL-style head; set head_type='yolov8' or distill another module"
                )
            self.num_bins = reg_max + 1
            return

        # YOLOv8: either the YOLOv8Head wrapper or its head module may be named.
        head_module, prefix = module, path
        if hasattr(module, 'head_module'):
            head_module, prefix = module.head_module, f'{path}.head_module'
        reg_max = getattr(head_module, 'reg_max', None)
        reg_preds = getattr(head_module, 'reg_preds', None)
        if not isinstance(reg_max, int) or reg_max <= 1 or reg_preds is None:
            raise ValueError(
                f'the {role} head {type(module).__name__} has no reg_preds with reg_max > 1, so '
                'it predicts no edge distributions; localization distillation needs reg_max > 1'
            )
        self.num_bins = reg_max
        self.dist_paths = [f'{prefix}.reg_preds.{level}' for level in range(len(reg_preds))]


@MODELS.register_module()
class LocalizationDistillLoss(DistillLoss):
    """Distill the distribution over each box edge: localization distillation (LD).

    Per position and edge, KL(softmax(teacher / T) || softmax(student / T)) over the B bins,
    times T^2, averaged over the 4 edges and then over all positions of all levels and images.
    With ``region``, the position mean is weighted by the region weights of each position's
    cell (see :class:`RegionWeighting`), computed at the teacher's level sizes.

    Args:
        head_type: ``'auto'`` detects each model's head (``GFLHead`` or ``YOLOv8Head``, see the
            module docstring). ``'gfl'`` or ``'yolov8'`` forces that layout on both heads, for
            a head that is not a subclass of those but has their ``reg_max`` and outputs.
        region: Region weighting config, or None to weigh every position the same.
        **kwargs: ``loss_weight``, ``temperature``, ``student_module`` and ``teacher_module``
            of :class:`DistillLoss`. The modules default to ``'bbox_head'``.
    """

    def __init__(self, head_type: str = 'auto', region: Optional[dict] = None, **kwargs):
        super().__init__(**kwargs)
        if head_type not in HEAD_TYPES:
            raise ValueError(f'head_type must be one of {list(HEAD_TYPES)}, got {head_type!r}')
        self.head_type = head_type
        self.region = RegionWeighting.from_config(region)
        self._layouts: Optional[Tuple[_HeadLayout, _HeadLayout]] = None

    def check_modules(self, student_module: nn.Module, teacher_module: nn.Module) -> None:
        layouts = []
        for module, path, role in (
            (student_module, self.student_module, 'student'),
            (teacher_module, self.teacher_module, 'teacher'),
        ):
            head_type = self.head_type
            if head_type == 'auto':
                head_type = _detect_head_type(module)
            if head_type is None:
                raise ValueError(
                    f'LocalizationDistillLoss supports GFLHead (mmdet) and YOLOv8Head (mmyolo) '
                    f'outputs, but the {role} module {path!r} is {type(module).__name__}; '
                    "for a head with the same outputs set head_type='gfl' or 'yolov8'"
                )
            layouts.append(_HeadLayout(module, path, head_type, role))
        student_layout, teacher_layout = layouts
        if student_layout.num_bins != teacher_layout.num_bins:
            raise ValueError(
                f'student and teacher heads differ in bins per box edge: student '
                f'{student_layout.num_bins}, teacher {teacher_layout.num_bins}; set the same '
                'reg_max (GFLHead has reg_max + 1 bins, YOLOv8Head reg_max)'
            )
        self._layouts = (student_layout, teacher_layout)

    @property
    def needs_context(self) -> bool:
        teacher_reads_context = self._layouts is not None and bool(self._layouts[1].dist_paths)
        return super().needs_context or teacher_reads_context

    def context_teacher_modules(self) -> List[str]:
        paths = super().context_teacher_modules()
        if self._layouts is not None:
            paths += self._layouts[1].dist_paths
        return paths

    def _distributions(
        self, outputs: Any, layout: _HeadLayout, role: str, context: Optional[DistillContext]
    ) -> List[torch.Tensor]:
        """Return the edge logits of every level, [N, H*W, 4, B] each, and check the form."""
        if layout.head_type == 'gfl':
            bbox_preds = outputs[1] if isinstance(outputs, (tuple, list)) else None
            if not isinstance(bbox_preds, (tuple, list)):
                raise ValueError(
                    f'the {role} GFL head output must be (cls_scores, bbox_preds), got '
                    f'{type(outputs).__name__}'
                )
            return [
                _edge_distributions(level_map, layout.num_bins, f'{role} bbox_preds[{level}]')
                for level, level_map in enumerate(bbox_preds)
            ]

        if role == 'student' and isinstance(outputs, (tuple, list)) and len(outputs) == 3:
            # Training-mode YOLOv8 output: bbox_dist_preds[l] is already [N, H*W, 4, B].
            return list(outputs[2])
        if context is None:
            raise ValueError(
                f'the {role} YOLOv8 edge logits are read from the recorded reg_preds outputs, '
                'which come with the batch context; call the loss through DetectionDistiller'
            )
        maps = []
        for path in layout.dist_paths:
            level_map = context.teacher_outputs.get(path) if role == 'teacher' else None
            if level_map is None:
                raise ValueError(
                    f'no recorded {role} output at {path!r}; the {role} YOLOv8 head must be in '
                    'training mode (student) or recorded by DetectionDistiller (teacher)'
                )
            maps.append(_edge_distributions(level_map, layout.num_bins, f'{role} {path}'))
        return maps

    @staticmethod
    def _level_sizes(outputs: Any) -> List[Tuple[int, int]]:
        # Both head types return class score maps [N, K, H, W] first.
        return [tuple(level_map.shape[-2:]) for level_map in outputs[0]]

    def forward(
        self,
        student_outputs: Sequence[Any],
        teacher_outputs: Sequence[Any],
        temperature: Optional[float] = None,
        context: Optional[DistillContext] = None,
    ) -> torch.Tensor:
        """Return the weighted loss, a float32 scalar.

        Args:
            student_outputs: The student head's forward output (see the module docstring).
            teacher_outputs: The teacher head's forward output.
            temperature: Overrides ``self.temperature`` for this call (used by schedules).
            context: Batch context; required with ``region`` or a YOLOv8 teacher.
        """
        if self._layouts is None:
            raise ValueError(
                'LocalizationDistillLoss has not seen its heads yet; DetectionDistiller calls '
                'check_modules(student_head, teacher_head) when it builds the loss'
            )
        temperature = self.temperature if temperature is None else validate_temperature(temperature)
        student_layout, teacher_layout = self._layouts
        student_levels = self._distributions(student_outputs, student_layout, 'student', context)
        teacher_levels = self._distributions(teacher_outputs, teacher_layout, 'teacher', context)
        sizes = self._level_sizes(teacher_outputs)
        if len(student_levels) != len(teacher_levels):
            raise ValueError(
                f'student head has {len(student_levels)} levels, teacher head '
                f'{len(teacher_levels)}; distill heads with the same strides'
            )
        for level, (student_map, teacher_map) in enumerate(zip(student_levels, teacher_levels)):
            if student_map.shape != teacher_map.shape:
                raise ValueError(
                    f'level {level}: student edge logits {tuple(student_map.shape)} differ from '
                    f'teacher edge logits {tuple(teacher_map.shape)} ([N, H*W, 4, bins]); the '
                    'heads need the same strides and reg_max'
                )

        with torch.autocast(device_type=student_levels[0].device.type, enabled=False):
            # [N, P, 4, B] for all levels, and the KL per position averaged over edges: [N, P].
            student_logits = torch.cat(student_levels, dim=1).float() / temperature
            teacher_logits = torch.cat(teacher_levels, dim=1).detach().float() / temperature
            per_position = softmax_kl_with_logits(student_logits, teacher_logits, dim=-1)
            per_position = per_position.mean(dim=-1)
            weights = None
            if self.region is not None:
                # [N, 1, H, W] per level -> [N, P]
                weights = torch.cat(
                    [level.flatten(1) for level in self.region.weight_maps(sizes, context)], dim=1
                ).to(per_position.device)
            loss = weighted_mean(per_position, weights) * temperature**2
        return self.loss_weight * loss

    def extra_repr(self) -> str:
        return f'{super().extra_repr()}, head_type={self.head_type!r}, region={self.region!r}'
