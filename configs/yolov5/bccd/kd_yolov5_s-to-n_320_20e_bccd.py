# The BCCD teacher, YOLOv5-s (yolov5_s_320_30e_bccd.py), teaches YOLOv5-n at 320 px on the CPU.
# Data, schedule and seed are the baseline student's (yolov5_n_320_20e_bccd.py), so the two runs
# differ only by distillation.
_base_ = './yolov5_n_320_20e_bccd.py'

custom_imports = dict(imports=['kd_plugin'], allow_failed_imports=False)

model = dict(
    _delete_=True,
    type='kd_plugin.DetectionDistiller',
    student=_base_.model,
    teacher=dict(
        config='{{ fileDirname }}/yolov5_s_320_30e_bccd.py',
        # Made by `make teacher` (tools/train.py on the teacher config); see checkpoints/README.md.
        checkpoint='checkpoints/bccd/yolov5_s_320_30e_bccd.pth',
    ),
    temperature=4.0,
    distill_losses=dict(
        loss_kd_cls=dict(type='YOLOv5ClsDistillLoss', loss_weight=1.0),
        loss_kd_obj=dict(type='YOLOv5ObjDistillLoss', loss_weight=1.0),
        loss_kd_bbox=dict(type='YOLOv5BBoxDistillLoss', loss_weight=1.0),
    ),
)

custom_hooks = [
    *_base_.custom_hooks,  # the student's EMA
    dict(type='kd_plugin.DistillScheduleHook', stop_epoch=None),
    dict(type='kd_plugin.StudentExportHook'),
]
