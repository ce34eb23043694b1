# MMDetection's COCO-trained Faster R-CNN R101 (2x schedule, 39.8 mAP) teaches Faster R-CNN R50
# (37.4 mAP trained alone) with R50's own data and 1x schedule: 12 epochs on 8 GPUs x 2 images.
_base_ = 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'

custom_imports = dict(imports=['kd_plugin'], allow_failed_imports=False)

model = dict(
    _delete_=True,
    type='kd_plugin.DetectionDistiller',
    student=_base_.model,
    teacher=dict(
        config='mmdet::faster_rcnn/faster-rcnn_r101_fpn_2x_coco.py',
        checkpoint='https://download.openmmlab.com/mmdetection/v2.0/faster_rcnn/'
        'faster_rcnn_r101_fpn_2x_coco/'
        'faster_rcnn_r101_fpn_2x_coco_bbox_mAP-0.398_20200504_210455-1d2dac9c.pth',
    ),
    distill_losses=dict(
        # Channel-wise distillation of the five FPN outputs (P2-P6, 256 channels in both models,
        # so no connector), which feed both the RPN and the RoI head. MMRazor's CWD config for
        # this pair weighs each level 10 at T = 1; this loss averages the levels, hence 5 x 10.
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
