from .base import DistillLoss, binary_kl_with_logits, softmax_kl_with_logits, validate_temperature
from .yolov5_head import (
    YOLOv5BBoxDistillLoss,
    YOLOv5ClsDistillLoss,
    YOLOv5HeadDistillLoss,
    YOLOv5ObjDistillLoss,
    flatten_priors,
)

__all__ = [
    'DistillLoss',
    'binary_kl_with_logits',
    'softmax_kl_with_logits',
    'validate_temperature',
    'YOLOv5HeadDistillLoss',
    'YOLOv5ClsDistillLoss',
    'YOLOv5ObjDistillLoss',
    'YOLOv5BBoxDistillLoss',
    'flatten_priors',
]
