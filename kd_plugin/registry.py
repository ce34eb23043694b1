"""Registries of kd_plugin, children of MMEngine's root registries.

A config reaches a kd_plugin component with the ``kd_plugin.`` prefix (for example
``type='kd_plugin.DetectionDistiller'``) from any default scope, ``mmyolo`` and ``mmdet``
included, because MMEngine looks a prefixed name up among the children of its root registries.
"""

from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import MODEL_WRAPPERS as MMENGINE_MODEL_WRAPPERS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS as MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS
from mmengine.registry import OPTIM_WRAPPERS as MMENGINE_OPTIM_WRAPPERS
from mmengine.registry import OPTIMIZERS as MMENGINE_OPTIMIZERS
from mmengine.registry import Registry

MODELS = Registry(
    'model',
    parent=MMENGINE_MODELS,
    scope='kd_plugin',
    locations=['kd_plugin.models', 'kd_plugin.losses'],
)
HOOKS = Registry('hook', parent=MMENGINE_HOOKS, scope='kd_plugin', locations=['kd_plugin.hooks'])
OPTIMIZERS = Registry(
    'optimizer', parent=MMENGINE_OPTIMIZERS, scope='kd_plugin', locations=['kd_plugin.optim']
)
OPTIM_WRAPPER_CONSTRUCTORS = Registry(
    'optimizer wrapper constructor',
    parent=MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS,
    scope='kd_plugin',
    locations=['kd_plugin.optim'],
)
MODEL_WRAPPERS = Registry(
    'model_wrapper', parent=MMENGINE_MODEL_WRAPPERS, scope='kd_plugin', locations=['kd_plugin.dist']
)
OPTIM_WRAPPERS = Registry(
    'optim_wrapper', parent=MMENGINE_OPTIM_WRAPPERS, scope='kd_plugin', locations=['kd_plugin.dist']
)
