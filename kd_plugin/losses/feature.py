"""Distillation of intermediate feature maps, such as the neck outputs of a detector.

Shapes used in this module: N images, L feature levels, C channels and H x W cells per level.
The recorded output of the feature module is a tuple or list of L maps [N, C, H, W], or one map.

One loss entry covers every level. Its value is the mean over levels of
``level_weights[l] * loss_l``, and each ``loss_l`` is normalised so that it does not change when
both feature maps are upsampled (same values at twice the height and width). Where the student's
and teacher's channels or sizes differ, a connector maps the student's map to the teacher's
shape first (``connector='auto'`` builds them from a shape probe at build time).
"""

import math
from typing import Any, List, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..registry import MODELS
from .base import DistillContext, DistillLoss, softmax_kl_with_logits, validate_temperature
from .regions import RegionWeighting, weighted_mean

FeatureOutputs = Union[torch.Tensor, Sequence[torch.Tensor]]


def feature_levels(outputs: FeatureOutputs, role: str) -> List[torch.Tensor]:
    """Return the recorded feature output as a list of [N, C, H, W] maps."""
    levels = [outputs] if isinstance(outputs, torch.Tensor) else outputs
    if not isinstance(levels, (tuple, list)) or not all(
        isinstance(level, torch.Tensor) and level.dim() == 4 for level in levels
    ):
        raise TypeError(
            f'the {role} feature output must be a [N, C, H, W] tensor or a tuple/list of them, '
            f'got {type(outputs).__name__}; point student_module/teacher_module at a feature '
            "module such as 'neck' or 'backbone'"
        )
    return list(levels)


def select_levels(
    levels: List[torch.Tensor], indices: Optional[List[int]], role: str, name: str
) -> List[torch.Tensor]:
    """Return the maps at ``indices`` in that order, or all maps when ``indices`` is None."""
    if indices is None:
        return levels
    invalid = [index for index in indices if not -len(levels) <= index < len(levels)]
    if invalid:
        raise ValueError(
            f'{name}: {role}_levels {indices} selects levels {invalid}, but the {role} module '
            f'outputs {len(levels)} levels (indices 0 to {len(levels) - 1})'
        )
    return [levels[index] for index in indices]


def check_level_indices(indices: Optional[Sequence[int]], role: str) -> Optional[List[int]]:
    if indices is None:
        return None
    if (
        not isinstance(indices, (list, tuple))
        or not indices
        or not all(isinstance(index, int) and not isinstance(index, bool) for index in indices)
    ):
        raise ValueError(
            f'{role}_levels must be a non-empty list of level indices such as (0, 1, 2), '
            f'got {indices!r}'
        )
    return list(indices)


def check_level_counts(student_levels: List[Any], teacher_levels: List[Any], name: str) -> None:
    if len(student_levels) != len(teacher_levels):
        raise ValueError(
            f'{name}: the student module outputs {len(student_levels)} feature levels and the '
            f'teacher module {len(teacher_levels)}; distill modules with the same number of '
            'levels, or pair levels with student_levels and teacher_levels'
        )


