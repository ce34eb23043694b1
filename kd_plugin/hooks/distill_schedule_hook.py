"""Schedule the distillation temperature and loss weight, and stop distillation late in training."""

import math
from typing import Optional, Sequence

from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper

from ..registry import HOOKS

POLICIES = ('constant', 'linear', 'cosine', 'step')


class FactorSchedule:
    """A multiplier that changes over training progress.

    Args:
        policy: ``'constant'`` (always ``start``), ``'linear'`` or ``'cosine'`` (from ``start``
            at ``begin`` to ``end`` at ``stop``), or ``'step'`` (``start`` times ``gamma`` for
            every milestone reached).
        start: Value at ``begin``.
        end: Value at ``stop`` (linear and cosine).
        begin: Epoch or iteration at which the change starts, >= 0.
        stop: Epoch or iteration at which the change ends; None means the end of training.
        milestones: Epochs or iterations at which the step policy multiplies by ``gamma``.
        gamma: Factor of the step policy, > 0.
    """

    def __init__(
        self,
        policy: str = 'constant',
        start: float = 1.0,
        end: float = 1.0,
        begin: int = 0,
        stop: Optional[int] = None,
        milestones: Sequence[int] = (),
        gamma: float = 0.1,
    ):
        if policy not in POLICIES:
            raise ValueError(f'schedule policy must be one of {POLICIES}, got {policy!r}')
        if begin < 0 or (stop is not None and stop <= begin):
            raise ValueError(f'schedule needs 0 <= begin < stop, got begin={begin}, stop={stop}')
        if gamma <= 0:
            raise ValueError(f'schedule gamma must be > 0, got {gamma}')
        self.policy = policy
        self.start = float(start)
        self.end = float(end)
        self.begin = begin
        self.stop = stop
        self.milestones = sorted(milestones)
        self.gamma = gamma

    def value(self, step: int, total: int) -> float:
        """Return the factor at epoch or iteration ``step`` of a run of ``total`` of them."""
        if self.policy == 'constant':
            return self.start
        if self.policy == 'step':
            return self.start * self.gamma ** sum(
                step >= milestone for milestone in self.milestones
            )
        stop = total if self.stop is None else self.stop
        progress = min(max((step - self.begin) / max(stop - self.begin, 1), 0.0), 1.0)
        if self.policy == 'linear':
            return self.start + (self.end - self.start) * progress
        return self.end + (self.start - self.end) * (1 + math.cos(math.pi * progress)) / 2

    def values(self) -> Sequence[float]:
        """Return the values the schedule takes at its ends, for validating ranges."""
        if self.policy == 'step':
            return [self.start * self.gamma**count for count in range(len(self.milestones) + 1)]
        if self.policy == 'constant':
            return [self.start]
        return [self.start, self.end]

    def __repr__(self) -> str:
        if self.policy == 'constant':
            return f'constant({self.start})'
        if self.policy == 'step':
            return f'step({self.start}, x{self.gamma} at {self.milestones})'
        return f'{self.policy}({self.start} -> {self.end}, {self.begin}..{self.stop or "end"})'


def check_teacher_classes(model, dataset) -> None:
    """Raise ValueError if the teacher checkpoint's class names differ from the training set's.

    Distillation compares class scores channel by channel, so the teacher's class order must be
    the student's. Nothing is checked when either side does not record its classes.
    """
    teacher_classes = model._teacher.classes
    metainfo = getattr(dataset, 'metainfo', None) or {}
    dataset_classes = metainfo.get('classes')
    if teacher_classes is None or not dataset_classes:
        return
    if tuple(teacher_classes) != tuple(dataset_classes):
        raise ValueError(
            f'the teacher checkpoint {model._teacher.checkpoint} was trained on classes '
            f'{tuple(teacher_classes)}, but the training set has {tuple(dataset_classes)}; '
            "give the dataset the teacher's classes in the same order (metainfo=dict(classes="
            '...)) or use a teacher trained on these classes'
        )


