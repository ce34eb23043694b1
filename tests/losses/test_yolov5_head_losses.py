"""YOLOv5 head distillation losses on small seeded head outputs.

Shapes: N=2 images, A=3 anchors, K=4 classes, two levels of 4x4 and 2x2 cells.
"""

import pytest
import torch
import torch.nn.functional as F

from kd_plugin.losses import (
    YOLOv5BBoxDistillLoss,
    YOLOv5ClsDistillLoss,
    YOLOv5ObjDistillLoss,
    binary_kl_with_logits,
    flatten_priors,
)

N, A, K = 2, 3, 4
SIZES = [(4, 4), (2, 2)]
LOSSES = [
    (YOLOv5ClsDistillLoss, {}),
    (YOLOv5ClsDistillLoss, {'mode': 'softmax'}),
    (YOLOv5ObjDistillLoss, {}),
    (YOLOv5BBoxDistillLoss, {}),
]


def head_outputs(seed: int, scale: float = 3.0):
    """Random raw YOLOv5 head maps: ([N, A*K, H, W]..., [N, A*4, H, W]..., [N, A, H, W]...)."""
    generator = torch.Generator().manual_seed(seed)

    def maps(channels):
        return [scale * torch.randn(N, channels, h, w, generator=generator) for h, w in SIZES]

    return maps(A * K), maps(A * 4), maps(A)


def test_flatten_priors_keeps_anchor_and_class_apart():
    # Channel a*K + k of cell (y, x) must land at prior a*H*W + y*W + x, attribute k.
    level = torch.arange(N * A * K * 2 * 3, dtype=torch.float32).view(N, A * K, 2, 3)
    flat = flatten_priors([level], K, 'cls_scores')
    assert flat.shape == (N, A * 2 * 3, K)
    assert flat[1, 2 * 6 + 1 * 3 + 2, 3] == level[1, 2 * K + 3, 1, 2]


@pytest.mark.parametrize('loss_cls, kwargs', LOSSES)
@pytest.mark.parametrize('temperature', [0.5, 1.0, 4.0, 16.0])
def test_identical_outputs_give_zero_loss(loss_cls, kwargs, temperature):
    outputs = head_outputs(seed=0)
    loss = loss_cls(temperature=temperature, **kwargs)(outputs, outputs)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize('loss_cls, kwargs', LOSSES)
def test_different_outputs_give_positive_loss(loss_cls, kwargs):
    loss = loss_cls(**kwargs)(head_outputs(seed=0), head_outputs(seed=1))
    assert loss.item() > 1e-3


@pytest.mark.parametrize('temperature', [1.0, 2.0, 8.0])
def test_objectness_loss_is_t_squared_times_kl(temperature):
    student, teacher = head_outputs(seed=0), head_outputs(seed=1)
    loss = YOLOv5ObjDistillLoss(temperature=temperature)(student, teacher)
    # Worked by hand: the mean binary KL of the tempered objectness logits over all
    # N * A * (16 + 4) priors, times T^2, times the N = 2 images of the batch.
    student_obj = torch.cat([m.flatten() for m in student[2]]) / temperature
    teacher_obj = torch.cat([m.flatten() for m in teacher[2]]) / temperature
    expected = binary_kl_with_logits(student_obj, teacher_obj).mean() * temperature**2 * N
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize('loss_cls, kwargs', LOSSES)
def test_t_squared_keeps_gradient_size(loss_cls, kwargs):
    # For large T, T^2 * KL has gradient (z_s - z_t) / 4 per sigmoid output (or a softmax
    # equivalent), so going from T=8 to T=32 changes the gradient norm by a few percent, while
    # without the T^2 factor it would shrink 16-fold.
    teacher = head_outputs(seed=1, scale=0.5)
    norms = []
    for temperature in (8.0, 32.0):
        student = [[m.clone().requires_grad_() for m in part] for part in head_outputs(0, 0.5)]
        loss_cls(temperature=temperature, **kwargs)(student, teacher).backward()
        grads = [m.grad.flatten() for part in student for m in part if m.grad is not None]
        norms.append(torch.cat(grads).norm())
    assert norms[1] / norms[0] == pytest.approx(1.0, rel=0.1)


