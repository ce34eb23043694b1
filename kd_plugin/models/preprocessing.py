"""Conversion of the student's preprocessed inputs into the teacher's normalisation."""

from typing import Any, List, Optional, Tuple, Union

import torch
import torch.nn as nn


def _normalization(
    preprocessor: nn.Module,
) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """Return the (mean, std) vectors [3] of an MMEngine ImgDataPreprocessor, or Nones."""
    if not getattr(preprocessor, '_enable_normalize', False):
        return None, None
    return preprocessor.mean.flatten(), preprocessor.std.flatten()


def _same(first: Optional[torch.Tensor], second: Optional[torch.Tensor]) -> bool:
    if first is None or second is None:
        return first is None and second is None
    return torch.equal(first.cpu(), second.cpu())


class TeacherInputConverter:
    """Turn batches preprocessed for the student into batches preprocessed for the teacher.

    Both models read the student's padded batch. When the teacher's data preprocessor uses
    another mean, std or channel order (``bgr_to_rgb``/``rgb_to_bgr``), each batch is mapped
    back to raw pixel values with the student's settings and normalised again with the
    teacher's. The result is the tensor the teacher's own preprocessor makes from the images.

    Padding: the batch keeps the student's padded size, because both models must see the same
    cells. A teacher with another ``pad_size_divisor`` therefore reads the student's padding,
    which is fine for any divisor of the student's (the padded size is a multiple of it). For
    MMDetection data samples (a list with ``img_shape`` in the metainfo), padding was added after
    normalisation, so the padded cells are set to the teacher's ``pad_value``. MMYOLO's fast
    collate pads raw images in the pipeline, before normalisation, and needs no fix.

    NOTE: the teacher preprocessor's ``batch_augments`` are not applied, the student's are.

    Args:
        student_preprocessor: The student's data preprocessor.
        teacher_preprocessor: The teacher's data preprocessor.
    """

    def __init__(self, student_preprocessor: nn.Module, teacher_preprocessor: nn.Module):
        self.student_preprocessor = student_preprocessor
        self.teacher_preprocessor = teacher_preprocessor
        student_mean, student_std = _normalization(student_preprocessor)
        teacher_mean, teacher_std = _normalization(teacher_preprocessor)
        # MMEngine's ImgDataPreprocessor sets _channel_conversion for bgr_to_rgb or rgb_to_bgr;
        # both reverse the channels, so only whether each model reverses them matters.
        self.reverse_channels = bool(
            getattr(student_preprocessor, '_channel_conversion', False)
        ) != bool(getattr(teacher_preprocessor, '_channel_conversion', False))
        self.needed = self.reverse_channels or not (
            _same(student_mean, teacher_mean) and _same(student_std, teacher_std)
        )

    def describe(self) -> str:
        """Return a one-line description of the conversion for the set-up log."""
        if not self.needed:
            return 'teacher reads the student inputs unchanged'

        def settings(preprocessor: nn.Module) -> str:
            mean, std = _normalization(preprocessor)
            mean = None if mean is None else [round(v, 3) for v in mean.tolist()]
            std = None if std is None else [round(v, 3) for v in std.tolist()]
            channels = bool(getattr(preprocessor, '_channel_conversion', False))
            return f'mean {mean}, std {std}, reverse channels {channels}'

        return (
            f'teacher inputs renormalised from the student ({settings(self.student_preprocessor)}) '
            f'to the teacher ({settings(self.teacher_preprocessor)})'
        )

    def __call__(
        self, inputs: torch.Tensor, data_samples: Optional[Union[dict, List[Any]]] = None
    ) -> torch.Tensor:
        """Return the teacher's version [N, 3, H, W] of the student's inputs [N, 3, H, W]."""
        if not self.needed or inputs.shape[1] != 3:
            return inputs

        # Undo the student's normalisation: raw pixels in the student's channel order.
        student_mean, student_std = _normalization(self.student_preprocessor)
        raw = inputs
        if student_mean is not None:
            raw = inputs * student_std.view(1, 3, 1, 1) + student_mean.view(1, 3, 1, 1)
        if self.reverse_channels:
            raw = raw.flip(1)

        teacher_mean, teacher_std = _normalization(self.teacher_preprocessor)
        teacher_inputs = raw
        if teacher_mean is not None:
            teacher_inputs = (raw - teacher_mean.view(1, 3, 1, 1)) / teacher_std.view(1, 3, 1, 1)

        if isinstance(data_samples, (list, tuple)):
            self._fill_padding(teacher_inputs, data_samples)
        return teacher_inputs

    def _fill_padding(self, teacher_inputs: torch.Tensor, data_samples: List[Any]) -> None:
        pad_value = float(getattr(self.teacher_preprocessor, 'pad_value', 0))
        for image, sample in zip(teacher_inputs, data_samples):
            img_shape = getattr(sample, 'metainfo', {}).get('img_shape')
            if img_shape is None:
                continue
            height, width = int(img_shape[0]), int(img_shape[1])
            image[:, height:, :] = pad_value
            image[:, :, width:] = pad_value
