"""Knowledge distillation for MMYOLO and MMDetection detectors.

Importing the package registers its models, losses, hooks and optimizers (configs do it with
``custom_imports = dict(imports=['kd_plugin'])``) and allow-lists the non-tensor types of
MMEngine checkpoints for ``torch.load(weights_only=True)``.
"""

from . import dist, hooks, losses, models, optim  # noqa: F401  (registers the components)
from .utils.checkpoint import register_safe_globals

__version__ = '0.1.0'

register_safe_globals()
