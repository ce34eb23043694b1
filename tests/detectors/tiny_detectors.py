"""Tiny stand-ins of the shipped detector distillation configs, trained on BCCD images.

A stand-in is the real config file with only sizes changed: ResNet-18 backbones of 8 or 16 base
channels with 16-channel FPNs for MMDetection models, small ``deepen_factor``/``widen_factor``
for MMYOLO models, 3 classes, no pretrained weights. Everything else (detector types, heads,
assigners, the distillation losses, hooks and optimizer settings) comes from the config.
"""

import copy
import os.path as osp
from typing import Any, Dict, Tuple

import torch
from mmengine.config import Config, ConfigDict
from mmengine.hooks import Hook

from kd_plugin.models import build_detector
from kd_plugin.models.build import load_model_config
from tests.conftest import BCCD_CLASSES, REPO_ROOT, save_checkpoint

# Side of the square training images in pixels: a multiple of the largest YOLO stride, 32.
IMAGE_SIZE = 160

# ResNet base channels (stage widths are 1, 2, 4 and 8 times this) and the shared FPN width.
# Teacher and student FPNs have the same width, as R50 and R101 FPNs do (256 channels).
RESNET_BASE_CHANNELS = {'student': 8, 'teacher': 16}
FPN_CHANNELS = 16
# MMYOLO scaling factors: the teacher is twice as wide as the student, as YOLOv8-l is to -s.
YOLO_FACTORS = {
    'student': dict(deepen_factor=0.167, widen_factor=0.125),
    'teacher': dict(deepen_factor=0.33, widen_factor=0.25),
}

# The detector families of the shipped configs, by the student's backbone type.
MMYOLO_BACKBONES = ('YOLOv5CSPDarknet', 'YOLOv8CSPDarknet', 'CSPNeXt')

KD_CONFIGS = {
    'yolov8': 'configs/yolov8/kd_yolov8_l-to-s_syncbn_fast_8xb16-500e_coco.py',
    'rtmdet': 'configs/rtmdet/kd_rtmdet_m-to-s_syncbn_fast_8xb32-300e_coco.py',
    'retinanet': 'configs/retinanet/kd_retinanet_r101-to-r50_fpn_1x_coco.py',
    'gfl': 'configs/gfl/kd_gfl_r101-to-r50_fpn_1x_coco.py',
    'faster_rcnn': 'configs/faster_rcnn/kd_faster-rcnn_r101-to-r50_fpn_1x_coco.py',
    'cross_family': 'configs/cross_family/kd_retinanet_r50-to-yolov5_s_fast_8xb16-300e_coco.py',
}


def load_kd_config(family: str) -> Config:
    return Config.fromfile(osp.join(REPO_ROOT, KD_CONFIGS[family]))


def is_mmyolo_model(model: dict) -> bool:
    return model['backbone']['type'] in MMYOLO_BACKBONES


