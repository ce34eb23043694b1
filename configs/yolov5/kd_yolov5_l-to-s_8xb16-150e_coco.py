# The distillation study: MMYOLO's COCO-trained YOLOv5-l teaches YOLOv5-s for 150 epochs on
# 8 GPUs x 16 images (launch with tools/dist_train.sh CONFIG 8). Everything else, data and
# schedule included, is the baseline's, so the two runs differ only by distillation.
_base_ = './yolov5_s-v61_syncbn_fast_8xb16-150e_coco.py'

custom_imports = dict(imports=['kd_plugin'], allow_failed_imports=False)

model = dict(
    _delete_=True,
    type='kd_plugin.DetectionDistiller',
    student=_base_.model,
    teacher=dict(
        config='mmyolo::yolov5/yolov5_l-v61_syncbn_fast_8xb16-300e_coco.py',
        # MMYOLO's published YOLOv5-l (48.8 COCO mAP, 300 epochs).
        checkpoint='https://download.openmmlab.com/mmyolo/v0/yolov5/'
        'yolov5_l-v61_syncbn_fast_8xb16-300e_coco/'
        'yolov5_l-v61_syncbn_fast_8xb16-300e_coco_20220917_031007-096ef0eb.pth',
    ),
    # Every distillation loss below runs at this temperature unless it sets its own; the
    # temperature variants override only this value.
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
    # Distill through the last 15 epochs too; set stop_epoch to let the student finish alone.
    dict(type='kd_plugin.DistillScheduleHook', stop_epoch=None),
    dict(type='kd_plugin.StudentExportHook'),
]
