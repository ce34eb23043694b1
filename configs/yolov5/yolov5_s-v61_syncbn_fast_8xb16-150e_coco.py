# YOLOv5-s trained alone on COCO for 150 epochs: the baseline of the distillation study.
# 8 GPUs x 16 images = 128 images per step, the batch MMYOLO's base lr of 0.01 assumes.
_base_ = 'mmyolo::yolov5/yolov5_s-v61_syncbn_fast_8xb16-300e_coco.py'

max_epochs = 150

default_hooks = dict(param_scheduler=dict(max_epochs=max_epochs))
train_cfg = dict(max_epochs=max_epochs)
train_dataloader = dict(collate_fn=dict(_delete_=True, type='yolov5_collate'))
