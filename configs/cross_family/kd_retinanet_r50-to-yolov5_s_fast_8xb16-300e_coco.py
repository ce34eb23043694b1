# A teacher of another family: MMDetection's COCO-trained RetinaNet-R50 (36.5 mAP) teaches MMYOLO's
# YOLOv5-s (37.7 mAP trained alone) with YOLOv5-s's own data and 300-epoch schedule on 8 GPUs x 16
# images. Only neck features can be compared, because the two heads predict different things
# (anchor-box deltas per class vs. YOLOv5 grid offsets with objectness).
# The teacher is not stronger than the student here. The config shows the mechanism, and a
# stronger RetinaNet (or any FPN detector) drops in through `teacher`.
_base_ = 'mmyolo::yolov5/yolov5_s-v61_syncbn_fast_8xb16-300e_coco.py'

custom_imports = dict(imports=['kd_plugin'], allow_failed_imports=False)

model = dict(
    _delete_=True,
    type='kd_plugin.DetectionDistiller',
    student=_base_.model,
    # The teacher reads the student's letterboxed 640 x 640 batch, renormalised to its own mean,
    # std and channel order (YOLOv5: pixels / 255; RetinaNet: ImageNet mean and std).
    teacher=dict(
        config='mmdet::retinanet/retinanet_r50_fpn_1x_coco.py',
        checkpoint='https://download.openmmlab.com/mmdetection/v2.0/retinanet/'
        'retinanet_r50_fpn_1x_coco/retinanet_r50_fpn_1x_coco_20200130-c2398f9e.pth',
    ),
    distill_losses=dict(
        # YOLOv5's neck outputs strides 8, 16 and 32 (128, 256 and 512 channels); RetinaNet's FPN
        # outputs strides 8 to 128 (P3-P7, 256 channels). The first three teacher levels have the
        # student's strides; 'auto' adds a 1x1 conv + BN connector per level for the channels.
        # Weight 3 = 1 per level, as in MMYOLO's RTMDet channel-wise distillation configs (which
        # compare normalised pre-activation features): a starting point to tune.
        loss_kd_neck=dict(
            type='ChannelWiseDistillLoss',
            loss_weight=3.0,
            temperature=1.0,
            student_module='neck',
            teacher_module='neck',
            teacher_levels=(0, 1, 2),
            connector='auto',
        ),
    ),
)

# MMEngine adds `_scope_` to this dict when it loads a `mmyolo::` base, and the yolov5_collate
# function rejects that keyword, so the collate config is written out again.
train_dataloader = dict(collate_fn=dict(_delete_=True, type='yolov5_collate'))

# YOLOv5's three parameter groups, the teacher left out, and the connectors in a fourth group.
optim_wrapper = dict(constructor='kd_plugin.DistillOptimizerConstructor')

custom_hooks = [
    *_base_.custom_hooks,  # the student's EMA
    dict(type='kd_plugin.DistillScheduleHook', stop_epoch=None),
    dict(type='kd_plugin.StudentExportHook'),
]
