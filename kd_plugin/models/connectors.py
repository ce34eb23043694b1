"""Connectors: small trainable layers that map student features to the teacher's shape."""

from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import build_norm_layer

from ..registry import MODELS

# Default normalisation of ConvConnector; never modified (build_norm_layer copies it).
BATCH_NORM_CFG = dict(type='BN')


@MODELS.register_module()
class ConvConnector(nn.Module):
    """Map a student feature map to the teacher's channels and spatial size.

    A 1x1 convolution takes the student's channels to the teacher's, a normalisation layer
    follows, and when the teacher's map has another height or width the result is resized to it.
    Feature losses build one connector per level that needs it. The connector belongs to the
    loss, so it trains with the student and is left out of student-only checkpoints.

    Args:
        in_channels: Channels of the student feature map, > 0.
        out_channels: Channels of the teacher feature map, > 0.
        norm_cfg: MMCV normalisation config after the convolution, for example
            ``dict(type='BN')`` or ``dict(type='GN', num_groups=8)``; None for none, in which
            case the convolution gets a bias.
        resize_mode: ``torch.nn.functional.interpolate`` mode of the resize, ``'bilinear'`` or
            ``'nearest'``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        norm_cfg: Optional[dict] = BATCH_NORM_CFG,
        resize_mode: str = 'bilinear',
    ):
        super().__init__()
        for name, value in (('in_channels', in_channels), ('out_channels', out_channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f'ConvConnector {name} must be an int > 0, got {value!r}')
        if resize_mode not in ('bilinear', 'nearest'):
            raise ValueError(
                f"ConvConnector resize_mode must be 'bilinear' or 'nearest', got {resize_mode!r}"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.resize_mode = resize_mode
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=not norm_cfg)
        self.norm = build_norm_layer(norm_cfg, out_channels)[1] if norm_cfg else nn.Identity()

    def forward(
        self, student_feature: torch.Tensor, size: Optional[Tuple[int, int]] = None
    ) -> torch.Tensor:
        """Return the mapped feature [N, out_channels, H_t, W_t].

        Args:
            student_feature: Student feature map [N, in_channels, H_s, W_s].
            size: The teacher map's (H_t, W_t); None keeps the student's size.
        """
        mapped = self.norm(self.conv(student_feature))
        if size is not None and tuple(mapped.shape[-2:]) != tuple(size):
            align_corners = False if self.resize_mode == 'bilinear' else None
            mapped = F.interpolate(
                mapped, size=tuple(size), mode=self.resize_mode, align_corners=align_corners
            )
        return mapped

    def extra_repr(self) -> str:
        return f'resize_mode={self.resize_mode!r}'
