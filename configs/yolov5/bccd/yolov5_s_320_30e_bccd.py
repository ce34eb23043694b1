# YOLOv5-s trained alone on BCCD at 320 px: the teacher of the BCCD family.
# It trains longer than the students, 30 epochs = 780 iterations of batch 8.
_base_ = './yolov5_n_320_20e_bccd.py'

widen_factor = 0.5  # YOLOv5-s; YOLOv5-n is 0.25 with the same depth
max_epochs = 30

model = dict(
    backbone=dict(widen_factor=widen_factor),
    neck=dict(widen_factor=widen_factor),
    bbox_head=dict(head_module=dict(widen_factor=widen_factor)),
)
val_interval = 2  # as the shipped checkpoint was trained: its best epoch was chosen among these
default_hooks = dict(
    param_scheduler=dict(max_epochs=max_epochs),
    checkpoint=dict(interval=val_interval),
)
train_cfg = dict(max_epochs=max_epochs, val_interval=val_interval)
