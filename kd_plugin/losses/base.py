"""Base class of distillation losses and the shared temperature-scaled divergences."""

import math
from typing import Any, Optional

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


class DistillLoss(nn.Module):
    """A loss between outputs the student and the teacher produce at named submodules.

    The distiller records the forward output of ``student_module`` in the student and of
    ``teacher_module`` in the teacher (dotted paths such as ``'bbox_head'`` or ``'neck'``), and
    calls :meth:`forward` with the two outputs and the current temperature.

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

    def check_modules(self, student_module: nn.Module, teacher_module: nn.Module) -> None:
        """Raise ValueError if the two recorded modules cannot be compared by this loss."""

    def forward(
        self, student_outputs: Any, teacher_outputs: Any, temperature: Optional[float] = None
    ) -> torch.Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return (
            f'loss_weight={self.loss_weight}, temperature={self.temperature}, '
            f'student_module={self.student_module!r}, teacher_module={self.teacher_module!r}'
        )
