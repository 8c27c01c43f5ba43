"""Exact Linf verification: brute force over activation patterns, attacks and certificates."""

from __future__ import annotations

import itertools

import foolbox as fb
import numpy as np
import pytest
import torch
from scipy.optimize import linprog
from torch import nn

from marginrobust.errors import UserError
from marginrobust.evaluate.certify.exact import (
    exact_is_cheap,
    exact_linf_distances,
    exact_robust,
)
from marginrobust.evaluate.certify.lipschitz_ibp import ibp_certified, lipschitz_radii
from marginrobust.evaluate.certify.tracing import build_chain


def tiny_net(bias: bool, seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4, bias=bias), nn.ReLU(), nn.Linear(4, 3, bias=bias),
                         nn.ReLU(), nn.Linear(3, 3, bias=bias)).double().eval()


def brute_force_distance(net: nn.Sequential, x: np.ndarray, y: int) -> float:
    """min over activation patterns and target classes of the pattern's LP.

    Under a fixed pattern s of both hidden layers the net is affine, f = C_s x' + c_s, on
    the polyhedron where every pre-activation has the pattern's sign; the LP
    min eps s.t. |x' − x| ≤ eps, 0 ≤ x' ≤ 1, signs of s, f_j ≥ f_y is solved for each.
    """
    w1, w2, w3 = (net[i].weight.detach().numpy() for i in (0, 2, 4))
    b1, b2, b3 = (np.zeros(w.shape[0]) if net[i].bias is None else
                  net[i].bias.detach().numpy() for i, w in zip((0, 2, 4), (w1, w2, w3)))
    d = x.size
    best = np.inf
    for s1 in itertools.product((0.0, 1.0), repeat=w1.shape[0]):
        d1 = np.diag(s1)
        a2, c2 = w2 @ d1 @ w1, w2 @ d1 @ b1 + b2  # layer-2 pre-activation, affine in x'
        for s2 in itertools.product((0.0, 1.0), repeat=w2.shape[0]):
            d2 = np.diag(s2)
            a3, c3 = w3 @ d2 @ a2, w3 @ d2 @ c2 + b3
            # pattern rows: active ⇒ −z ≤ 0, inactive ⇒ z ≤ 0 (variables x', eps)
            sign1 = np.where(np.array(s1) > 0, -1.0, 1.0)[:, None]
            sign2 = np.where(np.array(s2) > 0, -1.0, 1.0)[:, None]
            rows = [np.hstack([sign1 * w1, np.zeros((w1.shape[0], 1))]),
                    np.hstack([sign2 * a2, np.zeros((a2.shape[0], 1))]),
                    np.hstack([np.eye(d), -np.ones((d, 1))]),
                    np.hstack([-np.eye(d), -np.ones((d, 1))])]
            rhs = [-sign1[:, 0] * b1, -sign2[:, 0] * c2, x, -x]
            for j in range(a3.shape[0]):
                if j == y:
                    continue
                # f_y − f_j ≤ 0
                a_ub = np.vstack(rows + [np.append(a3[y] - a3[j], 0.0)[None, :]])
                b_ub = np.concatenate(rhs + [[c3[j] - c3[y]]])
                res = linprog(np.append(np.zeros(d), 1.0), A_ub=a_ub, b_ub=b_ub,
                              bounds=[(0, 1)] * d + [(0, None)], method="highs")
                if res.status == 0:
                    best = min(best, res.fun)
    return best


@pytest.mark.parametrize("bias", [True, False])
def test_milp_equals_brute_force_over_activation_patterns(bias):
    net = tiny_net(bias, seed=3 if bias else 4)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, generator=gen, dtype=torch.float64)
    y = net(x).argmax(1)
    res = exact_linf_distances(net, x, y, mode="per-class")
    dis = exact_linf_distances(net, x, y, mode="disjunctive")
    for i in range(len(x)):
        ref = brute_force_distance(net, x[i].numpy(), int(y[i]))
        assert res.status[i] == "optimal" and dis.status[i] == "optimal"
        assert res.distance[i] == pytest.approx(ref, abs=1e-6, rel=1e-6)
        assert dis.distance[i] == pytest.approx(ref, abs=1e-6, rel=1e-6)
        assert res.lower[i] <= res.upper[i] + 1e-9
    assert res.verified.all() and dis.verified.all()


def small_mlp(bias: bool) -> nn.Sequential:
    torch.manual_seed(1)
    return nn.Sequential(nn.Flatten(), nn.Linear(36, 12, bias=bias), nn.ReLU(),
                         nn.Linear(12, 8, bias=bias), nn.ReLU(), nn.Linear(8, 4, bias=bias)).eval()


def small_cnn(bias: bool) -> nn.Sequential:
    torch.manual_seed(2)
    return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, bias=bias), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(18, 8, bias=bias), nn.ReLU(),
                         nn.Linear(8, 4, bias=bias)).eval()


