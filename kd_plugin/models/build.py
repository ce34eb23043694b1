"""Build a detector from a config given as a dict, a local file or a ``package::`` path."""

import os.path as osp
from typing import Optional, Tuple, Union

import torch.nn as nn
from mmengine.config import Config, ConfigDict
from mmengine.hub import get_config
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import DefaultScope
from mmengine.utils import is_installed

ModelSource = Union[str, dict, ConfigDict]


def load_model_config(source: ModelSource) -> Tuple[ConfigDict, Optional[str]]:
    """Resolve a model source into its ``model`` config and the scope it was written for.

    Args:
        source: An inline model dict; a path to a config file whose ``model`` is used; or a
            package path such as ``'mmyolo::yolov5/yolov5_s-v61_syncbn_fast_8xb16-300e_coco.py'``.

    Returns:
        The model config and the config file's ``default_scope`` (None for an inline dict, which
        is built in the scope that is current when it is built).
    """
    if isinstance(source, (dict, ConfigDict)):
        return ConfigDict(source), None
    if not isinstance(source, str):
        raise TypeError(
            f'a model must be given as a config dict or a config path, got {type(source).__name__}'
        )

    if '::' in source:
        package = source.partition('::')[0]
        # mmengine's get_config would try to pip-install a missing package; fail early instead.
        if not is_installed(package):
            raise ModuleNotFoundError(
                f'config {source!r} needs the package {package!r}, which is not installed'
            )
        cfg = get_config(source)
    else:
        if not osp.isfile(source):
            raise FileNotFoundError(
                f'model config file not found: {source!r}; give a path relative to the working '
                "directory, an absolute path, or a 'mmyolo::'/'mmdet::' package path"
            )
        cfg = Config.fromfile(source)
    if 'model' not in cfg:
        raise ValueError(f'config {source!r} has no `model` entry')
    return cfg.model, cfg.get('default_scope')


def build_detector(source: ModelSource) -> nn.Module:
    """Build a detector from ``source`` (see :func:`load_model_config`) in its own scope."""
    model_cfg, scope = load_model_config(source)
    if scope is None:
        return MMENGINE_MODELS.build(model_cfg)
    with DefaultScope.overwrite_default_scope(scope):
        return MMENGINE_MODELS.build(model_cfg)
