# BCCD distillation (YOLOv5-s teaches YOLOv5-n) with MultistepSGD and the distillation-aware
# optimizer constructor, which the distillation config already selects.
_base_ = './kd_yolov5_s-to-n_320_20e_bccd.py'

optim_wrapper = dict(optimizer=dict(type='kd_plugin.MultistepSGD', alpha=0.5))
