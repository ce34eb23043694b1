"""Optimizers and optimizer wrapper constructors of kd_plugin."""

from .distill_optim_constructor import DistillOptimizerConstructor
from .multistep_sgd import MultistepSGD

__all__ = ['DistillOptimizerConstructor', 'MultistepSGD']
