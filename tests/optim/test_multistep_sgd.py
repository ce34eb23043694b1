"""Tests of MultistepSGD: SGD parity at alpha=0, Adams-Bashforth steps, stability and state."""

import copy
import io
import math
import re
from typing import Dict, List

import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.registry import OPTIMIZERS

from kd_plugin.optim import MultistepSGD


def _build_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))


def _param_groups(model: nn.Module) -> List[Dict]:
    # Three groups with different overrides, like the YOLOv5 constructor's groups.
    return [
        dict(params=list(model[0].parameters()), lr=0.05),
        dict(params=[model[2].weight], weight_decay=1e-3),
        dict(params=[model[2].bias]),
    ]


def _train_step(model: nn.Module, optimizer: torch.optim.Optimizer, step: int) -> None:
    generator = torch.Generator().manual_seed(step)
    inputs = torch.randn(5, 4, generator=generator)
    targets = torch.randn(5, 2, generator=generator)
    optimizer.zero_grad()
    loss = ((model(inputs) - targets) ** 2).mean()
    loss.backward()
    optimizer.step()


SGD_PARITY_CASES = {
    'nesterov': dict(momentum=0.9, dampening=0.0, weight_decay=5e-4, nesterov=True),
    'momentum_dampening': dict(momentum=0.9, dampening=0.3, weight_decay=5e-4, nesterov=False),
    'no_momentum': dict(momentum=0.0, dampening=0.0, weight_decay=5e-4, nesterov=False),
}


@pytest.mark.parametrize('case', list(SGD_PARITY_CASES))
def test_alpha_zero_matches_sgd_bitwise(case: str) -> None:
    hyperparameters = SGD_PARITY_CASES[case]
    sgd_model = _build_mlp()
    multistep_model = copy.deepcopy(sgd_model)
    sgd = torch.optim.SGD(_param_groups(sgd_model), lr=0.1, foreach=False, **hyperparameters)
    multistep = MultistepSGD(_param_groups(multistep_model), lr=0.1, alpha=0.0, **hyperparameters)

    for step in range(60):
        # A schedule changes lr (and momentum, when used) between steps, as MMYOLO's warm-up
        # does with numpy floats. Both optimizers have to read the new values.
        for sgd_group, multistep_group in zip(sgd.param_groups, multistep.param_groups):
            for group in (sgd_group, multistep_group):
                group['lr'] = np.float64(0.1 * (1 + step % 7) / 7)
                if hyperparameters['momentum'] > 0:
                    group['momentum'] = np.float64(0.8 + 0.002 * step)
        _train_step(sgd_model, sgd, step)
        _train_step(multistep_model, multistep, step)
        for sgd_param, multistep_param in zip(sgd_model.parameters(), multistep_model.parameters()):
            assert torch.equal(sgd_param, multistep_param), f'step {step}'

    for sgd_param, multistep_param in zip(sgd_model.parameters(), multistep_model.parameters()):
        assert 'previous_grad' not in multistep.state[multistep_param]
        if hyperparameters['momentum'] > 0:
            assert torch.equal(
                sgd.state[sgd_param]['momentum_buffer'],
                multistep.state[multistep_param]['momentum_buffer'],
            )


# Hand-computed two-step runs on a scalar x_0 = 1 with gradients g_0 = 1 and g_1 = 3, lr 0.1,
# alpha 0.5. Weight decay is added to the gradient before the extrapolation.
#   plain:     x_1 = 1 - 0.1 * 1 = 0.9
#              d_1 = 3 + 0.5 * (3 - 1) = 4, x_2 = 0.9 - 0.4 = 0.5
#   decay 0.1: g~_0 = 1 + 0.1 * 1 = 1.1, x_1 = 1 - 0.11 = 0.89
#              g~_1 = 3 + 0.1 * 0.89 = 3.089, d_1 = 3.089 + 0.5 * (3.089 - 1.1) = 4.0835,
#              x_2 = 0.89 - 0.40835 = 0.48165
#   momentum 0.9: b_0 = d_0 = 1, x_1 = 0.9, d_1 = 4, b_1 = 0.9 * 1 + 4 = 4.9, x_2 = 0.41
#   Nesterov 0.9: b_0 = 1, u_0 = 1 + 0.9 * 1 = 1.9, x_1 = 0.81
#              d_1 = 4, b_1 = 4.9, u_1 = 4 + 0.9 * 4.9 = 8.41, x_2 = 0.81 - 0.841 = -0.031
WORKED_STEPS = [
    (dict(), 0.9, 0.5),
    (dict(weight_decay=0.1), 0.89, 0.48165),
    (dict(momentum=0.9), 0.9, 0.41),
    (dict(momentum=0.9, nesterov=True), 0.81, -0.031),
]


