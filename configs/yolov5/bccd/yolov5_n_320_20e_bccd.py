# YOLOv5-n trained alone on BCCD (3 blood-cell classes) at 320 px on the CPU: the baseline
# student of the BCCD family, and the base of its other configs.
# 205 training images / batch 8 = 26 iterations per epoch; 20 epochs = 520 iterations.
_base_ = 'mmyolo::yolov5/yolov5_n-v61_syncbn_fast_8xb16-300e_coco.py'

data_root = 'data/bccd/'  # relative to the working directory: run from the repository root
class_name = ('RBC', 'WBC', 'Platelets')
num_classes = len(class_name)
metainfo = dict(classes=class_name, palette=[(220, 20, 60), (0, 120, 230), (250, 170, 30)])

img_scale = (320, 320)  # width, height; a multiple of the largest stride, 32
max_epochs = 20
train_batch_size_per_gpu = 8
train_num_workers = 2
val_interval = 4  # 5 validations; each takes 20-60 s on 2 cores, longest early in training

# YOLOv5 scales its class loss by classes / 80 and its objectness loss by (size / 640)^2.
# Evaluation keeps the 1,000 best-scoring candidates per image before NMS (MMYOLO: 30,000)
# and 100 boxes after it, as many as COCO's mAP counts: on the CPU, NMS over tens of thousands
# of early-training candidates would otherwise dominate validation time.
model = dict(
    test_cfg=dict(nms_pre=1000, max_per_img=100),
    bbox_head=dict(
        head_module=dict(num_classes=num_classes),
        loss_cls=dict(loss_weight=0.5 * num_classes / 80),
        loss_obj=dict(loss_weight=1.0 * (img_scale[0] / 640) ** 2),
    )
)

# Written out rather than taken from `_base_`: a `mmyolo::` base gets `_scope_` injected into
# every dict with a `type`, and albumentations rejects that keyword.
albu_train_transforms = [
    dict(type='Blur', p=0.01),
    dict(type='MedianBlur', p=0.01),
    dict(type='ToGray', p=0.01),
    dict(type='CLAHE', p=0.01),
]

train_pipeline = [
    *_base_.pre_transform,
    dict(type='Mosaic', img_scale=img_scale, pad_val=114.0, pre_transform=_base_.pre_transform),
    dict(
        type='YOLOv5RandomAffine',
        max_rotate_degree=0.0,
        max_shear_degree=0.0,
        scaling_ratio_range=(1 - _base_.affine_scale, 1 + _base_.affine_scale),
        border=(-img_scale[0] // 2, -img_scale[1] // 2),
        border_val=(114, 114, 114),
    ),
    dict(
        type='mmdet.Albu',
        transforms=albu_train_transforms,
        bbox_params=dict(
            type='BboxParams',
            format='pascal_voc',
            label_fields=['gt_bboxes_labels', 'gt_ignore_flags'],
        ),
        keymap={'img': 'image', 'gt_bboxes': 'bboxes'},
    ),
    dict(type='YOLOv5HSVRandomAug'),
    dict(type='mmdet.RandomFlip', prob=0.5),
    dict(
        type='mmdet.PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'flip', 'flip_direction'),
    ),
]

test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=_base_.backend_args),
    dict(type='YOLOv5KeepRatioResize', scale=img_scale),
    dict(type='LetterResize', scale=img_scale, allow_scale_up=False, pad_val=dict(img=114)),
    dict(type='mmdet.LoadAnnotations', with_bbox=True),
    dict(
        type='mmdet.PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor', 'pad_param'),
    ),
]

train_dataloader = dict(
    batch_size=train_batch_size_per_gpu,
    num_workers=train_num_workers,
    pin_memory=False,
    # Redefined from scratch for the same reason: yolov5_collate rejects the injected `_scope_`.
    collate_fn=dict(_delete_=True, type='yolov5_collate'),
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/train.json',
        data_prefix=dict(img='BCCD/JPEGImages/'),
        pipeline=train_pipeline,
    ),
)

val_dataloader = dict(
    num_workers=train_num_workers,
    pin_memory=False,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/val.json',
        data_prefix=dict(img='BCCD/JPEGImages/'),
        pipeline=test_pipeline,
        batch_shapes_cfg=dict(img_size=img_scale[0]),
    ),
)
test_dataloader = val_dataloader

val_evaluator = dict(ann_file=data_root + 'annotations/val.json')
test_evaluator = val_evaluator

# YOLOv5 scales weight decay by the total batch size over its nominal 64.
optim_wrapper = dict(optimizer=dict(batch_size_per_gpu=train_batch_size_per_gpu))

default_hooks = dict(
    # Warm-up lasts max(3 epochs, warmup_mim_iter) iterations; MMYOLO's default of 1000
    # iterations would be the whole run here, so 3 epochs (78 iterations) decide.
    param_scheduler=dict(max_epochs=max_epochs, warmup_mim_iter=40),
    checkpoint=dict(interval=val_interval, max_keep_ckpts=2, save_best='auto'),
    logger=dict(interval=5),
)

train_cfg = dict(max_epochs=max_epochs, val_interval=val_interval)
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
