"""The teacher checkpoint's class names against the training set's, checked before training."""

import copy

import pytest
import torch
from mmengine.registry import DATASETS, MODELS

from kd_plugin.hooks.distill_schedule_hook import check_teacher_classes
from kd_plugin.models import build_detector
from kd_plugin.models.frozen_teacher import checkpoint_classes
from tests.conftest import BCCD_CLASSES, TINY_TEACHER_WIDEN, bccd_config, yolov5_model_cfg


def bccd_train_set():
    dataset_cfg = copy.deepcopy(bccd_config('yolov5_n_320_20e_bccd.py').train_dataloader.dataset)
    dataset_cfg.lazy_init = True  # metainfo only, no annotation parsing
    return DATASETS.build(dataset_cfg)


def distiller_with_teacher_classes(distiller_cfg, tmp_path, classes):
    teacher = build_detector(yolov5_model_cfg(TINY_TEACHER_WIDEN))
    meta = {} if classes is None else {'dataset_meta': {'classes': classes}}
    path = str(tmp_path / 'teacher.pth')
    torch.save({'meta': meta, 'state_dict': teacher.state_dict()}, path)
    cfg = copy.deepcopy(distiller_cfg)
    cfg['teacher'] = dict(config=yolov5_model_cfg(TINY_TEACHER_WIDEN), checkpoint=path)
    return MODELS.build(cfg)


def test_same_classes_pass(distiller_cfg, tmp_path):
    model = distiller_with_teacher_classes(distiller_cfg, tmp_path, BCCD_CLASSES)
    assert model._teacher.classes == BCCD_CLASSES
    check_teacher_classes(model, bccd_train_set())


def test_reordered_classes_rejected(distiller_cfg, tmp_path):
    reordered = ('WBC', 'RBC', 'Platelets')
    model = distiller_with_teacher_classes(distiller_cfg, tmp_path, reordered)
    with pytest.raises(ValueError, match=r"trained on classes \('WBC', 'RBC', 'Platelets'\)"):
        check_teacher_classes(model, bccd_train_set())


def test_unrecorded_classes_skip_check(distiller_cfg, tmp_path):
    model = distiller_with_teacher_classes(distiller_cfg, tmp_path, None)
    assert model._teacher.classes is None
    check_teacher_classes(model, bccd_train_set())


def test_mmdet2_checkpoint_classes_read():
    assert checkpoint_classes({'meta': {'CLASSES': ['a', 'b']}}) == ('a', 'b')
    assert checkpoint_classes({'state_dict': {}}) is None
