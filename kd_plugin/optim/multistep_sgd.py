"""SGD that steps along a gradient extrapolated from the previous step (Adams–Bashforth)."""

import math
from typing import Any, Callable, Dict, Iterable, Optional, Union

import torch
from torch.optim import Optimizer

from kd_plugin.registry import OPTIMIZERS


def _check_group_hyperparameters(group: Dict[str, Any]) -> None:
    """Raise ValueError when a parameter group contains an invalid hyperparameter."""
    lr = group['lr']
    alpha = group['alpha']
    momentum = group['momentum']
    dampening = group['dampening']
    weight_decay = group['weight_decay']

    # `not x >= 0` is also true for NaN, which `x < 0` would let through.
    if not (math.isfinite(lr) and lr >= 0):
        raise ValueError(f'Invalid lr={lr!r}: the learning rate must be a finite number >= 0.')
    if not (math.isfinite(alpha) and alpha >= 0):
        raise ValueError(
            f'Invalid alpha={alpha!r}: the gradient extrapolation coefficient must be a finite '
            'number >= 0. Use 0 for plain SGD or 0.5 for two-step Adams-Bashforth.'
        )
    if not (math.isfinite(momentum) and momentum >= 0):
        raise ValueError(f'Invalid momentum={momentum!r}: momentum must be a finite number >= 0.')
    if not (math.isfinite(dampening) and 0 <= dampening <= 1):
        raise ValueError(f'Invalid dampening={dampening!r}: dampening must be in [0, 1].')
    if not (math.isfinite(weight_decay) and weight_decay >= 0):
        raise ValueError(
            f'Invalid weight_decay={weight_decay!r}: weight decay must be a finite number >= 0.'
        )
    if group['nesterov'] and momentum == 0:
        raise ValueError(
            f'Invalid combination nesterov=True with momentum={momentum!r}: Nesterov momentum '
            'needs momentum > 0. Set momentum > 0 or nesterov=False.'
        )
    if group['nesterov'] and dampening != 0:
        raise ValueError(
            f'Invalid combination nesterov=True with dampening={dampening!r}: Nesterov momentum '
            'needs dampening=0. Set dampening=0 or nesterov=False.'
        )


