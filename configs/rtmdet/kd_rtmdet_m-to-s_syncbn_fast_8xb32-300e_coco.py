# MMYOLO's COCO-trained RTMDet-m (49.3 mAP) teaches RTMDet-s (44.6 mAP trained alone) with
# RTMDet-s's own data and 300-epoch schedule on 8 GPUs x 32 images (tools/dist_train.sh CONFIG 8).
# Only the neck is distilled: RTMDet's head in MMYOLO 0.6 regresses the four box distances
# directly, with no distribution for localization distillation to match.
_base_ = 'mmyolo::rtmdet/rtmdet_s_syncbn_fast_8xb32-300e_coco.py'

custom_imports = dict(imports=['kd_plugin'], allow_failed_imports=False)

model = dict(
    _delete_=True,
    type='kd_plugin.DetectionDistiller',
    student=_base_.model,
    teacher=dict(
        config='mmyolo::rtmdet/rtmdet_m_syncbn_fast_8xb32-300e_coco.py',
        checkpoint='https://download.openmmlab.com/mmyolo/v0/rtmdet/'
        'rtmdet_m_syncbn_fast_8xb32-300e_coco/'
        'rtmdet_m_syncbn_fast_8xb32-300e_coco_20230102_135952-40af4fe8.pth',
    ),
    distill_losses=dict(
        # One entry covers the P3-P5 outputs and averages them. MMYOLO's own RTMDet distillation
        # configs put weight 1 on each of the 3 levels at T = 1, hence 3 here. They compare the
        # neck's pre-activation convs after a normalisation, this loss the neck outputs, so the
        # weight is a starting point to tune. RTMDet-s has 128
        # neck channels and RTMDet-m 192, so 'auto' adds a 1x1 conv + BN connector per level.
        loss_kd_neck=dict(
            type='ChannelWiseDistillLoss',
            loss_weight=3.0,
            temperature=1.0,
            student_module='neck',
            teacher_module='neck',
            connector='auto',
        ),
    ),
)

# MMEngine adds `_scope_` to this dict when it loads a `mmyolo::` base, and the yolov5_collate
# function rejects that keyword, so the collate config is written out again.
train_dataloader = dict(collate_fn=dict(_delete_=True, type='yolov5_collate'))

# The optimizer stays RTMDet's (AdamW through MMEngine's default constructor, no weight decay on
# norms and biases): DistillOptimizerConstructor builds YOLOv5's SGD groups and rejects this
# paramwise_cfg. The connectors are ordinary parameters of the distiller there.

custom_hooks = [
    *_base_.custom_hooks,  # EMA and the switch to the stage-2 pipeline at epoch 280
    # The student trains alone through the last 20 epochs, as in MMYOLO's RTMDet distillation.
    dict(
        type='kd_plugin.DistillScheduleHook',
        stop_epoch=_base_.max_epochs - _base_.num_epochs_stage2,
    ),
    dict(type='kd_plugin.StudentExportHook'),
]
