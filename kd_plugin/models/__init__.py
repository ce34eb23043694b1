from .build import build_detector, load_model_config
from .connectors import ConvConnector
from .detection_distiller import DetectionDistiller
from .frozen_teacher import FrozenTeacher
from .preprocessing import TeacherInputConverter

__all__ = [
    'ConvConnector',
    'DetectionDistiller',
    'FrozenTeacher',
    'TeacherInputConverter',
    'build_detector',
    'load_model_config',
]