def _set_num_classes(node: Any, num_classes: int) -> None:
    """Set every ``num_classes`` in a nested config (heads, assigners) to ``num_classes``."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == 'num_classes':
                node[key] = num_classes
            else:
                _set_num_classes(value, num_classes)
    elif isinstance(node, (list, tuple)):
        for item in node:
            _set_num_classes(item, num_classes)


def shrink_model(model: dict, role: str) -> ConfigDict:
    """Return a copy of a detector config at test size, for the 'student' or 'teacher' role."""
    model = ConfigDict(copy.deepcopy(model))
    _set_num_classes(model, len(BCCD_CLASSES))
    model.backbone.init_cfg = None
    model.init_cfg = None

    if is_mmyolo_model(model):
        factors = YOLO_FACTORS[role]
        model.backbone.update(factors)
        model.neck.update(factors)
        model.bbox_head.head_module.widen_factor = factors['widen_factor']
        return model

    if model.backbone.type != 'ResNet' or model.neck.type != 'FPN':
        raise ValueError(f'no tiny stand-in for a {model.backbone.type} + {model.neck.type}')
    base = RESNET_BASE_CHANNELS[role]
    model.backbone.update(depth=18, base_channels=base)
    model.neck.update(in_channels=[base, 2 * base, 4 * base, 8 * base], out_channels=FPN_CHANNELS)
    if 'rpn_head' in model:
        # Two-stage: the RPN and the RoI head read the FPN.
        model.rpn_head.update(in_channels=FPN_CHANNELS, feat_channels=FPN_CHANNELS)
        model.roi_head.bbox_roi_extractor.out_channels = FPN_CHANNELS
        model.roi_head.bbox_head.update(in_channels=FPN_CHANNELS, fc_out_channels=32)
    else:
        model.bbox_head.update(
            in_channels=FPN_CHANNELS, feat_channels=FPN_CHANNELS, stacked_convs=1
        )
        if model.bbox_head.type == 'GFLHead':
            # GFLHead's default GroupNorm has 32 groups, more than the stand-in has channels.
            model.bbox_head.norm_cfg = dict(type='GN', num_groups=4, requires_grad=True)
    return model


def tiny_teacher(cfg: Config, checkpoint_dir: str) -> Tuple[dict, str]:
    """Shrink the config's teacher and save its seeded random weights as its checkpoint.

    Returns:
        The ``model.teacher`` dict for the distiller: the shrunk model config, scoped to the
        package it came from, and the checkpoint path.
    """
    teacher_model, scope = load_model_config(cfg.model.teacher.config)
    teacher_model = shrink_model(teacher_model, 'teacher')
    if scope is not None:
        teacher_model['_scope_'] = scope
    torch.manual_seed(1)
    teacher = build_detector(teacher_model)
    checkpoint = save_checkpoint(teacher, osp.join(checkpoint_dir, 'teacher.pth'))
    return dict(config=teacher_model.to_dict(), checkpoint=checkpoint), checkpoint


def _resize_transforms(pipeline: list, size: int) -> list:
    pipeline = copy.deepcopy(pipeline)
    for transform in pipeline:
        if 'scale' in transform:
            transform['scale'] = (size, size)
    return pipeline


def _training_pipeline_from_test(pipeline: list) -> list:
    """Move the annotation loading of an MMYOLO test pipeline in front of the resizes.

    Test pipelines load boxes after resizing because the evaluator compares them in original
    image coordinates; training needs them resized with the image.
    """
    loads = [transform for transform in pipeline if 'LoadAnnotations' in transform['type']]
    others = [transform for transform in pipeline if 'LoadAnnotations' not in transform['type']]
    if len(loads) != 1 or 'LoadImageFromFile' not in others[0]['type']:
        raise ValueError(f'expected one LoadAnnotations after LoadImageFromFile in {pipeline}')
    return [others[0], loads[0], *others[1:]]


def train_on_bccd_subset(cfg: Config, subset: Dict[str, str], batch_size: int = 4) -> None:
    """Train on the BCCD subset at IMAGE_SIZE, without validation or testing.

    MMDetection students keep their own training pipeline at the smaller scale. MMYOLO students
    train on their test pipeline (keep-ratio resize and letterbox) with the boxes loaded before
    the resize, because their training pipelines mix 4 to 8 images per sample through mosaic
    caches.
    """
    dataset = cfg.train_dataloader.dataset
    if is_mmyolo_model(cfg.model.student):
        pipeline = _training_pipeline_from_test(_resize_transforms(cfg.test_pipeline, IMAGE_SIZE))
    else:
        pipeline = _resize_transforms(dataset.pipeline, IMAGE_SIZE)
    dataset.update(
        data_root=subset['data_root'],
        ann_file=subset['train_ann'],
        data_prefix=dict(img=subset['img_prefix']),
        metainfo=dict(classes=BCCD_CLASSES),
        pipeline=pipeline,
    )
    cfg.train_dataloader.update(
        batch_size=batch_size, num_workers=0, persistent_workers=False, pin_memory=False
    )
    for stage in ('val', 'test'):
        cfg[f'{stage}_dataloader'] = None
        cfg[f'{stage}_cfg'] = None
        cfg[f'{stage}_evaluator'] = None


def tiny_kd_config(
    family: str, subset: Dict[str, str], work_dir: str, max_epochs: int = 1
) -> Tuple[Config, str]:
    """The family's shipped config with tiny models and BCCD data, 2 iterations per epoch.

    Returns:
        The config and the path of the teacher checkpoint it uses.
    """
    cfg = load_kd_config(family)
    cfg.model.student = shrink_model(cfg.model.student, 'student').to_dict()
    cfg.model.teacher, checkpoint = tiny_teacher(cfg, work_dir)
    train_on_bccd_subset(cfg, subset)  # 8 images / batch 4 = 2 iterations
    cfg.train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=1)
    cfg.default_hooks.logger.interval = 1
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=1)
    cfg.randomness = dict(seed=0)
    cfg.work_dir = work_dir
    return cfg, checkpoint


class SnapshotHook(Hook):
    """Copy every trainable parameter of the model when training starts (after init)."""

    def __init__(self):
        self.parameters: Dict[str, torch.Tensor] = {}

    def before_train(self, runner) -> None:
        self.parameters = {
            name: param.detach().clone()
            for name, param in runner.model.named_parameters()
            if param.requires_grad
        }
