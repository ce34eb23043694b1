"""Teachers with another input normalisation read what their own preprocessor would make."""

import copy

import pytest
import torch
from mmdet.structures import DetDataSample
from mmengine.registry import MODELS

from kd_plugin.models import TeacherInputConverter
from tests.conftest import TINY_TEACHER_WIDEN, random_batch, yolov5_model_cfg

# MMDetection's RetinaNet/Faster R-CNN normalisation (ImageNet mean and std on RGB pixels).
RETINANET_PREPROCESSOR = dict(
    type='mmdet.DetDataPreprocessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_size_divisor=32,
)
# MMYOLO's YOLOv5 normalisation: pixels / 255, RGB.
YOLO_PREPROCESSOR = dict(
    type='YOLOv5DetDataPreprocessor',
    mean=[0.0, 0.0, 0.0],
    std=[255.0, 255.0, 255.0],
    bgr_to_rgb=True,
)


def raw_images(num_images: int = 2, height: int = 64, width: int = 64) -> torch.Tensor:
    """BGR uint8 images [N, 3, H, W], as MMCV loads them."""
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (num_images, 3, height, width), generator=generator).to(
        torch.uint8
    )


def yolo_fast_batch(preprocessor, images: torch.Tensor) -> dict:
    rows = torch.tensor([[0, 0, 4.0, 4.0, 30.0, 30.0], [1, 1, 8.0, 8.0, 40.0, 40.0]])
    return preprocessor(dict(inputs=images, data_samples=dict(bboxes_labels=rows)), training=True)


def own_preprocessing(preprocessor, images: torch.Tensor) -> torch.Tensor:
    data = dict(inputs=list(images), data_samples=[DetDataSample() for _ in images])
    return preprocessor(data, training=False)['inputs']


@pytest.mark.parametrize('teacher_bgr_to_rgb', [True, False])
def test_retinanet_teacher_gets_its_own_normalisation(teacher_bgr_to_rgb):
    student = MODELS.build(YOLO_PREPROCESSOR)
    teacher = MODELS.build(dict(RETINANET_PREPROCESSOR, bgr_to_rgb=teacher_bgr_to_rgb))
    images = raw_images()
    batch = yolo_fast_batch(student, images)
    converter = TeacherInputConverter(student, teacher)
    assert converter.needed
    converted = converter(batch['inputs'], batch['data_samples'])
    expected = own_preprocessing(teacher, images)
    assert converted.shape == expected.shape
    torch.testing.assert_close(converted, expected, rtol=1e-5, atol=1e-5)


def test_padding_of_mmdet_samples_gets_teacher_pad_value():
    # 50x60 images padded to 64x64 after normalisation by both preprocessors.
    student = MODELS.build(
        dict(
            type='mmdet.DetDataPreprocessor',
            mean=[0.0] * 3,
            std=[255.0] * 3,
            bgr_to_rgb=True,
            pad_size_divisor=32,
        )
    )
    teacher = MODELS.build(RETINANET_PREPROCESSOR)
    images = raw_images(height=50, width=60)
    # The loading pipeline records each image's size before padding as img_shape.
    samples = [DetDataSample(metainfo=dict(img_shape=(50, 60))) for _ in images]
    student_batch = student(dict(inputs=list(images), data_samples=samples), training=False)
    converted = TeacherInputConverter(student, teacher)(
        student_batch['inputs'], student_batch['data_samples']
    )
    expected = own_preprocessing(teacher, images)
    assert converted.shape == (2, 3, 64, 64)
    torch.testing.assert_close(converted, expected, rtol=1e-5, atol=1e-5)


def test_same_preprocessors_pass_inputs_through():
    student, teacher = MODELS.build(YOLO_PREPROCESSOR), MODELS.build(YOLO_PREPROCESSOR)
    converter = TeacherInputConverter(student, teacher)
    inputs = torch.rand(1, 3, 8, 8)
    assert not converter.needed
    assert converter(inputs) is inputs


def test_distiller_feeds_teacher_its_own_normalisation(distiller_cfg):
    teacher_cfg = yolov5_model_cfg(TINY_TEACHER_WIDEN)
    teacher_cfg['data_preprocessor'] = RETINANET_PREPROCESSOR
    distiller_cfg['teacher']['config'] = teacher_cfg
    model = MODELS.build(copy.deepcopy(distiller_cfg))
    teacher_inputs = []
    model.teacher.backbone.register_forward_pre_hook(
        lambda module, args: teacher_inputs.append(args[0])
    )
    images = raw_images()
    batch = yolo_fast_batch(model.data_preprocessor, images)
    losses = model(**batch, mode='loss')
    assert torch.isfinite(losses['loss_kd_cls'])
    assert len(teacher_inputs) == 1
    expected = own_preprocessing(model.teacher.data_preprocessor, images)
    torch.testing.assert_close(teacher_inputs[0], expected, rtol=1e-5, atol=1e-5)
    # The student still reads its own inputs: pixels / 255.
    assert batch['inputs'].max() <= 1.0


def test_random_batch_runs_with_converted_teacher(distiller_cfg):
    distiller_cfg['teacher']['config'] = dict(
        yolov5_model_cfg(TINY_TEACHER_WIDEN), data_preprocessor=RETINANET_PREPROCESSOR
    )
    model = MODELS.build(copy.deepcopy(distiller_cfg))
    assert model._teacher_inputs.needed
    assert torch.isfinite(model(**random_batch(), mode='loss')['loss_kd_obj'])
