"""The fused log-loss against the reference (autograd through margins.log_losses)."""

from __future__ import annotations

import math

import pytest
import torch

from marginrobust import margins
from marginrobust.margins import log_losses
from marginrobust.train.fused_loss import (
    SMALL_S,
    FusedLogLoss,
    framed_loss,
    framed_loss_and_log_losses,
    fused_log_losses,
)

RTOL = 1e-12


def reference(logits: torch.Tensor, y: torch.Tensor, frame: float) -> torch.Tensor:
    """What the trainer back-propagates today."""
    return torch.exp(log_losses(logits, y) - frame).mean()


def log_mean_loss(logits: torch.Tensor, y: torch.Tensor) -> float:
    """The frame the loss-based schedule would hold: log of the mean loss."""
    with torch.no_grad():
        return float(torch.logsumexp(log_losses(logits, y), 0)) - math.log(len(y))


def both(logits: torch.Tensor, y: torch.Tensor, frame: float):
    """(value, gradient) of the reference and of the fused loss, from the same logits."""
    out = []
    for fn in (reference, framed_loss):
        z = logits.detach().clone().requires_grad_(True)
        value = fn(z, y, frame)
        value.backward()
        out.append((value.detach(), z.grad))
    return out


def assert_close(a: torch.Tensor, b: torch.Tensor, rtol: float = RTOL) -> None:
    """Elementwise relative agreement; entries far below the largest may differ by rtol of it."""
    scale = float(b.abs().max()) if b.numel() else 0.0
    torch.testing.assert_close(a, b, rtol=rtol, atol=rtol * scale * 1e-3)


