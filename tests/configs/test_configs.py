"""Every shipped config parses, and temperature variants change the temperature alone."""

import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import MODELS

from kd_plugin.models import build_detector
from tests.conftest import BCCD_CONFIG_DIR, REPO_ROOT, save_checkpoint

CONFIGS = sorted(glob.glob(osp.join(REPO_ROOT, 'configs', '**', '*.py'), recursive=True))
COCO_DIR = osp.join(REPO_ROOT, 'configs', 'yolov5')
TEMPERATURE_VARIANTS = sorted(
    glob.glob(osp.join(COCO_DIR, 'kd_yolov5_l-to-s_t*_8xb16-150e_coco.py'))
)


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: osp.relpath(p, REPO_ROOT))
def test_config_parses_with_a_model(path):
    cfg = Config.fromfile(path)
    assert 'model' in cfg
    assert cfg.train_cfg.max_epochs > 0


def test_temperature_variants_exist():
    temperatures = sorted(Config.fromfile(p).model.temperature for p in TEMPERATURE_VARIANTS)
    assert temperatures == [1.0, 2.0, 4.0, 8.0, 16.0]


@pytest.mark.parametrize('path', TEMPERATURE_VARIANTS, ids=osp.basename)
def test_temperature_variant_differs_from_study_only_in_temperature(path):
    study = Config.fromfile(osp.join(COCO_DIR, 'kd_yolov5_l-to-s_8xb16-150e_coco.py')).to_dict()
    variant = Config.fromfile(path).to_dict()
    study['model'].pop('temperature')
    variant['model'].pop('temperature')
    assert variant == study
    # No loss sets its own temperature, so all of them take the model's.
    assert all('temperature' not in loss for loss in variant['model']['distill_losses'].values())


def test_study_uses_published_yolov5_l_teacher():
    cfg = Config.fromfile(osp.join(COCO_DIR, 'kd_yolov5_l-to-s_8xb16-150e_coco.py'))
    assert cfg.model.teacher.config == 'mmyolo::yolov5/yolov5_l-v61_syncbn_fast_8xb16-300e_coco.py'
    assert cfg.model.teacher.checkpoint.startswith('https://download.openmmlab.com/mmyolo/')
    assert cfg.train_cfg.max_epochs == 150
    assert cfg.train_dataloader.batch_size == 16


def test_temperature_only_override_reaches_built_losses(tmp_path):
    # A user config of two lines: inherit the BCCD distillation config, change the temperature.
    user_config = tmp_path / 'kd_t8.py'
    base = osp.join(BCCD_CONFIG_DIR, 'kd_yolov5_s-to-n_320_20e_bccd.py')
    user_config.write_text(f'_base_ = {base!r}\nmodel = dict(temperature=8.0)\n')
    cfg = Config.fromfile(str(user_config))

    # The shipped teacher checkpoint is swapped for random weights of the same YOLOv5-s.
    torch.manual_seed(0)
    teacher = build_detector(cfg.model.teacher.config)
    cfg.model.teacher.checkpoint = save_checkpoint(teacher, str(tmp_path / 'teacher.pth'))
    model = MODELS.build(cfg.model)
    temperatures = {name: loss.temperature for name, loss in model.distill_losses.items()}
    assert temperatures == {'loss_kd_cls': 8.0, 'loss_kd_obj': 8.0, 'loss_kd_bbox': 8.0}