def test_softmax_is_taken_per_anchor_not_over_anchors_and_classes():
    # A constant added to all K class logits of one anchor leaves that anchor's softmax over
    # classes unchanged, so the per-anchor loss is zero. A softmax over all A*K channels of the
    # raw map would see the anchors' logits shift against each other and give a positive loss.
    teacher = head_outputs(seed=0)
    offsets = torch.tensor([0.0, 5.0, -3.0]).repeat_interleave(K).view(1, A * K, 1, 1)
    student = ([m + offsets for m in teacher[0]], teacher[1], teacher[2])
    loss = YOLOv5ClsDistillLoss(mode='softmax', temperature=2.0)(student, teacher)
    assert loss.item() == pytest.approx(0.0, abs=1e-5)

    mixed = F.kl_div(
        F.log_softmax(student[0][0] / 2.0, dim=1),
        F.log_softmax(teacher[0][0] / 2.0, dim=1),
        log_target=True,
        reduction='batchmean',
    )
    assert mixed.item() > 0.1


def test_class_loss_weights_priors_by_teacher_objectness():
    # Make the teacher certain that only prior 0 of level 0 contains an object: the weighted class
    # loss then equals the class KL of that prior alone (as a plain mean, not batch-scaled).
    student, teacher = head_outputs(seed=0), head_outputs(seed=1)
    teacher_obj = [torch.full_like(m, -50.0) for m in teacher[2]]
    teacher_obj[0][:, 0, 0, 0] = 50.0
    teacher = (teacher[0], teacher[1], teacher_obj)
    loss = YOLOv5ClsDistillLoss(temperature=1.0, scale_by_batch_size=False)(student, teacher)
    per_class = binary_kl_with_logits(student[0][0][:, :K, 0, 0], teacher[0][0][:, :K, 0, 0])
    torch.testing.assert_close(loss, per_class.mean(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize('loss_cls, kwargs', LOSSES)
def test_loss_is_float32_under_bfloat16(loss_cls, kwargs):
    student = [[m.bfloat16() for m in part] for part in head_outputs(seed=0)]
    teacher = [[m.bfloat16() for m in part] for part in head_outputs(seed=1)]
    with torch.autocast(device_type='cpu', dtype=torch.bfloat16):
        loss = loss_cls(**kwargs)(student, teacher)
    assert loss.dtype == torch.float32


def test_shape_mismatch_names_both_shapes():
    student, teacher = head_outputs(seed=0), head_outputs(seed=1)
    teacher = ([m[:, : A * 2] for m in teacher[0]], teacher[1], teacher[2])
    with pytest.raises(
        ValueError, match=r'student shape \(2, 12, 4, 4\).*teacher shape \(2, 6, 4, 4\)'
    ):
        YOLOv5ClsDistillLoss()(student, teacher)


@pytest.mark.parametrize('temperature', [0, -1.0, float('nan'), float('inf')])
def test_invalid_temperature_is_rejected(temperature):
    with pytest.raises(ValueError, match='temperature must be a finite number > 0'):
        YOLOv5ClsDistillLoss(temperature=temperature)


def test_invalid_mode_is_rejected():
    with pytest.raises(ValueError, match="mode must be 'sigmoid' or 'softmax', got 'kl'"):
        YOLOv5ClsDistillLoss(mode='kl')


@pytest.mark.parametrize('loss_cls, kwargs', LOSSES)
def test_loss_scales_with_images_in_batch(loss_cls, kwargs):
    # YOLOv5Head multiplies its task losses by the batch size; so do these, by default.
    student, teacher = head_outputs(seed=0), head_outputs(seed=1)
    scaled = loss_cls(**kwargs)(student, teacher)
    plain = loss_cls(scale_by_batch_size=False, **kwargs)(student, teacher)
    torch.testing.assert_close(scaled, N * plain)
