"""Optimizer wrapper constructor with YOLOv5's parameter groups plus a distillation group."""

import copy
import logging
import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch.nn as nn
from mmengine.dist import get_world_size
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.optim import OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS

from kd_plugin.registry import OPTIM_WRAPPER_CONSTRUCTORS, OPTIMIZERS

DEFAULT_PARAMWISE_CFG = dict(
    base_total_batch_size=64,
    distill_prefixes=('connectors.', 'distill_losses.'),
    distill_lr_mult=1.0,
    distill_decay_mult=1.0,
)

# Logged names of the parameter groups, by group index.
GROUP_NAMES = ('weights (decayed)', 'norm weights', 'biases', 'distillation')


@dataclass
class _ParameterSplit:
    """Parameters of a model sorted into the optimizer's groups, by group index."""

    groups: Tuple[List[nn.Parameter], ...] = field(default_factory=lambda: ([], [], [], []))
    frozen: List[nn.Parameter] = field(default_factory=list)
    # Trainable parameters that no group takes, by name.
    uncovered: Dict[str, nn.Parameter] = field(default_factory=dict)


def _count(params: List[nn.Parameter]) -> str:
    return f'{len(params)} tensors / {sum(p.numel() for p in params)} elements'


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class DistillOptimizerConstructor:
    """Build an optimizer wrapper with YOLOv5's three parameter groups and a distillation group.

    It is a drop-in for MMYOLO's YOLOv5OptimizerConstructor (mmyolo 0.6.0) in distillation
    configs. Parameters are split, in ``model.modules()`` order, into:

    - group 0: ``weight`` of every module that is not a batch/instance norm layer, with weight
      decay scaled by the total batch size as YOLOv5OptimizerConstructor does;
    - group 1: ``weight`` of norm layers (``nn.modules.batchnorm._NormBase``, SyncBatchNorm
      included), with the optimizer's default weight decay (0 for SGD and MultistepSGD);
    - group 2: ``bias`` of every module, with the default weight decay as well. It must stay at
      index 2 because YOLOv5ParamSchedulerHook warms this index up from ``warmup_bias_lr``;
    - group 3, only when non-empty: every parameter whose name starts with one of
      ``distill_prefixes``, in ``model.named_parameters()`` order, with
      ``lr = lr * distill_lr_mult`` and
      ``weight_decay = scaled weight_decay * distill_decay_mult``.

    Groups 0-2 are YOLOv5OptimizerConstructor's groups (same tensors, same order) with frozen and
    distillation parameters taken out. Parameters with ``requires_grad=False`` (a frozen teacher
    or backbone stage) are in no group. A trainable parameter that is neither a module's
    ``weight``/``bias`` nor a distillation parameter is left out as well, which
    YOLOv5OptimizerConstructor does silently. Here it is logged as a warning by name.

    Weight decay scaling: with ``batch_size_per_gpu`` in the optimizer config, the total batch
    is ``batch_size_per_gpu * world_size``, ``accumulate = max(round(base_total_batch_size /
    total), 1)`` and weight decay is multiplied by ``total * accumulate /
    base_total_batch_size``. Without ``batch_size_per_gpu`` it is used unchanged.

    Args:
        optim_wrapper_cfg: Optimizer wrapper config with an ``optimizer`` dict. The optimizer
            dict may contain ``batch_size_per_gpu`` (images per GPU, positive int), which is
            removed before the optimizer is built. ``type`` of the wrapper defaults to
            ``'OptimWrapper'``.
        paramwise_cfg: Parameter-wise options, each optional:

            - ``base_total_batch_size`` (positive int, default 64): nominal total batch size
              of the weight decay scaling.
            - ``distill_prefixes`` (tuple or list of non-empty str, default
              ``('connectors.', 'distill_losses.')``): name prefixes of distillation
              parameters, relative to the unwrapped model.
            - ``distill_lr_mult`` (finite float >= 0, default 1.0): learning rate multiplier
              of group 3.
            - ``distill_decay_mult`` (finite float >= 0, default 1.0): weight decay multiplier
              of group 3.

    Raises:
        ValueError: If a config value or paramwise key is invalid, with the value and the
            allowed values in the message.
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: Optional[dict] = None) -> None:
        if not isinstance(optim_wrapper_cfg, dict):
            type_name = type(optim_wrapper_cfg).__name__
            raise ValueError(f'Invalid optim_wrapper_cfg: expected a dict, got {type_name}.')
        if not isinstance(optim_wrapper_cfg.get('optimizer'), dict):
            raise ValueError(
                'Missing optimizer config: optim_wrapper_cfg needs a dict under "optimizer", got '
                f'{optim_wrapper_cfg.get("optimizer")!r}.'
            )
        self.optim_wrapper_cfg = copy.deepcopy(optim_wrapper_cfg)
        self.optimizer_cfg = self.optim_wrapper_cfg.pop('optimizer')
        self.optim_wrapper_cfg.setdefault('type', 'OptimWrapper')

        self.paramwise_cfg = self._resolve_paramwise_cfg(paramwise_cfg)

        batch_size_per_gpu = self.optimizer_cfg.get('batch_size_per_gpu')
        if batch_size_per_gpu is not None and not _is_positive_int(batch_size_per_gpu):
            raise ValueError(
                f'Invalid optimizer.batch_size_per_gpu={batch_size_per_gpu!r}: it must be a '
                'positive int (images per GPU).'
            )

    @staticmethod
    def _resolve_paramwise_cfg(paramwise_cfg: Optional[dict]) -> dict:
        resolved = dict(DEFAULT_PARAMWISE_CFG)
        if paramwise_cfg is None:
            return resolved
        if not isinstance(paramwise_cfg, dict):
            raise ValueError(
                f'Invalid paramwise_cfg: expected a dict, got {type(paramwise_cfg).__name__}.'
            )
        unknown_keys = sorted(set(paramwise_cfg) - set(DEFAULT_PARAMWISE_CFG))
        if unknown_keys:
            raise ValueError(
                f'Invalid paramwise_cfg keys {unknown_keys}: DistillOptimizerConstructor accepts '
                f'only {sorted(DEFAULT_PARAMWISE_CFG)}.'
            )
        resolved.update(paramwise_cfg)

        base_total_batch_size = resolved['base_total_batch_size']
        if not _is_positive_int(base_total_batch_size):
            raise ValueError(
                f'Invalid paramwise_cfg.base_total_batch_size={base_total_batch_size!r}: it must '
                'be a positive int.'
            )
        prefixes = resolved['distill_prefixes']
        if not isinstance(prefixes, (tuple, list)) or not all(
            isinstance(prefix, str) and prefix for prefix in prefixes
        ):
            raise ValueError(
                f'Invalid paramwise_cfg.distill_prefixes={prefixes!r}: it must be a tuple or list '
                "of non-empty str, for example ('connectors.', 'distill_losses.')."
            )
        resolved['distill_prefixes'] = tuple(prefixes)
        for key in ('distill_lr_mult', 'distill_decay_mult'):
            value = resolved[key]
            if not (
                isinstance(value, (int, float))
                and not isinstance(value, bool)
                and math.isfinite(value)
                and value >= 0
            ):
                raise ValueError(
                    f'Invalid paramwise_cfg.{key}={value!r}: it must be a finite number >= 0.'
                )
        return resolved

    def __call__(self, model: nn.Module) -> OptimWrapper:
        """Build the optimizer wrapper for ``model`` (a model wrapper is unwrapped first)."""
        if is_model_wrapper(model):
            model = model.module
        optimizer_cfg = copy.deepcopy(self.optimizer_cfg)
        weight_decay, scaling_message = self._scale_weight_decay(optimizer_cfg)
        split = self._split_parameters(model)

        # Groups 1 and 2 take the optimizer's default weight decay (0 for SGD), as in YOLOv5.
        param_groups = [
            dict(params=split.groups[0], weight_decay=weight_decay),
            dict(params=split.groups[1]),
            dict(params=split.groups[2]),
        ]
        if split.groups[3]:
            if 'lr' not in optimizer_cfg:
                raise ValueError(
                    'Missing "lr" in the optimizer config: the distillation group needs it to '
                    'apply distill_lr_mult. Add lr to the optimizer config.'
                )
            param_groups.append(
                dict(
                    params=split.groups[3],
                    lr=optimizer_cfg['lr'] * self.paramwise_cfg['distill_lr_mult'],
                    weight_decay=weight_decay * self.paramwise_cfg['distill_decay_mult'],
                )
            )
        optimizer_cfg['params'] = param_groups
        self._log_split(split, scaling_message)

        optimizer = OPTIMIZERS.build(optimizer_cfg)
        return OPTIM_WRAPPERS.build(
            copy.deepcopy(self.optim_wrapper_cfg), default_args=dict(optimizer=optimizer)
        )

    def _scale_weight_decay(self, optimizer_cfg: dict) -> Tuple[float, str]:
        """Pop weight_decay and batch_size_per_gpu from ``optimizer_cfg`` and scale the decay."""
        weight_decay = optimizer_cfg.pop('weight_decay', 0)
        batch_size_per_gpu = optimizer_cfg.pop('batch_size_per_gpu', None)
        if batch_size_per_gpu is None:
            return weight_decay, f'weight_decay {weight_decay} (no batch_size_per_gpu, unscaled)'

        base_total_batch_size = self.paramwise_cfg['base_total_batch_size']
        world_size = get_world_size()
        total_batch_size = world_size * batch_size_per_gpu
        accumulate = max(round(base_total_batch_size / total_batch_size), 1)
        scale_factor = total_batch_size * accumulate / base_total_batch_size
        scaled_weight_decay = weight_decay * scale_factor
        return scaled_weight_decay, (
            f'weight_decay {weight_decay} x {scale_factor:g} = {scaled_weight_decay:.6g} '
            f'(batch_size_per_gpu {batch_size_per_gpu} x world size {world_size} = '
            f'{total_batch_size}, accumulate {accumulate}, base_total_batch_size '
            f'{base_total_batch_size})'
        )

    def _split_parameters(self, model: nn.Module) -> _ParameterSplit:
        split = _ParameterSplit()
        placed_ids = set()
        prefixes = self.paramwise_cfg['distill_prefixes']

        # Distillation parameters first, so that the module walk below skips them.
        for name, param in model.named_parameters():
            if not param.requires_grad:
                split.frozen.append(param)
                placed_ids.add(id(param))
            elif name.startswith(prefixes):
                split.groups[3].append(param)
                placed_ids.add(id(param))

        # The same walk and rules as YOLOv5OptimizerConstructor.
        for module in model.modules():
            bias = getattr(module, 'bias', None)
            if isinstance(bias, nn.Parameter) and id(bias) not in placed_ids:
                split.groups[2].append(bias)
                placed_ids.add(id(bias))
            weight = getattr(module, 'weight', None)
            if isinstance(weight, nn.Parameter) and id(weight) not in placed_ids:
                group_index = 1 if isinstance(module, nn.modules.batchnorm._NormBase) else 0
                split.groups[group_index].append(weight)
                placed_ids.add(id(weight))

        for name, param in model.named_parameters():
            if id(param) not in placed_ids:
                split.uncovered[name] = param
        return split

    def _log_split(self, split: _ParameterSplit, scaling_message: str) -> None:
        lines = [f'DistillOptimizerConstructor: {scaling_message}. Parameter groups:']
        for index, (group_name, params) in enumerate(zip(GROUP_NAMES, split.groups)):
            if index == 3 and not params:
                lines.append(f'  3 {group_name}: none, group not created')
                continue
            suffix = ''
            if index == 3:
                suffix = (
                    f' (lr_mult {self.paramwise_cfg["distill_lr_mult"]}, decay_mult '
                    f'{self.paramwise_cfg["distill_decay_mult"]})'
                )
            lines.append(f'  {index} {group_name}: {_count(params)}{suffix}')
        lines.append(f'  frozen (requires_grad=False), left out: {_count(split.frozen)}')
        print_log('\n'.join(lines), logger='current')

        if split.uncovered:
            names = list(split.uncovered)
            shown_names = ', '.join(names[:10])
            if len(names) > 10:
                shown_names += f' and {len(names) - 10} more'
            print_log(
                f'DistillOptimizerConstructor: trainable parameters ('
                f'{_count(list(split.uncovered.values()))}) are in no group and will not be '
                'trained, because they are neither the weight or bias of a module nor match '
                f'distill_prefixes {self.paramwise_cfg["distill_prefixes"]}: {shown_names}. '
                'Add their name prefix to paramwise_cfg.distill_prefixes to train them in group 3.',
                logger='current',
                level=logging.WARNING,
            )


def _is_positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0
