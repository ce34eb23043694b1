from .build import build_detector, load_model_config
from .detection_distiller import DetectionDistiller
from .frozen_teacher import FrozenTeacher

__all__ = ['DetectionDistiller', 'FrozenTeacher', 'build_detector', 'load_model_config']