@HOOKS.register_module()
class DistillScheduleHook(Hook):
    """Set the distiller's temperature factor, loss-weight factor and on/off state each iteration.

    The schedules give multipliers of what the config sets, so a config that changes only
    ``model.temperature`` scales the whole temperature schedule: each distillation loss runs at
    its base temperature times the temperature factor, and its weight is multiplied by the
    weight factor. From ``stop_epoch`` on, the teacher no longer runs and the student trains on
    its own losses alone (for example during the final epochs without mosaic augmentation).

    The current temperature (the distiller's base temperature times the factor), the weight
    factor and the on/off state go to MessageHub as ``train/kd_temperature``,
    ``train/kd_weight`` and ``train/kd_enabled``, names without ``loss`` so that MMEngine does
    not add them to the total loss.

    Args:
        temperature: Keyword arguments of :class:`FactorSchedule` for the temperature factor;
            its values must stay > 0. None keeps the factor at 1.
        weight: Keyword arguments of :class:`FactorSchedule` for the loss-weight factor; its
            values must stay >= 0. None keeps the factor at 1.
        by_epoch: Count schedule steps in epochs (True) or in iterations (False).
        stop_epoch: First epoch (0-based) without distillation; None distills to the end.
    """

    priority = 'NORMAL'

    def __init__(
        self,
        temperature: Optional[dict] = None,
        weight: Optional[dict] = None,
        by_epoch: bool = True,
        stop_epoch: Optional[int] = None,
    ):
        self.temperature_schedule = FactorSchedule(**(temperature or {}))
        self.weight_schedule = FactorSchedule(**(weight or {}))
        if min(self.temperature_schedule.values()) <= 0:
            raise ValueError(
                f'temperature schedule {self.temperature_schedule} reaches a factor <= 0; '
                'temperature factors must stay > 0'
            )
        if min(self.weight_schedule.values()) < 0:
            raise ValueError(
                f'weight schedule {self.weight_schedule} reaches a factor < 0; '
                'loss-weight factors must stay >= 0'
            )
        if stop_epoch is not None and stop_epoch < 0:
            raise ValueError(f'stop_epoch must be >= 0 or None, got {stop_epoch}')
        self.by_epoch = by_epoch
        self.stop_epoch = stop_epoch

    @staticmethod
    def _distiller(runner):
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        for attribute in ('temperature', 'temperature_factor', 'distill_weight_factor'):
            if not hasattr(model, attribute):
                raise TypeError(
                    f'DistillScheduleHook needs a kd_plugin DetectionDistiller model, got '
                    f'{type(model).__name__}; remove the hook or set model.type to '
                    "'kd_plugin.DetectionDistiller'"
                )
        return model

    def before_train(self, runner) -> None:
        model = self._distiller(runner)
        check_teacher_classes(model, runner.train_dataloader.dataset)
        stop = 'never' if self.stop_epoch is None else f'at epoch {self.stop_epoch}'
        print_log(
            f'distillation schedule ({"epochs" if self.by_epoch else "iterations"}): '
            f'temperature {model.temperature} x {self.temperature_schedule}, '
            f'loss weight x {self.weight_schedule}, stops {stop}',
            logger='current',
        )

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        model = self._distiller(runner)
        if self.by_epoch:
            step, total = runner.epoch, runner.max_epochs
        else:
            step, total = runner.iter, runner.max_iters
        model.temperature_factor = self.temperature_schedule.value(step, total)
        model.distill_weight_factor = self.weight_schedule.value(step, total)
        model.distill_enabled = self.stop_epoch is None or runner.epoch < self.stop_epoch

        message_hub = runner.message_hub
        message_hub.update_scalar(
            'train/kd_temperature', model.temperature * model.temperature_factor
        )
        message_hub.update_scalar('train/kd_weight', model.distill_weight_factor)
        message_hub.update_scalar('train/kd_enabled', float(model.distill_enabled))