class FeatureDistillLoss(DistillLoss):
    """Shared level handling, connectors and region weighting of the feature losses.

    Args:
        connector: How student maps reach the teacher's shape. None: they must already match,
            otherwise the loss raises ValueError. ``'auto'``: a :class:`ConvConnector` on each
            level whose channels or size differ, identity elsewhere. A dict such as
            ``dict(type='ConvConnector', norm_cfg=dict(type='GN', num_groups=8))``: that
            connector on every level, with ``in_channels`` and ``out_channels`` filled in.
            Connectors are built from a shape probe when the distiller is built.
        region: Region weighting config, see :class:`RegionWeighting`; None weighs every cell
            the same.
        level_weights: One factor >= 0 per level on the level's loss; None means all 1.
        student_levels: Indices of the student's levels to distill, in pairing order; None
            takes all of them.
        teacher_levels: Indices of the teacher's levels, paired one to one with the student's.
            For example ``(0, 1, 2)`` pairs the P3-P5 of a YOLO student with the first three
            levels of a RetinaNet teacher's P3-P7.
        **kwargs: ``loss_weight``, ``temperature``, ``student_module`` and ``teacher_module``
            of :class:`DistillLoss`. The modules default to ``'neck'``.
    """

    def __init__(
        self,
        connector: Optional[Union[str, dict]] = None,
        region: Optional[dict] = None,
        level_weights: Optional[Sequence[float]] = None,
        student_levels: Optional[Sequence[int]] = None,
        teacher_levels: Optional[Sequence[int]] = None,
        student_module: str = 'neck',
        teacher_module: str = 'neck',
        **kwargs,
    ):
        super().__init__(student_module=student_module, teacher_module=teacher_module, **kwargs)
        if not (connector is None or connector == 'auto' or isinstance(connector, dict)):
            raise ValueError(
                "connector must be None, 'auto' or a connector config dict such as "
                f"dict(type='ConvConnector'), got {connector!r}"
            )
        if isinstance(connector, dict) and 'type' not in connector:
            raise ValueError(f'connector config needs a "type", got {connector!r}')
        self.connector_cfg = dict(connector) if isinstance(connector, dict) else connector
        self.region = RegionWeighting.from_config(region)
        self.level_weights = self._check_level_weights(level_weights)
        self.student_level_indices = check_level_indices(student_levels, 'student')
        self.teacher_level_indices = check_level_indices(teacher_levels, 'teacher')
        # Level index (as str) -> connector; levels without an entry compare maps directly.
        self.connectors = nn.ModuleDict()
        self._connectors_built = False

    @staticmethod
    def _check_level_weights(level_weights: Optional[Sequence[float]]) -> Optional[List[float]]:
        if level_weights is None:
            return None
        if not isinstance(level_weights, (list, tuple)) or not all(
            isinstance(weight, (int, float))
            and not isinstance(weight, bool)
            and math.isfinite(weight)
            and weight >= 0
            for weight in level_weights
        ):
            raise ValueError(
                f'level_weights must be a list of numbers >= 0, one per level, got '
                f'{level_weights!r}'
            )
        return [float(weight) for weight in level_weights]

    @property
    def needs_output_shapes(self) -> bool:
        return self.connector_cfg is not None

    def configure_from_outputs(self, student_outputs: Any, teacher_outputs: Any) -> None:
        """Build the connectors for the level shapes of a probe batch."""
        if self.connector_cfg is None:
            return
        student_levels, teacher_levels = self._paired_levels(student_outputs, teacher_outputs)
        self.connectors = nn.ModuleDict()
        for level, (student_map, teacher_map) in enumerate(zip(student_levels, teacher_levels)):
            same_shape = student_map.shape[1:] == teacher_map.shape[1:]
            if self.connector_cfg == 'auto' and same_shape:
                continue
            cfg = dict(type='ConvConnector') if self.connector_cfg == 'auto' else self.connector_cfg
            cfg = dict(cfg)
            cfg.setdefault('in_channels', int(student_map.shape[1]))
            cfg.setdefault('out_channels', int(teacher_map.shape[1]))
            cfg.setdefault('_scope_', 'kd_plugin')
            self.connectors[str(level)] = MODELS.build(cfg).to(student_map.device)
        self._connectors_built = True

    def forward(
        self,
        student_outputs: FeatureOutputs,
        teacher_outputs: FeatureOutputs,
        temperature: Optional[float] = None,
        context: Optional[DistillContext] = None,
    ) -> torch.Tensor:
        """Return the weighted loss over all levels, a float32 scalar.

        Args:
            student_outputs: The student module's maps, one [N, C_s, H_s, W_s] per level.
            teacher_outputs: The teacher module's maps, one [N, C_t, H_t, W_t] per level.
            temperature: Overrides ``self.temperature`` for this call (used by schedules).
            context: Batch context; required when ``region`` is set.
        """
        name = type(self).__name__
        if self.connector_cfg is not None and not self._connectors_built:
            raise ValueError(
                f'{name} with connector={self.connector_cfg!r} has no connectors yet: they are '
                'built by DetectionDistiller from a shape probe, or by configure_from_outputs'
            )
        temperature = self.temperature if temperature is None else validate_temperature(temperature)
        student_levels, teacher_levels = self._paired_levels(student_outputs, teacher_outputs)
        teacher_levels = [level.detach() for level in teacher_levels]
        num_levels = len(teacher_levels)
        level_weights = self.level_weights or [1.0] * num_levels
        if len(level_weights) != num_levels:
            raise ValueError(
                f'{name}: level_weights has {len(level_weights)} entries for {num_levels} '
                'feature levels'
            )

        # Connectors run in the caller's precision; the loss itself in float32.
        student_levels = [
            self._connect(level, student_map, teacher_map)
            for level, (student_map, teacher_map) in enumerate(zip(student_levels, teacher_levels))
        ]
        region_weights: List[Optional[torch.Tensor]] = [None] * num_levels
        if self.region is not None:
            sizes = [tuple(teacher_map.shape[-2:]) for teacher_map in teacher_levels]
            region_weights = [
                weights.to(teacher_levels[0].device)
                for weights in self.region.weight_maps(sizes, context)
            ]
        with torch.autocast(device_type=teacher_levels[0].device.type, enabled=False):
            total = teacher_levels[0].new_zeros((), dtype=torch.float32)
            for student_map, teacher_map, weights, level_weight in zip(
                student_levels, teacher_levels, region_weights, level_weights
            ):
                level_loss = self.level_loss(
                    student_map.float(), teacher_map.float(), temperature, weights
                )
                total = total + level_weight * level_loss
        return self.loss_weight * total / num_levels

    def _paired_levels(self, student_outputs: FeatureOutputs, teacher_outputs: FeatureOutputs):
        """Return the selected student and teacher maps, checked to pair one to one."""
        name = type(self).__name__
        student_levels = feature_levels(student_outputs, 'student')
        teacher_levels = feature_levels(teacher_outputs, 'teacher')
        student_levels = select_levels(student_levels, self.student_level_indices, 'student', name)
        teacher_levels = select_levels(teacher_levels, self.teacher_level_indices, 'teacher', name)
        check_level_counts(student_levels, teacher_levels, name)
        return student_levels, teacher_levels

    def _connect(
        self, level: int, student_map: torch.Tensor, teacher_map: torch.Tensor
    ) -> torch.Tensor:
        connector = self.connectors[str(level)] if str(level) in self.connectors else None
        if connector is not None:
            student_map = connector(student_map, size=tuple(teacher_map.shape[-2:]))
        if student_map.shape != teacher_map.shape:
            mapped = ' after its connector' if connector is not None else ''
            raise ValueError(
                f'{type(self).__name__} level {level}: student feature shape '
                f'{tuple(student_map.shape)}{mapped} differs from teacher feature shape '
                f"{tuple(teacher_map.shape)}; set connector='auto' or give a connector config "
                "such as dict(type='ConvConnector') to map the student's features"
            )
        return student_map

    def level_loss(
        self,
        student_map: torch.Tensor,
        teacher_map: torch.Tensor,
        temperature: float,
        weights: Optional[torch.Tensor],
    ) -> torch.Tensor:
        """Return the loss of one level from float32 maps [N, C, H, W] and weights [N, 1, H, W]."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return (
            f'{super().extra_repr()}, connector={self.connector_cfg!r}, region={self.region!r}, '
            f'level_weights={self.level_weights}, student_levels={self.student_level_indices}, '
            f'teacher_levels={self.teacher_level_indices}'
        )


@MODELS.register_module()
class ChannelWiseDistillLoss(FeatureDistillLoss):
    """Channel-wise distillation (CWD) of feature maps.

    Each channel of each image becomes a distribution over its H x W cells, softmax(map / T), and
    the loss is KL(teacher || student) summed over cells, times T^2, averaged over channels and
    images. A distribution sums to 1 whatever its size, so the value does not scale with H x W.

    With ``region``, each channel's distribution is restricted to and reweighted by the region
    weights: softmax(map / T + log w) over the cells with w > 0. The KL of those distributions is
    still a divergence (>= 0, zero when the maps agree on the region). Images without any
    weighted cell are left out of the image mean; a batch without any gives 0.
    """

    def level_loss(
        self,
        student_map: torch.Tensor,
        teacher_map: torch.Tensor,
        temperature: float,
        weights: Optional[torch.Tensor],
    ) -> torch.Tensor:
        batch, channels, height, width = student_map.shape
        # [N, C, H, W] -> [N, C, H*W]: one distribution over cells per channel.
        student_logits = student_map.reshape(batch, channels, height * width) / temperature
        teacher_logits = teacher_map.reshape(batch, channels, height * width) / temperature
        if weights is None:
            kl = softmax_kl_with_logits(student_logits, teacher_logits, dim=-1)  # [N, C]
            return kl.mean() * temperature**2

        # [N, 1, H, W] -> [N, 1, H*W]. Images without weight get w = 1 here so that no softmax
        # runs over nothing (NaN), and are masked out of the mean below.
        cell_weights = weights.reshape(batch, 1, height * width)
        image_has_weight = cell_weights.sum(dim=-1) > 0  # [N, 1]
        cell_weights = torch.where(image_has_weight[..., None], cell_weights, 1.0)
        in_region = cell_weights > 0
        # log(0) is replaced by a large finite negative value, which keeps gradients finite.
        log_weights = torch.where(
            in_region, cell_weights.clamp(min=1e-30).log(), torch.finfo(torch.float32).min / 4
        )
        teacher_log_probs = F.log_softmax(teacher_logits + log_weights, dim=-1)
        student_log_probs = F.log_softmax(student_logits + log_weights, dim=-1)
        terms = teacher_log_probs.exp() * (teacher_log_probs - student_log_probs)
        kl = torch.where(in_region, terms, 0.0).sum(dim=-1)  # [N, C]
        per_image = kl.mean(dim=1, keepdim=True)  # [N, 1]
        image_weights = image_has_weight.float()
        loss = (per_image * image_weights).sum() / image_weights.sum().clamp(min=1.0)
        return loss * temperature**2


@MODELS.register_module()
class NormalizedMSEDistillLoss(FeatureDistillLoss):
    """Mean squared error between channel-standardised feature maps (Pearson-style).

    Each channel of each image is standardised over its H x W cells to mean 0 and standard
    deviation 1, (x - mean) / sqrt(var + eps). Pearson-correlation distillation (PKD) is similar
    but standardises over N x H x W and halves the MSE, so its weights are twice these. For
    eps near 0 the MSE of the standardised maps is 2 * (1 - r), with r the Pearson correlation of
    the two channels, so the loss ignores the scale and offset of each channel. It has no temperature:
    ``temperature`` is accepted and ignored.

    Args:
        eps: Added to the variance before the square root, > 0. A constant channel
            standardises to 0.
        **kwargs: See :class:`FeatureDistillLoss`.
    """

    def __init__(self, eps: float = 1e-5, **kwargs):
        super().__init__(**kwargs)
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
            raise ValueError(f'eps must be a number > 0, got {eps!r}')
        self.eps = float(eps)

    def _standardize(self, feature_map: torch.Tensor) -> torch.Tensor:
        mean = feature_map.mean(dim=(2, 3), keepdim=True)
        var = feature_map.var(dim=(2, 3), unbiased=False, keepdim=True)
        return (feature_map - mean) / torch.sqrt(var + self.eps)

    def level_loss(
        self,
        student_map: torch.Tensor,
        teacher_map: torch.Tensor,
        temperature: float,
        weights: Optional[torch.Tensor],
    ) -> torch.Tensor:
        squared_error = (self._standardize(student_map) - self._standardize(teacher_map)) ** 2
        # [N, C, H, W] -> [N, 1, H, W]: mean over channels, then the weighted mean over cells.
        return weighted_mean(squared_error.mean(dim=1, keepdim=True), weights)


__all__ = [
    'FeatureDistillLoss',
    'ChannelWiseDistillLoss',
    'NormalizedMSEDistillLoss',
    'feature_levels',
]
