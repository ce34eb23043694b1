# The distillation study at temperature 1; everything else is the study's config.
_base_ = './kd_yolov5_l-to-s_8xb16-150e_coco.py'

model = dict(temperature=1.0)
