"""Margin formulas (docs/science.md: margins, smoothed margin in the log domain) against mpmath."""

from __future__ import annotations

import copy
import math

import mpmath
import pytest
import torch

from marginrobust import margin_stats
from marginrobust.margins import log_losses, neg_log_expm1, per_example_margins

mpmath.mp.dps = 60


def mp_reference(logits: torch.Tensor, y: torch.Tensor, params: list[torch.Tensor],
                 layers: list[torch.Tensor], order: int) -> dict:
    """The docs/science.md formulas evaluated with 60-digit arithmetic from float64 logits."""
    z = [[mpmath.mpf(float(v)) for v in row] for row in logits.double()]
    total = mpmath.mpf(0)
    qs = []
    for row, label in zip(z, y.tolist()):
        others = [v for j, v in enumerate(row) if j != label]
        total += mpmath.log1p(sum(mpmath.exp(v - row[label]) for v in others))
        qs.append(row[label] - max(others))
    rho = mpmath.sqrt(sum(mpmath.mpf(float(v)) ** 2
                          for p in params for v in p.detach().double().flatten()))
    prod = mpmath.mpf(1)
    for tensors in layers:
        prod *= mpmath.sqrt(sum(mpmath.mpf(float(v)) ** 2 for t in tensors
                                for v in t.detach().double().flatten()))
    q_min = min(qs)
    return {
        "log10_loss": mpmath.log10(total),
        "log10_mean_loss": mpmath.log10(total / len(qs)),
        "q_min": q_min,
        "normalized_margin": q_min / rho**order,
        "product_margin": q_min / prod,
        "smoothed_margin": -mpmath.log(mpmath.expm1(total)) / rho**order,
        "near_support": [sum(1 for q in qs if q < q_min + k * mpmath.log(10)) for k in range(1, 8)],
    }


def scaled_double(model: torch.nn.Module, c: float) -> torch.nn.Module:
    m = copy.deepcopy(model).double()
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(c)
    return m


def check_against_reference(model, x, y, order=2, rtol=1e-9):
    stats = margin_stats(model, x, y, order=order)
    logits = model(x).detach()
    layers = [[m.weight] + ([m.bias] if m.bias is not None else [])
              for m in model.modules() if isinstance(m, torch.nn.Linear)]
    ref = mp_reference(logits, y, list(model.parameters()), layers, order)
    for key in ("log10_loss", "log10_mean_loss", "q_min", "normalized_margin", "product_margin",
                "smoothed_margin"):
        assert math.isfinite(stats[key]), key
        assert stats[key] == pytest.approx(float(ref[key]), rel=rtol), key
    assert stats["near_support"] == ref["near_support"]
    return stats


@pytest.mark.parametrize("c", [1.0, 3.0, 300.0, 3000.0])
def test_margins_match_mpmath_down_to_huge_negative_log_loss(trained_mlp, digits, c):
    # Scaling a homogeneous net's parameters by c multiplies every logit by c^L: an exact
    # way to reach losses of 1e-1000 and far below (c = 3000 gives log10 loss < -10^5).
    x, y = digits.x_train[:120].double(), digits.y_train[:120]
    stats = check_against_reference(scaled_double(trained_mlp, c), x, y)
    if c >= 300.0:
        assert stats["log10_loss"] < -1000


def test_scaling_leaves_normalized_margins_unchanged(trained_mlp, digits):
    x, y = digits.x_train.double(), digits.y_train
    base = margin_stats(scaled_double(trained_mlp, 1.0), x, y, order=2)
    far = margin_stats(scaled_double(trained_mlp, 300.0), x, y, order=2)
    assert far["log10_loss"] < -1000 < base["log10_loss"]
    assert far["normalized_margin"] == pytest.approx(base["normalized_margin"], rel=1e-9)
    assert far["product_margin"] == pytest.approx(base["product_margin"], rel=1e-9)
    # The smoothed margin approaches the normalized one from below as the loss vanishes.
    assert base["smoothed_margin"] < far["smoothed_margin"] <= far["normalized_margin"]
    assert far["smoothed_margin"] == pytest.approx(far["normalized_margin"], rel=1e-3)


def test_float32_model_measures_finite_at_log10_loss_below_minus_1000(trained_mlp, digits):
    m = scaled_double(trained_mlp, 300.0).float()
    stats = margin_stats(m, digits.x_train, digits.y_train, order="auto")
    assert stats["homogeneity_order"] == 2
    assert stats["log10_loss"] < -1000
    for key, value in stats.items():
        if isinstance(value, float):
            assert math.isfinite(value) and value != 0.0, key


def test_log_losses_gradient_finite_for_extreme_logits():
    logits = torch.tensor([[5000.0, 0.0, -10.0], [0.0, 1e-3, 2.0], [-800.0, 800.0, 0.0]],
                          dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 2, 1])
    log_l = log_losses(logits, y)
    assert torch.isfinite(log_l).all()
    ref = [mpmath.log(mpmath.log1p(sum(mpmath.exp(mpmath.mpf(float(v)) - float(r[t]))
                                         for j, v in enumerate(r) if j != t)))
           for r, t in zip(logits.detach(), y.tolist())]
    for got, want in zip(log_l.tolist(), ref):
        assert got == pytest.approx(float(want), rel=1e-12)
    log_l.sum().backward()
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("log_loss", [-3000.0, -40.0, -25.0, -1.0, 0.0, 2.0, 3.5, 50.0, 800.0])
def test_neg_log_expm1_matches_mpmath(log_loss):
    want = -mpmath.log(mpmath.expm1(mpmath.exp(mpmath.mpf(log_loss))))
    assert neg_log_expm1(log_loss) == pytest.approx(float(want), rel=1e-12, abs=1e-300)


def test_per_example_margin_is_top_gap():
    logits = torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, -1.0]])
    q = per_example_margins(logits, torch.tensor([0, 0]))
    assert q.tolist() == [1.0, -5.0]
