"""A tiny MMYOLO YOLOv5 detector and a toy feature distiller built on it, for optimizer tests."""

import copy
from typing import Dict, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.logging import MessageHub, MMLogger
from mmengine.model import BaseModel
from mmengine.registry import DefaultScope
from mmengine.visualization import Visualizer

import kd_plugin.optim  # noqa: F401  (registers the classes under test)

# YOLOv5 at 1/8 width and 1/3 depth: P3-P5 neck outputs have 32, 64 and 128 channels.
WIDEN_FACTOR = 0.125
DEEPEN_FACTOR = 0.33
STUDENT_P3_CHANNELS = 32


def build_tiny_yolov5(frozen_stages: int = -1) -> nn.Module:
    """Build a real MMYOLO YOLOv5 detector with 3 classes and 0.45 M parameters."""
    import mmyolo.models  # noqa: F401  (fills the mmyolo registries)
    from mmyolo.registry import MODELS

    norm_cfg = dict(type='BN', momentum=0.03, eps=0.001)
    act_cfg = dict(type='SiLU', inplace=True)
    cfg = dict(
        type='YOLODetector',
        use_syncbn=False,
        data_preprocessor=dict(
            type='YOLOv5DetDataPreprocessor', mean=[0.0, 0.0, 0.0], std=[255.0, 255.0, 255.0]
        ),
        backbone=dict(
            type='YOLOv5CSPDarknet',
            deepen_factor=DEEPEN_FACTOR,
            widen_factor=WIDEN_FACTOR,
            frozen_stages=frozen_stages,
            norm_cfg=norm_cfg,
            act_cfg=act_cfg,
        ),
        neck=dict(
            type='YOLOv5PAFPN',
            deepen_factor=DEEPEN_FACTOR,
            widen_factor=WIDEN_FACTOR,
            in_channels=[256, 512, 1024],
            out_channels=[256, 512, 1024],
            num_csp_blocks=3,
            norm_cfg=norm_cfg,
            act_cfg=act_cfg,
        ),
        bbox_head=dict(
            type='YOLOv5Head',
            head_module=dict(
                type='YOLOv5HeadModule',
                num_classes=3,
                in_channels=[256, 512, 1024],
                widen_factor=WIDEN_FACTOR,
                featmap_strides=[8, 16, 32],
                num_base_priors=3,
            ),
        ),
    )
    # Nested configs (the data preprocessor) are built through MMEngine's root registry, which
    # finds mmyolo's classes only under the mmyolo default scope.
    with DefaultScope.overwrite_default_scope('mmyolo'):
        detector = MODELS.build(cfg)
    # frozen_stages takes effect in train(), as in MMYOLO training.
    detector.train()
    return detector


class ToyFeatureDistiller(BaseModel):
    """Feature distillation between two tiny YOLOv5 detectors, named like kd_plugin's distiller.

    The student is ``student``, a 1x1 conv under ``connectors`` maps its P3 features to the
    teacher's, and a learnable loss weight sits under ``distill_losses``. Unlike kd_plugin's
    distiller, the frozen teacher IS a registered submodule here, so ``named_parameters()``
    contains it and the constructor has to leave it out on its own.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module) -> None:
        super().__init__()
        self.student = student
        self.teacher = teacher
        self.teacher.requires_grad_(False)
        self.connectors = nn.ModuleList(
            [nn.Conv2d(STUDENT_P3_CHANNELS, STUDENT_P3_CHANNELS, kernel_size=1)]
        )
        self.distill_losses = nn.ParameterDict({'loss_weight': nn.Parameter(torch.ones(()))})

    def train(self, mode: bool = True) -> 'ToyFeatureDistiller':
        super().train(mode)
        self.teacher.eval()
        return self

    def forward(
        self,
        inputs: List[torch.Tensor],
        data_samples: Optional[list] = None,
        mode: str = 'loss',
    ) -> Dict[str, torch.Tensor]:
        """Compute the MSE between the connected student P3 and the teacher P3 features.

        Args:
            inputs: N images, each [3, H, W] with H and W multiples of 32.
            data_samples: Unused.
            mode: Only 'loss' is supported.

        Returns:
            ``dict(loss_kd_feature=...)``, the MSE times the learnable loss weight.
        """
        if mode != 'loss':
            raise ValueError(f'ToyFeatureDistiller supports only mode="loss", got {mode!r}.')
        images = torch.stack(inputs)  # [N, 3, H, W]
        student_p3 = self.student.extract_feat(images)[0]  # [N, 32, H/8, W/8]
        with torch.no_grad():
            teacher_p3 = self.teacher.extract_feat(images)[0]  # [N, 32, H/8, W/8]
        feature_mse = F.mse_loss(self.connectors[0](student_p3), teacher_p3)
        return dict(loss_kd_feature=self.distill_losses['loss_weight'] * feature_mse)


def build_toy_distiller(frozen_stages: int = -1) -> ToyFeatureDistiller:
    """Build a ToyFeatureDistiller whose teacher is a frozen copy of the student."""
    torch.manual_seed(0)
    student = build_tiny_yolov5(frozen_stages)
    return ToyFeatureDistiller(student, copy.deepcopy(student))


def drop_mmengine_instances(prefix: str) -> None:
    """Drop MMEngine global instances whose name starts with ``prefix`` and close their logs.

    A Runner creates a logger, message hub, visualizer and default scope under its experiment
    name. Dropping them keeps later tests from logging into an earlier test's files.
    """
    for manager in (MMLogger, MessageHub, Visualizer, DefaultScope):
        for name in [name for name in manager._instance_dict if name.startswith(prefix)]:
            instance = manager._instance_dict.pop(name)
            if isinstance(instance, MMLogger):
                for handler in list(instance.handlers):
                    handler.close()
                    instance.removeHandler(handler)