@pytest.mark.parametrize('options,expected_x1,expected_x2', WORKED_STEPS)
def test_two_steps_match_worked_values(
    options: Dict, expected_x1: float, expected_x2: float
) -> None:
    x = nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    optimizer = MultistepSGD([x], lr=0.1, alpha=0.5, **options)

    x.grad = torch.tensor([1.0], dtype=torch.float64)
    optimizer.step()
    assert x.item() == pytest.approx(expected_x1, rel=0, abs=1e-12)

    x.grad = torch.tensor([3.0], dtype=torch.float64)
    optimizer.step()
    assert x.item() == pytest.approx(expected_x2, rel=0, abs=1e-12)


def test_alpha_half_is_adams_bashforth() -> None:
    # On f(x) = 1/2 x^T A x the gradient is A x, and without momentum alpha = 1/2 must give
    # x_{k+1} = x_k - lr * (3/2 A x_k - 1/2 A x_{k-1}) after the first (Euler) step.
    generator = torch.Generator().manual_seed(0)
    matrix = torch.randn(3, 3, generator=generator, dtype=torch.float64)
    matrix = matrix @ matrix.T + torch.eye(3, dtype=torch.float64)
    x = nn.Parameter(torch.randn(3, generator=generator, dtype=torch.float64))
    optimizer = MultistepSGD([x], lr=0.05, alpha=0.5)
    lr = 0.05

    reference_previous = x.detach().clone()
    reference = reference_previous - lr * matrix @ reference_previous
    x.grad = matrix @ x.detach()
    optimizer.step()
    for _ in range(20):
        x.grad = matrix @ x.detach()
        optimizer.step()
        reference, reference_previous = (
            reference - lr * (1.5 * matrix @ reference - 0.5 * matrix @ reference_previous),
            reference,
        )
        torch.testing.assert_close(x.detach(), reference, rtol=1e-12, atol=1e-14)


# Stability on f(x) = 1/2 lam x^2 without momentum or weight decay, with h = lr * lam:
#   x_{k+1} = x_k - lr * lam * (x_k + alpha * (x_k - x_{k-1}))
#           = (1 - (1 + alpha) h) x_k + alpha h x_{k-1},
# so the characteristic polynomial is p(z) = z^2 + a1 z + a0 with a1 = -(1 - (1 + alpha) h)
# and a0 = -alpha h. Both roots lie strictly inside the unit circle exactly when (Jury criterion)
#   p(1)  = 1 + a1 + a0 = h > 0,
#   p(-1) = 1 - a1 + a0 = 2 - (1 + 2 alpha) h > 0, that is h < 2 / (1 + 2 alpha),
#   |a0| = alpha h < 1, which the second condition implies because 2 / (1 + 2 alpha) < 1 / alpha.
# At h = 2 / (1 + 2 alpha) a root sits at z = -1. At h = 0.98 and 1.02 times the bound the
# spectral radius is at most 0.977 and at least 1.024 for the alphas below (numpy.roots), so
# 2000 steps scale |x| by about 0.977^2000 ~ 1e-20 or 1.024^2000 ~ 4e20, far past the 1e-12 and
# 1e12 thresholds of the tests.
STABILITY_ALPHAS = [0.0, 0.25, 0.5, 1.0]
STABILITY_STEPS = 2000