def random_logits(n: int = 64, k: int = 10, scale: float = 3.0, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    logits = scale * torch.randn(n, k, generator=gen, dtype=torch.float64)
    y = torch.randint(0, k, (n,), generator=gen)
    return logits, y


def test_the_switch_is_the_reference_one():
    assert SMALL_S == margins._SMALL_S


@pytest.mark.parametrize("scale", [0.1, 1.0, 3.0, 10.0])
def test_values_and_gradients_equal_the_reference_on_random_logits(scale):
    logits, y = random_logits(scale=scale)
    frame = log_mean_loss(logits, y)
    (v_ref, g_ref), (v, g) = both(logits, y, frame)
    assert v.dtype == torch.float64 and v.dim() == 0
    # The same formulas in the same order: the values are the reference's bits.
    assert torch.equal(v, v_ref)
    assert_close(g, g_ref)
    # The per-example log losses from the same forward are margins.log_losses' values.
    _, log_l = framed_loss_and_log_losses(logits, y, frame)
    assert torch.equal(log_l, log_losses(logits, y))


@pytest.mark.parametrize("scale", [1e3, 1e4, 1e5])
def test_huge_margins_far_below_the_float64_range(scale):
    """Correctly classified points with margins of ~6e3..6e5: log10 𝓛 from −2,000 down."""
    noise, y = random_logits(n=50, scale=0.3, seed=1)
    logits = scale * (noise + 8.0 * torch.nn.functional.one_hot(y, 10))
    frame = log_mean_loss(logits, y)
    log10_loss = float(torch.logsumexp(log_losses(logits, y), 0)) / math.log(10)
    assert log10_loss <= -1000
    (v_ref, g_ref), (v, g) = both(logits, y, frame)
    assert torch.isfinite(v) and torch.isfinite(g).all() and g.abs().max() > 0
    assert_close(v, v_ref)
    assert_close(g, g_ref)
    # Without a frame the relative loss underflows to 0 in both, and nothing turns NaN.
    (v0_ref, g0_ref), (v0, g0) = both(logits, y, 0.0)
    assert float(v0) == float(v0_ref) == 0.0
    assert torch.equal(g0, g0_ref)


def test_float32_logits_as_the_trainer_has_them():
    """Float32 logits: the float64 values agree and the float32 gradients agree to rounding."""
    logits, y = random_logits(scale=5.0, seed=2)
    logits = (logits * 20).float()
    frame = log_mean_loss(logits, y)
    (v_ref, g_ref), (v, g) = both(logits, y, frame)
    assert g.dtype == torch.float32
    assert_close(v, v_ref)
    torch.testing.assert_close(g, g_ref, rtol=2e-7, atol=0)


def test_ties_between_classes():
    # Row 0: every logit equal (s = log 9); row 1: f_y tied with one other class (q = 0);
    # row 2: two runners-up tied; row 3: tied runners-up far below f_y (small-s branch).
    logits = torch.tensor([[1.0] * 10,
                           [2.0, 2.0, 0.0, -1.0, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0],
                           [5.0, 3.0, 3.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
                           [80.0, 20.0, 20.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]],
                          dtype=torch.float64)
    y = torch.tensor([3, 0, 0, 0])
    frame = log_mean_loss(logits, y)
    (v_ref, g_ref), (v, g) = both(logits, y, frame)
    assert_close(v, v_ref)
    assert_close(g, g_ref)
    # A tie splits the softmax weight evenly: both runners-up get the same gradient.
    assert g[2, 1] == g[2, 2] and g[3, 1] == g[3, 2]


@pytest.mark.parametrize("scale", [1.0, 10.0, 1e3])
def test_misclassified_points(scale):
    """Every point misclassified, s from ~1 up to ~1e3 (softplus's linear branch above 20)."""
    logits, _ = random_logits(n=40, scale=1.0, seed=3)
    logits = logits * scale
    y = logits.argmin(1)
    frame = log_mean_loss(logits, y)
    (v_ref, g_ref), (v, g) = both(logits, y, frame)
    assert_close(v, v_ref)
    assert_close(g, g_ref)


def test_both_sides_of_the_branch_switch():
    """s just above and just below −30, where the asymptotic form takes over."""
    deltas = torch.tensor([-30.0 - 1e-9, -30.0, -30.0 + 1e-9, -29.0, -31.0, -745.0, -800.0],
                          dtype=torch.float64)
    logits = torch.stack([torch.zeros_like(deltas), deltas], dim=1)  # s = f_1 − f_0
    y = torch.zeros(len(deltas), dtype=torch.long)
    frame = log_mean_loss(logits, y)
    (v_ref, g_ref), (v, g) = both(logits, y, frame)
    assert_close(v, v_ref)
    at = 1  # s = −30 exactly
    rest = [i for i in range(len(deltas)) if i != at]
    assert_close(g[rest], g_ref[rest])
    # At s = −30 exactly the reference's gradient is 0 (both clamps stop it there, a
    # measure-zero gap); the closed form is continuous across the switch.
    assert torch.equal(g_ref[at], torch.zeros(2, dtype=torch.float64))
    assert_close(g[at], g[at - 1], rtol=1e-8)
    assert_close(g[at], g[at + 1], rtol=1e-8)


def test_log_losses_output_has_the_reference_gradient():
    """fused_log_losses is margins.log_losses with the fused backward, for any upstream."""
    logits, y = random_logits(n=32, scale=30.0, seed=4)
    upstream = torch.randn(32, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    grads = []
    for fn in (log_losses, fused_log_losses):
        z = logits.clone().requires_grad_(True)
        out = fn(z, y)
        (out * upstream).sum().backward()
        grads.append((out.detach(), z.grad))
    assert_close(grads[1][0], grads[0][0])
    assert_close(grads[1][1], grads[0][1])


def test_both_outputs_at_once_add_their_gradients():
    logits, y = random_logits(n=16, seed=6)
    frame = log_mean_loss(logits, y)
    z_ref = logits.clone().requires_grad_(True)
    log_l = log_losses(z_ref, y)
    (torch.exp(log_l - frame).mean() + 0.25 * log_l.sum()).backward()
    z = logits.clone().requires_grad_(True)
    rel, log_l = framed_loss_and_log_losses(z, y, frame)
    (rel + 0.25 * log_l.sum()).backward()
    assert_close(z.grad, z_ref.grad)


@pytest.mark.parametrize("scale", [1.0, 15.0])
def test_gradcheck_in_float64(scale):
    """Finite differences agree with the closed form (both outputs, both branches)."""
    logits, y = random_logits(n=6, k=5, scale=scale, seed=7)
    frame = log_mean_loss(logits, y)
    z = logits.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: FusedLogLoss.apply(t, y, frame), (z,),
                                    eps=1e-6, atol=1e-8, rtol=1e-6)


def test_one_sgd_step_matches_the_reference_step():
    """The swap in the trainer: the same model after one SGD step on either loss."""
    from marginrobust import create_model

    torch.manual_seed(0)
    models = [create_model("mlp", in_chans=1, img_size=8, widths=(32,)) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    gen = torch.Generator().manual_seed(8)
    x, y = torch.rand(50, 1, 8, 8, generator=gen), torch.randint(0, 10, (50,), generator=gen)
    frame = log_mean_loss(models[0](x), y)
    for model, fn in zip(models, (reference, framed_loss)):
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        fn(model(x), y, frame).backward()
        opt.step()
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_one_class_is_refused_and_an_unused_output_costs_nothing():
    with pytest.raises(ValueError, match="at least two classes"):
        framed_loss(torch.zeros(3, 1), torch.zeros(3, dtype=torch.long))
    # No gradient asked for: the function is a plain forward.
    logits, y = random_logits(n=4)
    with torch.no_grad():
        assert torch.equal(framed_loss(logits, y, 0.0), reference(logits, y, 0.0))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("scale", [1.0, 1e3])
def test_fused_loss_on_cuda_matches_the_reference(scale):
    """The same agreement with cuda kernels, float32 logits as in training."""
    noise, y = random_logits(n=100, scale=0.3, seed=9)
    logits = (scale * (noise + 3.0 * torch.nn.functional.one_hot(y, 10))).float().cuda()
    y = y.cuda()
    frame = log_mean_loss(logits, y)
    (v_ref, g_ref), (v, g) = both(logits, y, frame)
    assert torch.equal(v, v_ref)
    torch.testing.assert_close(g, g_ref, rtol=2e-6, atol=1e-6 * float(g_ref.abs().max()))
    # And the same numbers as the CPU's.
    (v_cpu, g_cpu), _ = both(logits.cpu(), y.cpu(), frame)
    torch.testing.assert_close(v.cpu(), v_cpu, rtol=1e-12, atol=0)
