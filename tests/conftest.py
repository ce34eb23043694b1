"""Shared fixtures: tiny real YOLOv5 detectors from the BCCD configs and a small BCCD subset."""

import copy
import os
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmyolo.utils import register_all_modules

import kd_plugin  # noqa: F401  (registers kd_plugin components)
from kd_plugin.datasets import convert_voc_to_coco, read_image_set
from kd_plugin.models import build_detector

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
BCCD_CONFIG_DIR = osp.join(REPO_ROOT, 'configs', 'yolov5', 'bccd')
BCCD_VOC_ROOT = osp.join(REPO_ROOT, 'data', 'bccd', 'BCCD')
BCCD_CLASSES = ('RBC', 'WBC', 'Platelets')

# Widths small enough for fast CPU tests; real mmyolo YOLOv5 modules all the same.
TINY_STUDENT_WIDEN = 0.125
TINY_TEACHER_WIDEN = 0.25

register_all_modules(init_default_scope=True)


def bccd_config(name: str) -> Config:
    return Config.fromfile(osp.join(BCCD_CONFIG_DIR, name))


def yolov5_model_cfg(widen_factor: float, num_classes: int = 3) -> dict:
    """The BCCD YOLOv5 model config at another width (and optionally class count)."""
    model = copy.deepcopy(bccd_config('yolov5_n_320_20e_bccd.py').model)
    model.backbone.widen_factor = widen_factor
    model.neck.widen_factor = widen_factor
    model.bbox_head.head_module.widen_factor = widen_factor
    model.bbox_head.head_module.num_classes = num_classes
    return model.to_dict()


def random_batch(num_images: int = 2, size: int = 64, seed: int = 0) -> dict:
    """Preprocessed random images [N, 3, size, size] with two ground-truth boxes per image.

    ``data_samples`` has the form of MMYOLO's ``yolov5_collate``: ``bboxes_labels`` rows are
    ``[image index, class, x1, y1, x2, y2]`` in input pixels.
    """
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.rand(num_images, 3, size, size, generator=generator)
    rows = []
    for image in range(num_images):
        rows.append([image, 0, 4.0, 4.0, 30.0, 30.0])
        rows.append([image, 2, 32.0, 20.0, 60.0, 50.0])
    img_metas = [dict(batch_input_shape=(size, size), img_shape=(size, size))] * num_images
    return dict(
        inputs=inputs, data_samples=dict(bboxes_labels=torch.tensor(rows), img_metas=img_metas)
    )


def use_bccd_subset(cfg: Config, subset: dict, batch_size: int = 4) -> None:
    """Point a BCCD config's train, val and test data at the subset, loaded in-process."""
    for loader, ann_file in (
        (cfg.train_dataloader, subset['train_ann']),
        (cfg.val_dataloader, subset['val_ann']),
    ):
        loader.dataset.ann_file = ann_file
        loader.num_workers = 0
        loader.persistent_workers = False
    cfg.train_dataloader.batch_size = batch_size
    cfg.val_evaluator.ann_file = subset['val_ann']
    cfg.test_dataloader = cfg.val_dataloader
    cfg.test_evaluator = cfg.val_evaluator


def save_checkpoint(model: torch.nn.Module, path: str) -> str:
    torch.save({'meta': {}, 'state_dict': model.state_dict()}, path)
    return path


@pytest.fixture(scope='session')
def teacher_checkpoint(tmp_path_factory) -> str:
    """A checkpoint of a tiny YOLOv5 teacher with seeded random weights."""
    torch.manual_seed(0)
    teacher = build_detector(yolov5_model_cfg(TINY_TEACHER_WIDEN))
    return save_checkpoint(teacher, str(tmp_path_factory.mktemp('teacher') / 'teacher.pth'))


@pytest.fixture
def distiller_cfg(teacher_checkpoint) -> dict:
    """A DetectionDistiller config: tiny student, tiny teacher, the three YOLOv5 losses."""
    return dict(
        type='kd_plugin.DetectionDistiller',
        student=yolov5_model_cfg(TINY_STUDENT_WIDEN),
        teacher=dict(config=yolov5_model_cfg(TINY_TEACHER_WIDEN), checkpoint=teacher_checkpoint),
        temperature=2.0,
        distill_losses=dict(
            loss_kd_cls=dict(type='YOLOv5ClsDistillLoss', loss_weight=1.0),
            loss_kd_obj=dict(type='YOLOv5ObjDistillLoss', loss_weight=1.0),
            loss_kd_bbox=dict(type='YOLOv5BBoxDistillLoss', loss_weight=1.0),
        ),
    )


@pytest.fixture(scope='session')
def bccd_subset(tmp_path_factory) -> dict:
    """COCO annotations of the first 8 BCCD training and 4 validation images.

    Returns a dict with ``data_root`` (the repository's data/bccd/), the two annotation files
    and the image prefix, ready for the BCCD configs' dataloaders.
    """
    out_dir = tmp_path_factory.mktemp('bccd_annotations')
    files = {}
    for split, count in (('train', 8), ('val', 4)):
        image_ids = read_image_set(osp.join(BCCD_VOC_ROOT, 'ImageSets', 'Main', f'{split}.txt'))
        files[split] = str(out_dir / f'{split}.json')
        convert_voc_to_coco(
            osp.join(BCCD_VOC_ROOT, 'Annotations'), image_ids[:count], BCCD_CLASSES, files[split]
        )
    return dict(
        data_root=osp.join(REPO_ROOT, 'data', 'bccd') + os.sep,
        train_ann=files['train'],
        val_ann=files['val'],
        img_prefix='BCCD/JPEGImages/',
    )