def _run_scalar_quadratic(alpha: float, step_size_ratio: float) -> float:
    curvature = 4.0
    lr = step_size_ratio * 2.0 / (1.0 + 2.0 * alpha) / curvature
    x = nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    optimizer = MultistepSGD([x], lr=lr, alpha=alpha)
    for _ in range(STABILITY_STEPS):
        x.grad = curvature * x.detach()
        optimizer.step()
    return abs(x.item())


@pytest.mark.parametrize('alpha', STABILITY_ALPHAS)
def test_quadratic_converges_below_bound(alpha: float) -> None:
    assert _run_scalar_quadratic(alpha, step_size_ratio=0.98) < 1e-12


@pytest.mark.parametrize('alpha', STABILITY_ALPHAS)
def test_quadratic_diverges_above_bound(alpha: float) -> None:
    final = _run_scalar_quadratic(alpha, step_size_ratio=1.02)
    assert not math.isfinite(final) or final > 1e12


@pytest.mark.parametrize(
    'alpha,momentum,nesterov',
    [(0.5, 0.0, False), (1.0, 0.0, False), (0.5, 0.9, False), (0.5, 0.9, True)],
)
def test_positive_definite_quadratic_reaches_minimizer(
    alpha: float, momentum: float, nesterov: bool
) -> None:
    # f(x) = 1/2 x^T A x - b^T x has its minimum at A^{-1} b, and its gradient is A x - b.
    generator = torch.Generator().manual_seed(1)
    factor = torch.randn(4, 4, generator=generator, dtype=torch.float64)
    matrix = factor @ factor.T + 0.5 * torch.eye(4, dtype=torch.float64)
    vector = torch.randn(4, generator=generator, dtype=torch.float64)
    minimizer = torch.linalg.solve(matrix, vector)
    max_curvature = torch.linalg.eigvalsh(matrix).max().item()
    # Half the no-momentum bound, scaled down by (1 - momentum) so heavy-ball stays stable.
    lr = (1.0 - momentum) / ((1.0 + 2.0 * alpha) * max_curvature)
    x = nn.Parameter(torch.zeros(4, dtype=torch.float64))
    optimizer = MultistepSGD([x], lr=lr, alpha=alpha, momentum=momentum, nesterov=nesterov)

    for _ in range(3000):
        x.grad = matrix @ x.detach() - vector
        optimizer.step()

    torch.testing.assert_close(x.detach(), minimizer, rtol=0, atol=1e-9)


@pytest.mark.parametrize('momentum', [0.0, 0.9])
def test_state_dict_resume_reproduces_trajectory(momentum: float) -> None:
    options = dict(lr=0.05, alpha=0.5, momentum=momentum, weight_decay=1e-3)
    model = _build_mlp()
    optimizer = MultistepSGD(model.parameters(), **options)
    for step in range(5):
        _train_step(model, optimizer, step)
    model_snapshot = copy.deepcopy(model.state_dict())
    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)

    uninterrupted = []
    for step in range(5, 10):
        _train_step(model, optimizer, step)
        uninterrupted.append([param.detach().clone() for param in model.parameters()])

    buffer.seek(0)
    saved_state = torch.load(buffer)
    resumed_model = _build_mlp()
    resumed_model.load_state_dict(model_snapshot)
    resumed_optimizer = MultistepSGD(resumed_model.parameters(), **options)
    resumed_optimizer.load_state_dict(saved_state)
    for step, expected_params in zip(range(5, 10), uninterrupted):
        _train_step(resumed_model, resumed_optimizer, step)
        for param, expected in zip(resumed_model.parameters(), expected_params):
            assert torch.equal(param, expected), f'step {step}'

    for param_state in saved_state['state'].values():
        assert 'previous_grad' in param_state
        assert ('momentum_buffer' in param_state) == (momentum > 0)


def test_resume_without_state_differs() -> None:
    # Guards the resume test above: losing previous_grad must change the trajectory.
    options = dict(lr=0.05, alpha=0.5)
    model = _build_mlp()
    optimizer = MultistepSGD(model.parameters(), **options)
    for step in range(5):
        _train_step(model, optimizer, step)
    fresh_model = copy.deepcopy(model)
    fresh_optimizer = MultistepSGD(fresh_model.parameters(), **options)

    _train_step(model, optimizer, 5)
    _train_step(fresh_model, fresh_optimizer, 5)

    assert not torch.equal(model[0].weight, fresh_model[0].weight)


