"""Base class of distillation losses, their batch context and the shared divergences."""

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F


def validate_temperature(temperature: Any, name: str = 'temperature') -> float:
    """Return ``temperature`` as a float, or raise ValueError unless it is finite and > 0."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise TypeError(f'{name} must be a number > 0, got {temperature!r}')
    if not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(
            f'{name} must be a finite number > 0, got {temperature}; 1 leaves the teacher '
            'unsoftened and distillation studies commonly use 1 to 16'
        )
    return float(temperature)


def binary_kl_with_logits(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor
) -> torch.Tensor:
    """Elementwise KL(Bernoulli(sigmoid(teacher)) || Bernoulli(sigmoid(student))).

    Computed from log-sigmoids, so it is finite for any logits and exactly zero where the two
    logits are equal.
    """
    teacher_probs = torch.sigmoid(teacher_logits)
    positive = F.logsigmoid(teacher_logits) - F.logsigmoid(student_logits)
    negative = F.logsigmoid(-teacher_logits) - F.logsigmoid(-student_logits)
    return teacher_probs * positive + (1 - teacher_probs) * negative


def softmax_kl_with_logits(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, dim: int = -1
) -> torch.Tensor:
    """KL(softmax(teacher) || softmax(student)) along ``dim``, which is reduced away."""
    teacher_log_probs = F.log_softmax(teacher_logits, dim=dim)
    student_log_probs = F.log_softmax(student_logits, dim=dim)
    return (teacher_log_probs.exp() * (teacher_log_probs - student_log_probs)).sum(dim=dim)


@dataclass
class DistillContext:
    """Batch information a distillation loss may need besides the two recorded outputs.

    The distiller builds it once per batch, only when some loss sets ``needs_context``.

    Attributes:
        batch_input_shape: Height and width in pixels of the padded input batch [N, 3, H, W].
        gt_bboxes: Per image, the ground-truth boxes [K_i, 4] as (x1, y1, x2, y2) in input
            pixels. Images without boxes have a [0, 4] tensor.
        teacher_outputs: Every output recorded in the teacher for this batch, by module path
            (``'neck'``, ``'bbox_head'``, ...).
    """

    batch_input_shape: Tuple[int, int]
    gt_bboxes: List[torch.Tensor]
    teacher_outputs: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_batch(
        cls,
        inputs: torch.Tensor,
        data_samples: Optional[Union[dict, Sequence[Any]]],
        teacher_outputs: Optional[Dict[str, Any]] = None,
    ) -> 'DistillContext':
        """Build the context of a preprocessed batch.

        Args:
            inputs: Preprocessed, padded images [N, 3, H, W].
            data_samples: The data samples the student's data preprocessor returned: MMYOLO's
                fast-collate dict with ``bboxes_labels`` [M, 6] rows of (image index, class,
                x1, y1, x2, y2), or a list of N MMDetection ``DetDataSample`` with
                ``gt_instances.bboxes``. None gives every image an empty box tensor.
            teacher_outputs: Recorded teacher outputs by module path.
        """
        num_images = inputs.shape[0]
        return cls(
            batch_input_shape=(int(inputs.shape[-2]), int(inputs.shape[-1])),
            gt_bboxes=gt_bboxes_per_image(data_samples, num_images, inputs.device),
            teacher_outputs=dict(teacher_outputs or {}),
        )


def gt_bboxes_per_image(
    data_samples: Optional[Union[dict, Sequence[Any]]], num_images: int, device: torch.device
) -> List[torch.Tensor]:
    """Return the ground-truth boxes of each image, [K_i, 4] xyxy float32 tensors."""
    if data_samples is None:
        return [torch.zeros(0, 4, device=device) for _ in range(num_images)]

    if isinstance(data_samples, dict):
        if 'bboxes_labels' not in data_samples:
            raise ValueError(
                'data_samples is a dict without "bboxes_labels"; expected MMYOLO fast-collate '
                f'samples, got keys {sorted(data_samples)}'
            )
        rows = data_samples['bboxes_labels']
        if rows.dim() != 2 or rows.shape[1] != 6:
            raise ValueError(
                'bboxes_labels must be [M, 6] rows of (image index, class, x1, y1, x2, y2), '
                f'got shape {tuple(rows.shape)}'
            )
        image_index = rows[:, 0].long()
        return [rows[image_index == i, 2:6].float().to(device) for i in range(num_images)]

    if len(data_samples) != num_images:
        raise ValueError(f'got {len(data_samples)} data samples for {num_images} images')
    gt_bboxes = []
    for sample in data_samples:
        bboxes = sample.gt_instances.bboxes
        # MMDetection 3 wraps boxes in HorizontalBoxes when `box_type` is set in the pipeline.
        bboxes = getattr(bboxes, 'tensor', bboxes)
        gt_bboxes.append(bboxes.float().reshape(-1, 4).to(device))
    return gt_bboxes


class DistillLoss(nn.Module):
    """A loss between outputs the student and the teacher produce at named submodules.

    The distiller records the forward output of ``student_module`` in the student and of
    ``teacher_module`` in the teacher (dotted paths such as ``'bbox_head'`` or ``'neck'``), and
    calls :meth:`forward` with the two outputs and the current temperature.

    A loss that needs more than the two outputs sets ``needs_context``; the distiller then
    passes a :class:`DistillContext` and also records the teacher modules that
    :meth:`context_teacher_modules` lists. A loss that sets ``needs_output_shapes`` is shown
    both outputs of a dummy batch once at build time, through :meth:`configure_from_outputs`,
    for example to build connectors that fit them.

    Args:
        loss_weight: Factor on the returned loss, >= 0.
        temperature: Softening temperature, > 0. The distiller fills it in from its own
            ``temperature`` when a loss config leaves it out. Losses without a temperature
            ignore it.
        student_module: Path of the student submodule whose output the loss reads.
        teacher_module: Path of the teacher submodule whose output the loss reads.
    """

    def __init__(
        self,
        loss_weight: float = 1.0,
        temperature: float = 1.0,
        student_module: str = 'bbox_head',
        teacher_module: str = 'bbox_head',
    ):
        super().__init__()
        if not isinstance(loss_weight, (int, float)) or not loss_weight >= 0:
            raise ValueError(f'loss_weight must be a number >= 0, got {loss_weight!r}')
        self.loss_weight = float(loss_weight)
        self.temperature = validate_temperature(temperature)
        self.student_module = student_module
        self.teacher_module = teacher_module
        # A RegionWeighting set by subclasses that accept a ``region`` config; it needs the
        # context and may record extra teacher modules.
        self.region = None

    @property
    def needs_context(self) -> bool:
        """Whether :meth:`forward` needs a :class:`DistillContext`."""
        return self.region is not None

    @property
    def needs_output_shapes(self) -> bool:
        """Whether the distiller must call :meth:`configure_from_outputs` at build time."""
        return False

    def context_teacher_modules(self) -> List[str]:
        """Paths of teacher submodules, besides ``teacher_module``, whose outputs to record."""
        return self.region.teacher_modules() if self.region is not None else []

    def check_modules(self, student_module: nn.Module, teacher_module: nn.Module) -> None:
        """Raise ValueError if the two recorded modules cannot be compared by this loss."""

    def configure_from_outputs(self, student_outputs: Any, teacher_outputs: Any) -> None:
        """Adapt the loss to the outputs both models give for a dummy batch (no gradients)."""

    def forward(
        self,
        student_outputs: Any,
        teacher_outputs: Any,
        temperature: Optional[float] = None,
        context: Optional[DistillContext] = None,
    ) -> torch.Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return (
            f'loss_weight={self.loss_weight}, temperature={self.temperature}, '
            f'student_module={self.student_module!r}, teacher_module={self.teacher_module!r}'
        )
