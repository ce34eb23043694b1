# MMDetection's COCO-trained GFL-R101 (multi-scale 2x schedule, 44.7 mAP) teaches GFL-R50 (40.2
# mAP trained alone) with R50's own data and 1x schedule: 12 epochs on 8 GPUs x 2 images.
# GFL's head predicts each box edge as a distribution over reg_max + 1 = 17 bins, which
# localization distillation (LD) matches; the FPN features are distilled as well.
_base_ = 'mmdet::gfl/gfl_r50_fpn_1x_coco.py'

custom_imports = dict(imports=['kd_plugin'], allow_failed_imports=False)

model = dict(
    _delete_=True,
    type='kd_plugin.DetectionDistiller',
    student=_base_.model,
    teacher=dict(
        config='mmdet::gfl/gfl_r101_fpn_ms-2x_coco.py',
        checkpoint='https://download.openmmlab.com/mmdetection/v2.0/gfl/'
        'gfl_r101_fpn_mstrain_2x_coco/gfl_r101_fpn_mstrain_2x_coco_20200629_200126-dd12f847.pth',
    ),
    distill_losses=dict(
        # LD on the cells inside ground-truth boxes, where GFL trains its edge distributions.
        # T = 10 and weight 0.25 come from MMDetection's ld_r50-gflv1-r101 config (same teacher),
        # whose loss sums over positives and averages over bins; this one averages over cells and
        # sums over bins, so the weight is a starting point to tune, not the same strength.
        loss_kd_ld=dict(
            type='LocalizationDistillLoss',
            loss_weight=0.25,
            temperature=10.0,
            region=dict(gt_boxes=True),
            student_module='bbox_head',
            teacher_module='bbox_head',
        ),
        # The five FPN outputs (P3-P7, 256 channels in both models), weighted as in the
        # RetinaNet pair: 10 per level, averaged over 5 levels.
        loss_kd_fpn=dict(
            type='ChannelWiseDistillLoss',
            loss_weight=50.0,
            temperature=1.0,
            student_module='neck',
            teacher_module='neck',
        ),
    ),
)

# The optimizer stays MMDetection's (SGD through MMEngine's default constructor, weight decay on
# every parameter): DistillOptimizerConstructor builds YOLOv5's parameter groups.

custom_hooks = [
    dict(type='kd_plugin.DistillScheduleHook', stop_epoch=None),
    dict(type='kd_plugin.StudentExportHook'),
]