@OPTIMIZERS.register_module()
class MultistepSGD(Optimizer):
    r"""SGD along a gradient extrapolated linearly from the previous step.

    For a parameter :math:`x` with gradient :math:`g_k` at step :math:`k`, one step is

    .. math::

        \tilde g_k &= g_k + \lambda_{wd}\, x_k \\
        d_k &= \tilde g_k + \alpha (\tilde g_k - \tilde g_{k-1}), \qquad d_0 = \tilde g_0 \\
        b_k &= \mu b_{k-1} + (1 - \tau) d_k, \qquad b_0 = d_0 \\
        u_k &= d_k + \mu b_k \ \text{(Nesterov)}, \quad u_k = b_k \ \text{(otherwise)},
        \quad u_k = d_k \ \text{if } \mu = 0 \\
        x_{k+1} &= x_k - \eta\, u_k

    with learning rate :math:`\eta`, weight decay :math:`\lambda_{wd}`, momentum :math:`\mu` and
    dampening :math:`\tau`. Everything after :math:`d_k` is torch.optim.SGD applied to
    :math:`d_k` in place of the gradient.

    With :math:`\mu = 0` and :math:`\alpha = 1/2` this is the two-step Adams–Bashforth method
    applied to the gradient flow :math:`\dot x = -\nabla F(x)`:
    :math:`x_{k+1} = x_k - \eta (\tfrac32 \nabla F(x_k) - \tfrac12 \nabla F(x_{k-1}))`.
    On :math:`F(x) = \tfrac12 \lambda x^2` without momentum the iteration converges if and only if
    :math:`0 < \eta\lambda < 2 / (1 + 2\alpha)`, because exactly then both roots of the
    characteristic polynomial :math:`z^2 - (1 - (1 + \alpha)\eta\lambda) z - \alpha\eta\lambda`
    lie inside the unit circle. A larger :math:`\alpha` extrapolates further but allows a
    smaller step.

    Weight decay is added to the gradient before the extrapolation, so the method extrapolates
    the gradient of the objective that SGD's coupled weight decay minimises,
    :math:`F(x) = L(x) + \tfrac12 \lambda_{wd} \lVert x \rVert^2`, and the bound above applies with
    :math:`\lambda` the curvature of :math:`F`. With :math:`\alpha = 0` the step runs the same
    tensor operations in the same order as torch.optim.SGD's single-tensor (non-foreach) code,
    so the iterates are bit-identical to it.

    NOTE: bit-identity is tested against ``torch.optim.SGD(foreach=False)`` on CPU with torch
    2.13. On CUDA, SGD defaults to foreach kernels, which were not compared and may round
    differently.

    State per parameter: ``momentum_buffer`` (:math:`b_k`, only when momentum > 0, as in
    torch.optim.SGD) and ``previous_grad`` (:math:`\tilde g_{k}` of the last step, only when
    alpha > 0). All work is elementwise, so DDP ranks that receive the same all-reduced
    gradients stay in step without extra communication. Parameters whose ``grad`` is None are
    skipped and their state is left as it is.

    lr, alpha, momentum, dampening, weight_decay and nesterov are read from ``param_groups`` on
    every step, so hooks and parameter schedulers (for example MMYOLO's
    YOLOv5ParamSchedulerHook) drive them. Their validity is checked only when a group is added.
    Setting alpha to 0 drops ``previous_grad``, so a later alpha > 0 starts again with
    :math:`d = \tilde g`.

    Args:
        params: Parameters or parameter-group dicts to optimize. A group dict may override any
            of the arguments below.
        lr: Learning rate, finite and >= 0.
        alpha: Gradient extrapolation coefficient, finite and >= 0. 0 gives torch.optim.SGD,
            0.5 without momentum gives two-step Adams–Bashforth.
        momentum: Momentum factor, finite and >= 0.
        dampening: Dampening for momentum, in [0, 1].
        weight_decay: Coupled L2 weight decay factor, finite and >= 0.
        nesterov: Whether to use Nesterov momentum. Needs momentum > 0 and dampening = 0.

    Raises:
        ValueError: If a hyperparameter of any group is invalid, with the value and the
            allowed range in the message.
    """

    def __init__(
        self,
        params: Union[Iterable[torch.Tensor], Iterable[Dict[str, Any]]],
        lr: float,
        alpha: float = 0.5,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr,
            alpha=alpha,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
        )
        super().__init__(params, defaults)

    def add_param_group(self, param_group: Dict[str, Any]) -> None:
        """Check the hyperparameters of a group, with defaults filled in, and add the group."""
        _check_group_hyperparameters({**self.defaults, **param_group})
        super().add_param_group(param_group)

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], torch.Tensor]] = None) -> Optional[torch.Tensor]:
        """Update every parameter that has a gradient by one step.

        Args:
            closure: Optional callable that recomputes the loss with gradients enabled and
                returns it.

        Returns:
            The loss returned by ``closure``, or None without a closure.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        for group in self.param_groups:
            for param in group['params']:
                if param.grad is None:
                    continue
                if param.grad.is_sparse:
                    raise RuntimeError(
                        'MultistepSGD does not support sparse gradients. Use a dense embedding '
                        '(sparse=False) or torch.optim.SGD.'
                    )
                self._update_parameter(param, group)

        return loss

    def _update_parameter(self, param: torch.Tensor, group: Dict[str, Any]) -> None:
        # The operations mirror torch.optim.SGD's single-tensor path one for one, so alpha=0
        # reproduces it bit for bit. Do not fuse or reorder them.
        lr = group['lr']
        alpha = group['alpha']
        momentum = group['momentum']
        dampening = group['dampening']
        weight_decay = group['weight_decay']

        grad = param.grad
        if weight_decay != 0:
            grad = grad.add(param, alpha=weight_decay)

        # d = g + alpha * (g - g_prev), with g_prev = g on the first step.
        if alpha != 0:
            state = self.state[param]
            previous_grad = state.get('previous_grad')
            if previous_grad is None:
                state['previous_grad'] = grad.detach().clone()
            else:
                direction = grad.sub(previous_grad).mul_(alpha).add_(grad)
                previous_grad.copy_(grad)
                grad = direction
        elif param in self.state:
            self.state[param].pop('previous_grad', None)

        # Momentum, dampening and Nesterov as in torch.optim.SGD. A buffer from an earlier step
        # with momentum > 0 is kept unchanged while momentum is 0, as SGD does.
        if momentum != 0:
            state = self.state[param]
            momentum_buffer = state.get('momentum_buffer')
            if momentum_buffer is None:
                momentum_buffer = grad.detach().clone()
                state['momentum_buffer'] = momentum_buffer
            else:
                momentum_buffer.mul_(momentum).add_(grad, alpha=1 - dampening)
            if group['nesterov']:
                grad = grad.add(momentum_buffer, alpha=momentum)
            else:
                grad = momentum_buffer

        param.add_(grad, alpha=-lr)
