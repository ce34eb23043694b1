# The distillation study at temperature 4; everything else is the study's config.
_base_ = './kd_yolov5_l-to-s_8xb16-150e_coco.py'

model = dict(temperature=4.0)
