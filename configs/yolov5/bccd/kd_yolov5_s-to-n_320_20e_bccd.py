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
    # Like YOLOv5's own losses, these are multiplied by the total batch size, so the same
    # weights keep their balance against the task losses at 1 x 8 images or 8 x 16.
    distill_losses=dict(
        loss_kd_cls=dict(type='YOLOv5ClsDistillLoss', loss_weight=0.25),
        loss_kd_obj=dict(type='YOLOv5ObjDistillLoss', loss_weight=0.25),
        loss_kd_bbox=dict(type='YOLOv5BBoxDistillLoss', loss_weight=0.25),
    ),
)

# YOLOv5's three parameter groups (decayed weights, norm weights, biases at index 2 for the
# warm-up hook), frozen parameters left out, distillation-only parameters in a fourth group.
optim_wrapper = dict(constructor='kd_plugin.DistillOptimizerConstructor')

custom_hooks = [
    *_base_.custom_hooks,  # the student's EMA
    dict(type='kd_plugin.DistillScheduleHook', stop_epoch=None),
    dict(type='kd_plugin.StudentExportHook'),
]
