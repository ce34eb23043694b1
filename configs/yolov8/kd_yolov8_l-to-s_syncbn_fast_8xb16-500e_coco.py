# MMYOLO's COCO-trained YOLOv8-l (52.1 mAP) teaches YOLOv8-s (44.2 mAP trained alone) with
# YOLOv8-s's own data and 500-epoch schedule on 8 GPUs x 16 images (tools/dist_train.sh CONFIG 8).
# Two losses: channel-wise distillation of the three neck levels, and localization distillation
# of the head's box-edge distributions (reg_max = 16 bins per edge in both models).
_base_ = 'mmyolo::yolov8/yolov8_s_syncbn_fast_8xb16-500e_coco.py'

custom_imports = dict(imports=['kd_plugin'], allow_failed_imports=False)

model = dict(
    _delete_=True,
    type='kd_plugin.DetectionDistiller',
    student=_base_.model,
    teacher=dict(
        config='mmyolo::yolov8/yolov8_l_syncbn_fast_8xb16-500e_coco.py',
        checkpoint='https://download.openmmlab.com/mmyolo/v0/yolov8/'
        'yolov8_l_syncbn_fast_8xb16-500e_coco/'
        'yolov8_l_syncbn_fast_8xb16-500e_coco_20230217_182526-189611b6.pth',
    ),
    distill_losses=dict(
        # One entry covers the P3-P5 outputs and averages them. Weight 3 = 1 per level as in
        # MMYOLO's RTMDet CWD configs, which compare normalised pre-activation neck convs; this
        # loss compares the neck outputs as they are, so the weight is a starting point to tune.
        # The neck widths differ (YOLOv8-s 128/256/512, YOLOv8-l 256/512/512), so 'auto' adds a
        # 1x1 conv + BN connector per level.
        loss_kd_neck=dict(
            type='ChannelWiseDistillLoss',
            loss_weight=3.0,
            temperature=1.0,
            student_module='neck',
            teacher_module='neck',
            connector='auto',
        ),
        # LD on the cells inside ground-truth boxes: DFL trains the teacher's edge distributions
        # on positive priors only. T = 10 and weight 0.25 are MMDetection's LD settings, but its
        # loss sums over positives and averages over bins while this one averages over cells and
        # sums over bins, so the same weight is not the same strength: tune it.
        loss_kd_ld=dict(
            type='LocalizationDistillLoss',
            loss_weight=0.25,
            temperature=10.0,
            region=dict(gt_boxes=True),
            student_module='bbox_head',
            teacher_module='bbox_head',
        ),
    ),
)

# MMEngine adds `_scope_` to this dict when it loads a `mmyolo::` base, and the yolov5_collate
# function rejects that keyword, so the collate config is written out again.
train_dataloader = dict(collate_fn=dict(_delete_=True, type='yolov5_collate'))

# YOLOv5OptimizerConstructor's three groups (YOLOv8 uses them too), the teacher left out, and the
# connectors in a fourth group.
optim_wrapper = dict(constructor='kd_plugin.DistillOptimizerConstructor')

custom_hooks = [
    *_base_.custom_hooks,  # EMA and the switch to the mosaic-free pipeline at epoch 490
    # The student trains alone through the last 10 epochs, from the pipeline switch on; MMYOLO's
    # RTMDet distillation configs stop at their pipeline switch in the same way.
    dict(
        type='kd_plugin.DistillScheduleHook',
        stop_epoch=_base_.max_epochs - _base_.close_mosaic_epochs,
    ),
    dict(type='kd_plugin.StudentExportHook'),
]