def points(model: nn.Module, n: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, 6, 6, generator=gen)
    with torch.no_grad():
        return x, model(x).argmax(1)


def fmn_distances(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    fmodel = fb.PyTorchModel(model, bounds=(0, 1))
    torch.manual_seed(0)
    _, adv, ok = fb.attacks.LInfFMNAttack(steps=200)(fmodel, x, y, epsilons=None)
    d = (adv - x).flatten(1).abs().max(1).values.double().numpy()
    return np.where(ok.numpy(), d, np.inf)


@pytest.mark.parametrize("family", [small_mlp, small_cnn])
@pytest.mark.parametrize("bias", [True, False])
def test_milp_below_attacks_above_certificates(family, bias):
    model = family(bias)
    x, y = points(model)
    fmn = fmn_distances(model, x, y)
    res = exact_linf_distances(model, x, y, time_limit=60)
    assert (res.status == "optimal").all()
    assert res.verified.all()
    # no attack finds a closer adversarial point than the exact distance
    assert np.all(res.distance <= fmn * (1 + 1e-6) + 1e-9)
    # the returned point flips (or ties) the float32 prediction too, at that distance
    adv = torch.as_tensor(res.adversarials, dtype=torch.float32)
    with torch.no_grad():
        logits = model(adv)
    gap = logits.gather(1, y[:, None])[:, 0] - logits.scatter(1, y[:, None], -np.inf).max(1).values
    assert torch.all(gap <= 1e-4 * logits.abs().max())
    np.testing.assert_allclose((adv - x).flatten(1).abs().max(1).values.numpy(), res.distance,
                               atol=1e-6)
    # every certificate is below it
    lip = lipschitz_radii(model, x, y)
    assert np.all(lip.linf <= res.distance + 1e-9)
    for i in range(len(x)):
        d = float(res.distance[i])
        assert not ibp_certified(model, x[i:i + 1], y[i:i + 1], d * (1 + 1e-6), "Linf")[0]
    # the feasibility MILP agrees on both sides of the distance
    for i in range(2):
        d = float(res.distance[i])
        below = exact_robust(model, x[i:i + 1], y[i:i + 1], d * (1 - 1e-4))
        above = exact_robust(model, x[i:i + 1], y[i:i + 1], d * (1 + 1e-4))
        assert below.status[0] == "robust" and above.status[0] == "not robust"


@pytest.mark.parametrize("method", ["ibp", "crown", "alpha-crown"])
def test_search_radii_below_exact(method):
    from marginrobust.evaluate.certify.radius import certified_radii

    model = small_cnn(True)
    x, y = points(model)
    res = exact_linf_distances(model, x, y, bounds="crown", time_limit=60)
    radii = np.asarray(certified_radii(model, x, y, method=method, norm="Linf"))
    assert np.all(radii.reshape(-1) <= res.distance + 1e-9)


def test_misclassified_and_robust_everywhere():
    # A net whose logits never let class 1 win on [0, 1]: f = (1 + x, −1): distance inf.
    lin = nn.Linear(1, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0], [0.0]]))
        lin.bias.copy_(torch.tensor([1.0, -1.0]))
    net = nn.Sequential(lin, nn.ReLU(), nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        net[2].weight.copy_(torch.eye(2))
    x = torch.tensor([[0.5], [0.5]])
    res = exact_linf_distances(net, x, torch.tensor([0, 1]))
    assert list(res.status) == ["optimal", "misclassified"]
    assert res.distance[0] == np.inf and res.distance[1] == 0.0


def test_timeout_gives_bounds_and_status():
    model = small_cnn(False)
    x, y = points(model, 2)
    fmn = fmn_distances(model, x, y)
    lip = lipschitz_radii(model, x, y).linf
    res = exact_linf_distances(model, x, y, upper=fmn, lower=lip, time_limit=0.0)
    assert (res.status == "timeout").all()
    assert np.all(res.lower <= res.upper) and np.all(np.isnan(res.distance))
    np.testing.assert_allclose(res.lower, lip)
    np.testing.assert_allclose(res.upper, fmn)
    rob = exact_robust(model, x, y, float(fmn.max()) / 2, time_limit=0.0)
    assert set(rob.status) <= {"timeout", "robust", "not robust"}


def test_l2_is_refused_and_cheap_rule():
    model = small_mlp(False)
    x, y = points(model, 1)
    with pytest.raises(UserError, match="quadratic"):
        exact_linf_distances(model, x, y, norm="L2")
    assert exact_is_cheap(build_chain(model, (1, 6, 6)))
    big = nn.Sequential(nn.Flatten(), nn.Linear(36, 64), nn.ReLU(), nn.Linear(64, 4))
    assert not exact_is_cheap(build_chain(big, (1, 6, 6)))