def test_parameter_without_grad_untouched() -> None:
    used = nn.Parameter(torch.ones(3))
    unused = nn.Parameter(torch.full((3,), 2.0))
    optimizer = MultistepSGD([used, unused], lr=0.1, alpha=0.5, momentum=0.9, weight_decay=0.1)

    for _ in range(3):
        used.grad = torch.ones(3)
        optimizer.step()

    assert torch.equal(unused, torch.full((3,), 2.0))
    assert unused not in optimizer.state
    assert set(optimizer.state[used]) == {'previous_grad', 'momentum_buffer'}


def test_alpha_set_to_zero_drops_previous_grad() -> None:
    x = nn.Parameter(torch.ones(2))
    optimizer = MultistepSGD([x], lr=0.1, alpha=0.5)
    x.grad = torch.ones(2)
    optimizer.step()
    assert 'previous_grad' in optimizer.state[x]

    optimizer.param_groups[0]['alpha'] = 0.0
    optimizer.step()

    assert 'previous_grad' not in optimizer.state[x]


def test_closure_loss_returned() -> None:
    x = nn.Parameter(torch.tensor([2.0]))
    optimizer = MultistepSGD([x], lr=0.1, alpha=0.5)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = (x**2).sum()
        loss.backward()
        return loss

    loss = optimizer.step(closure)

    assert loss.item() == 4.0
    # x_1 = 2 - 0.1 * 4 = 1.6
    assert x.item() == pytest.approx(1.6, rel=0, abs=1e-6)


def test_built_from_registry() -> None:
    x = nn.Parameter(torch.zeros(2))
    optimizer = OPTIMIZERS.build(
        dict(type='kd_plugin.MultistepSGD', params=[x], lr=0.01, alpha=0.5, momentum=0.937)
    )
    assert isinstance(optimizer, MultistepSGD)
    assert optimizer.param_groups[0]['alpha'] == 0.5


INVALID_ARGUMENTS = [
    (dict(lr=-0.01), 'lr=-0.01'),
    (dict(lr=float('nan')), 'lr=nan'),
    (dict(alpha=-0.1), 'alpha=-0.1'),
    (dict(alpha=float('inf')), 'alpha=inf'),
    (dict(alpha=float('nan')), 'alpha=nan'),
    (dict(momentum=-0.5), 'momentum=-0.5'),
    (dict(dampening=1.5), 'dampening=1.5'),
    (dict(weight_decay=-1e-4), 'weight_decay=-0.0001'),
    (dict(momentum=0.9, dampening=0.1, nesterov=True), 'dampening=0.1'),
    (dict(momentum=0.0, nesterov=True), 'momentum=0.0'),
]


@pytest.mark.parametrize('options,expected_text', INVALID_ARGUMENTS)
def test_invalid_argument_raises(options: Dict, expected_text: str) -> None:
    arguments = dict(lr=0.01)
    arguments.update(options)
    with pytest.raises(ValueError, match=re.escape(expected_text)):
        MultistepSGD([nn.Parameter(torch.zeros(1))], **arguments)


def test_invalid_group_override_raises() -> None:
    groups = [dict(params=[nn.Parameter(torch.zeros(1))], alpha=-1.0)]
    with pytest.raises(ValueError, match=re.escape('alpha=-1.0')):
        MultistepSGD(groups, lr=0.01)


def test_invalid_added_group_rejected() -> None:
    optimizer = MultistepSGD([nn.Parameter(torch.zeros(1))], lr=0.01)
    with pytest.raises(ValueError, match=re.escape('lr=-1.0')):
        optimizer.add_param_group(dict(params=[nn.Parameter(torch.zeros(1))], lr=-1.0))
    assert len(optimizer.param_groups) == 1


def test_sparse_gradient_raises() -> None:
    embedding = nn.Embedding(4, 2, sparse=True)
    optimizer = MultistepSGD(embedding.parameters(), lr=0.1)
    embedding(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match='sparse gradients'):
        optimizer.step()
