from .base import (
    DistillContext,
    DistillLoss,
    binary_kl_with_logits,
    softmax_kl_with_logits,
    validate_temperature,
)
from .feature import (
    ChannelWiseDistillLoss,
    FeatureDistillLoss,
    NormalizedMSEDistillLoss,
    feature_levels,
)
from .localization import LocalizationDistillLoss
from .regions import RegionWeighting, weighted_mean
from .yolov5_head import (
    YOLOv5BBoxDistillLoss,
    YOLOv5ClsDistillLoss,
    YOLOv5HeadDistillLoss,
    YOLOv5ObjDistillLoss,
    flatten_priors,
)

__all__ = [
    'DistillContext',
    'DistillLoss',
    'binary_kl_with_logits',
    'softmax_kl_with_logits',
    'validate_temperature',
    'FeatureDistillLoss',
    'ChannelWiseDistillLoss',
    'NormalizedMSEDistillLoss',
    'feature_levels',
    'LocalizationDistillLoss',
    'RegionWeighting',
    'weighted_mean',
    'YOLOv5HeadDistillLoss',
    'YOLOv5ClsDistillLoss',
    'YOLOv5ObjDistillLoss',
    'YOLOv5BBoxDistillLoss',
    'flatten_priors',
]
