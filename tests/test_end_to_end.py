"""A real MMEngine Runner distilling tiny YOLOv5 models on BCCD images: train, resume, export.

The student-only export is then loaded by plain MMYOLO in a fresh Python process that never
imports kd_plugin.
"""

import os.path as osp
import subprocess
import sys
import textwrap

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner

from kd_plugin.utils import load_checkpoint_file
from tests.conftest import (
    BCCD_VOC_ROOT,
    REPO_ROOT,
    TINY_STUDENT_WIDEN,
    TINY_TEACHER_WIDEN,
    bccd_config,
    use_bccd_subset,
    yolov5_model_cfg,
)


def kd_config(subset: dict, teacher_checkpoint: str, work_dir: str, max_epochs: int) -> Config:
    cfg = bccd_config('kd_yolov5_s-to-n_320_20e_bccd.py')
    cfg.model.student = yolov5_model_cfg(TINY_STUDENT_WIDEN)
    cfg.model.teacher = dict(
        config=yolov5_model_cfg(TINY_TEACHER_WIDEN), checkpoint=teacher_checkpoint
    )
    use_bccd_subset(cfg, subset)
    cfg.train_cfg.max_epochs = max_epochs
    cfg.train_cfg.val_interval = 1
    cfg.default_hooks.param_scheduler.max_epochs = max_epochs
    cfg.default_hooks.checkpoint.interval = 1
    cfg.default_hooks.logger.interval = 1
    cfg.work_dir = work_dir
    return cfg


def test_train_resume_export_and_plain_mmyolo_load(bccd_subset, teacher_checkpoint, tmp_path):
    work_dir = str(tmp_path / 'work')

    # Epoch 1 of 2: 8 images / batch 4 = 2 iterations, then validation and a checkpoint.
    runner = Runner.from_cfg(kd_config(bccd_subset, teacher_checkpoint, work_dir, max_epochs=1))
    runner.train()
    scalars = runner.message_hub.log_scalars
    assert scalars['train/loss_kd_cls'].current() > 0
    assert scalars['train/kd_temperature'].current() == 4.0
    first_checkpoint = osp.join(work_dir, 'epoch_1.pth')
    assert osp.isfile(first_checkpoint)
    assert osp.isfile(osp.join(work_dir, 'epoch_1_student.pth'))

    # Resume to epoch 2 from the epoch-1 checkpoint, with torch.load's weights_only default.
    cfg = kd_config(bccd_subset, teacher_checkpoint, work_dir, max_epochs=2)
    cfg.resume, cfg.load_from = True, first_checkpoint
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert runner.epoch == 2
    assert runner.iter == 4
    final_checkpoint = osp.join(work_dir, 'epoch_2.pth')
    exported = osp.join(work_dir, 'epoch_2_student.pth')
    assert osp.isfile(exported)

    # The export contains the checkpoint's student weights (EMA-averaged) and nothing else.
    full = load_checkpoint_file(final_checkpoint)['state_dict']
    student = torch.load(exported, map_location='cpu', weights_only=True)
    assert set(student) == {'meta', 'state_dict'}
    assert set(student['state_dict']) == {
        k[len('student.') :] for k in full if k.startswith('student.')
    }
    for key, value in student['state_dict'].items():
        assert torch.equal(value, full['student.' + key])
    assert student['meta']['dataset_meta']['classes'] == ('RBC', 'WBC', 'Platelets')

    # Plain MMYOLO, in a process without kd_plugin, loads the export and detects.
    student_cfg = bccd_config('yolov5_n_320_20e_bccd.py')
    student_cfg.model = yolov5_model_cfg(TINY_STUDENT_WIDEN)
    student_config_file = str(tmp_path / 'student_config.py')
    student_cfg.dump(student_config_file)
    image = osp.join(BCCD_VOC_ROOT, 'JPEGImages', 'BloodImage_00000.jpg')
    script = textwrap.dedent(
        f"""
        import sys
        from mmdet.apis import inference_detector, init_detector
        from mmyolo.utils import register_all_modules
        register_all_modules()
        model = init_detector({student_config_file!r}, {exported!r}, device='cpu')
        result = inference_detector(model, {image!r})
        assert 'kd_plugin' not in sys.modules
        print('classes', model.dataset_meta['classes'])
        print('detections', len(result.pred_instances))
        """
    )
    completed = subprocess.run(
        [sys.executable, '-c', script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "classes ('RBC', 'WBC', 'Platelets')" in completed.stdout
    assert 'detections' in completed.stdout


def test_schedule_hook_values_and_stop_epoch_in_runner(bccd_subset, teacher_checkpoint, tmp_path):
    # 3 epochs of one iteration each; the temperature factor falls linearly from 2 to 1 over
    # the 3 epochs, so at epochs 0, 1, 2 the temperature is 4 * (2, 5/3, 4/3); distillation
    # stops at epoch 2.
    cfg = kd_config(bccd_subset, teacher_checkpoint, str(tmp_path / 'work'), max_epochs=3)
    cfg.train_dataloader.batch_size = 8
    cfg.train_cfg.val_interval = 10
    cfg.default_hooks.checkpoint.interval = 10
    cfg.custom_hooks = [
        dict(
            type='kd_plugin.DistillScheduleHook',
            temperature=dict(policy='linear', start=2.0, end=1.0),
            stop_epoch=2,
        )
    ]
    runner = Runner.from_cfg(cfg)
    runner.train()
    temperatures = runner.message_hub.log_scalars['train/kd_temperature'].data[0]
    enabled = runner.message_hub.log_scalars['train/kd_enabled'].data[0]
    assert list(temperatures) == pytest.approx([4 * 2.0, 4 * 5 / 3, 4 * 4 / 3])
    assert list(enabled) == [1.0, 1.0, 0.0]
    assert 'train/loss_kd_cls' in runner.message_hub.log_scalars
    assert len(runner.message_hub.log_scalars['train/loss_kd_cls'].data[0]) == 2
