"""CROWN and alpha-CROWN: sound margin bounds (random points, PGD, a dense grid), exact
transposes of every affine op, the exact L2 ∩ box minimum, radii that hold, and the
engine's certifier sets."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import minimize
from torch import nn

from marginrobust import ThreatModel, create_model
from marginrobust.errors import UserError
from marginrobust.evaluate.certify.crown import (
    Region,
    _affine_back,
    _l2_box_min,
    _rows,
    alpha_crown_margins,
    crown_margins,
    preactivation_bounds,
)
from marginrobust.evaluate.certify.lipschitz_ibp import ibp_certified, ibp_margins, lipschitz_radii
from marginrobust.evaluate.certify.radius import certified_radii, margin_lower_bounds
from marginrobust.evaluate.certify.tracing import build_chain
from marginrobust.evaluate.engine import Evaluator, UnitRequest

pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same'")


def _mlp(bias: bool) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 20, bias=bias), nn.ReLU(),
                         nn.Linear(20, 12, bias=bias), nn.ReLU(), nn.Linear(12, 5, bias=bias))


def _cnn(bias: bool) -> nn.Module:
    """Max and average pooling, a strided / dilated / grouped conv, a leaky ReLU."""
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, bias=bias), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, padding=2, dilation=2, groups=2, bias=bias), nn.LeakyReLU(0.1),
        nn.AvgPool2d(2), nn.Dropout(0.5), nn.Flatten(), nn.Linear(24, 10, bias=bias),
        nn.ReLU(), nn.Linear(10, 5, bias=bias))


def _odd_pools() -> nn.Module:
    """Overlapping, padded, ceil-mode max pooling fed by a conv, a padded average pool,
    'same' padding with an even kernel and a leaky slope above 1."""
    return nn.Sequential(
        nn.Conv2d(1, 3, 4, padding="same"), nn.MaxPool2d(3, stride=2, padding=1,
                                                         ceil_mode=True),
        nn.ReLU(), nn.Conv2d(3, 4, 2, stride=1), nn.LeakyReLU(1.5),
        nn.AvgPool2d(3, stride=1, padding=1), nn.Flatten(), nn.Linear(4 * 3 * 3, 4))


NETS = {"mlp": (_mlp(True), (1, 4, 4)), "mlp-bias-free": (_mlp(False), (1, 4, 4)),
        "cnn": (_cnn(True), (1, 8, 8)), "cnn-bias-free": (_cnn(False), (1, 8, 8)),
        "odd-pools": (_odd_pools(), (1, 7, 7))}


def _true_margins(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """f_y − f_j (+inf at y), float64."""
    with torch.no_grad():
        z = net(x)
    return (z.gather(1, y[:, None]) - z).scatter(1, y[:, None], math.inf)


def _project(delta: torch.Tensor, x: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Into the ball of radius eps around x, then into [0, 1] (a point of the region)."""
    if norm == "Linf":
        delta = delta.clamp(-eps, eps)
    else:
        shape = (-1,) + (1,) * (x.dim() - 1)
        delta = delta * (eps / delta.flatten(1).norm(dim=1).clamp(min=1e-30)).clamp(
            max=1.0).reshape(shape)
    return (x + delta).clamp(0, 1) - x


def _samples(x: torch.Tensor, eps: float, norm: str, k: int, seed: int) -> torch.Tensor:
    """k points of each region: corners / sphere points and interior points."""
    g = torch.Generator().manual_seed(seed)
    xs = x.repeat_interleave(k, 0)
    if norm == "Linf":
        d = (torch.rand(xs.shape, generator=g, dtype=xs.dtype) * 2 - 1) * eps
        d[::2] = d[::2].sign() * eps
    else:
        d = torch.randn(xs.shape, generator=g, dtype=xs.dtype)
        d = d / d.flatten(1).norm(dim=1).reshape(-1, *[1] * (x.dim() - 1)) * eps
    return xs + _project(d, xs, eps, norm)


def _pgd(net: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str,
         steps: int = 30) -> torch.Tensor:
    """Per point and class j, PGD on f_y − f_j inside the region: (N, C) smallest margins."""
    n, classes = len(x), _true_margins(net, x[:1], y[:1]).shape[1]
    xs, ys = x.repeat_interleave(classes, 0), y.repeat_interleave(classes)
    js = torch.arange(classes).repeat(n)
    g = torch.Generator().manual_seed(0)
    delta = _project((torch.rand(xs.shape, generator=g, dtype=xs.dtype) * 2 - 1) * eps, xs,
                     eps, norm)
    best = torch.full((len(xs),), math.inf, dtype=xs.dtype)
    for _ in range(steps):
        delta.requires_grad_(True)
        z = net(xs + delta)
        m = z.gather(1, ys[:, None])[:, 0] - z.gather(1, js[:, None])[:, 0]
        (grad,) = torch.autograd.grad(m.sum(), delta)
        with torch.no_grad():
            best = torch.minimum(best, m.detach())
            if norm == "Linf":
                step = grad.sign()
            else:
                step = grad / grad.flatten(1).norm(dim=1).clamp(min=1e-30).reshape(
                    -1, *[1] * (x.dim() - 1))
            delta = _project(delta - eps / 4 * step, xs, eps, norm)
    with torch.no_grad():
        z = net(xs + delta)
        best = torch.minimum(best, z.gather(1, ys[:, None])[:, 0] - z.gather(1, js[:, None])[:, 0])
    best[js == ys] = math.inf
    return best.reshape(n, classes)


@pytest.fixture(scope="module")
def nets() -> dict[str, tuple[nn.Module, tuple[int, ...]]]:
    """Random float64 nets, biases drawn away from zero so that every unit can switch."""
    torch.manual_seed(0)
    out = {}
    for name, (net, shape) in NETS.items():
        net = copy.deepcopy(net).double().eval()
        with torch.no_grad():
            for m in net.modules():
                if getattr(m, "bias", None) is not None:
                    m.bias.uniform_(-0.3, 0.3)
        out[name] = (net, shape)
    return out


def _points(net: nn.Module, shape: tuple[int, ...], n: int = 6,
            seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, *shape, generator=g, dtype=torch.float64)
    x[0].zero_()  # on the box's corner: clipping matters
    with torch.no_grad():
        y = net(x).argmax(1)
    return x, y


@pytest.mark.parametrize("name", list(NETS))
@pytest.mark.parametrize("norm, eps", [("Linf", 0.04), ("L2", 0.25)])
def test_crown_bounds_are_below_every_margin_in_the_region(nets, name, norm, eps):
    net, shape = nets[name]
    x, y = _points(net, shape)
    chain = build_chain(net, shape)
    crown = crown_margins(chain, x, y, eps, norm)
    alpha = alpha_crown_margins(chain, x, y, eps, norm)
    assert crown.dtype == torch.float64 and crown.shape == (len(x), 5 if "mlp" in name
                                                              or "cnn" in name else 4)
    assert torch.isinf(crown.gather(1, y[:, None])).all()
    # alpha-CROWN is never looser, elementwise and exactly.
    assert (alpha >= crown).all()
    worst = _pgd(net, x, y, eps, norm)
    sampled = _true_margins(net, _samples(x, eps, norm, 64, 1), y.repeat_interleave(64, 0))
    worst = torch.minimum(worst, sampled.reshape(len(x), 64, -1).min(dim=1).values)
    finite = torch.isfinite(worst)
    assert (alpha[finite] <= worst[finite] + 1e-9).all()
    # Not vacuous: the bounds are within reach of the true margins somewhere.
    assert ((worst - crown)[finite] < 0.5 * worst.abs()[finite] + 0.05).any()




def _dense_crown(weights: list[torch.Tensor], biases: list[torch.Tensor], x: torch.Tensor,
                 y: int, eps: float) -> torch.Tensor:
    """CROWN by the textbook formulas, dense and one point at a time: an independent check.

    The Linf ball ∩ [0, 1] is the box [lo, hi]; every hidden layer's pre-activation bounds
    come from CROWN back to the input, with the upper line u(z − l)/(u − l) and the lower
    slope 1 where u ≥ −l, else 0, each intersected with the interval bounds that the
    previous layer's bounds give (both are sound, so is the tighter of the two). Returns
    the lower bounds of f_y − f_j, j ≠ y.
    """
    lo, hi = (x - eps).clamp(min=0), (x + eps).clamp(max=1)
    centre, radius = (lo + hi) / 2, (hi - lo) / 2
    layers: list[tuple[torch.Tensor, torch.Tensor]] = []

    def lower(a: torch.Tensor, k: int) -> torch.Tensor:
        # min over the box of a·z_k (rows of a), z_k the pre-activation of layer k
        const = a @ biases[k]
        a = a @ weights[k]
        for j in range(k - 1, -1, -1):
            lb, u = layers[j]
            unstable = (lb < 0) & (u > 0)
            up = torch.where(unstable, u / (u - lb), (lb >= 0).double())
            low = torch.where(unstable, (u >= -lb).double(), (lb >= 0).double())
            pos, neg = a.clamp(min=0), a.clamp(max=0)
            const = const + neg @ torch.where(unstable, -lb * up, torch.zeros_like(lb))
            a = pos * low + neg * up
            const = const + a @ biases[j]
            a = a @ weights[j]
        return a @ centre - a.abs() @ radius + const

    for k in range(len(weights) - 1):
        eye = torch.eye(weights[k].shape[0], dtype=torch.float64)
        lb, u = lower(eye, k), -lower(-eye, k)
        if k:
            w, (pl, pu) = weights[k], layers[k - 1]
            a, b = pl.clamp(min=0), pu.clamp(min=0)
            lb = torch.maximum(lb, w.clamp(min=0) @ a + w.clamp(max=0) @ b + biases[k])
            u = torch.minimum(u, w.clamp(min=0) @ b + w.clamp(max=0) @ a + biases[k])
        layers.append((lb, u))
    classes = weights[-1].shape[0]
    spec = torch.zeros(classes - 1, classes, dtype=torch.float64)
    others = [j for j in range(classes) if j != y]
    spec[:, y] = 1.0
    spec[torch.arange(classes - 1), others] = -1.0
    return lower(spec, len(weights) - 1)


def test_crown_equals_an_independent_dense_crown():
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(12, 9), nn.ReLU(), nn.Linear(9, 7), nn.ReLU(),
                        nn.Linear(7, 4)).double().eval()
    x, y = _points(net, (12,), n=8)
    linear = [m for m in net if isinstance(m, nn.Linear)]
    weights = [m.weight.detach() for m in linear]
    biases = [m.bias.detach() for m in linear]
    chain = build_chain(net, (12,))
    for eps in (0.02, 0.1):
        ours = crown_margins(chain, x, y, eps, "Linf")
        for i in range(len(y)):
            want = _dense_crown(weights, biases, x[i], int(y[i]), eps)
            got = ours[i][torch.arange(4) != y[i]]
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)

@pytest.mark.parametrize("name", ["mlp", "cnn", "odd-pools"])
def test_crown_at_radius_zero_is_the_exact_margin(nets, name):
    net, shape = nets[name]
    x, y = _points(net, shape)
    for norm in ("Linf", "L2"):
        bound = crown_margins(build_chain(net, shape), x, y, 0.0, norm)
        finite = torch.isfinite(bound)
        assert torch.allclose(bound[finite], _true_margins(net, x, y)[finite], atol=1e-10)


def test_crown_is_tighter_than_ibp_on_a_trained_net(trained_mlp, digits):
    x, y = digits.x_test[:40], digits.y_test[:40]
    chain = build_chain(trained_mlp, x.shape[1:])
    y64 = y.to(torch.long)
    crown = crown_margins(chain, x, y64, 0.02, "Linf")
    ibp = ibp_margins(chain, x, y64, 0.02)
    finite = torch.isfinite(crown)
    # Not guaranteed in general, but by far the rule on a trained net.
    assert (crown[finite] >= ibp[finite] - 1e-9).float().mean() > 0.95
    assert (crown[finite] - ibp[finite]).mean() > 0


def test_a_linear_model_gets_the_closed_form_bound():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 4)).double()
    x = torch.rand(20, 3, 4, dtype=torch.float64)
    x[:5, :, :2] = 0.0
    x[5:10, :, 2:] = 1.0
    y = torch.randint(0, 4, (20,))
    w, b = model[1].weight.detach(), model[1].bias.detach()
    xf = x.flatten(1).numpy()
    for eps in (0.0, 0.05, 0.3, 2.0):
        got = crown_margins(build_chain(model, x.shape[1:]), x, y, eps, "Linf").numpy()
        lo, hi = np.clip(xf - eps, 0, 1), np.clip(xf + eps, 0, 1)
        for i in range(20):
            for j in range(4):
                if j == y[i]:
                    continue
                a = (w[y[i]] - w[j]).numpy()
                closed = np.minimum(a * lo[i], a * hi[i]).sum() + float(b[y[i]] - b[j])
                assert got[i, j] == pytest.approx(closed, rel=1e-12, abs=1e-12)
        if eps <= 0.05:  # w·x − eps‖w‖₁ where clipping does not bind
            inner = (xf > eps).all(1) & (xf < 1 - eps).all(1)
            for i in np.flatnonzero(inner):
                a = (w[y[i]][None] - w).numpy()
                dual = a @ xf[i] - eps * np.abs(a).sum(1) + (b[y[i]] - b).numpy()
                mask = np.arange(4) != int(y[i])
                np.testing.assert_allclose(got[i][mask], dual[mask], rtol=1e-12)


def test_l2_box_minimum_matches_a_solver_and_beats_both_simple_bounds():
    rng = np.random.default_rng(0)
    for trial in range(120):
        d = int(rng.integers(1, 7))
        a = torch.tensor(rng.normal(size=(1, 1, d)))
        if trial % 5 == 0:
            a[0, 0, 0] = 0.0
        x = torch.tensor(rng.uniform(size=d))
        if trial % 3 == 0:
            x[0] = 0.0
        eps = float(rng.uniform(0, 1.5))
        lo = (x - eps).clamp(min=0) - x
        hi = (x + eps).clamp(max=1) - x
        got = float(_l2_box_min(a, lo[None, None], hi[None, None],
                                torch.tensor([eps], dtype=torch.float64)))
        av, lv, hv = a[0, 0].numpy(), lo.numpy(), hi.numpy()
        best = math.inf
        for _ in range(4):
            z0 = np.clip(rng.normal(size=d) * eps / 4, lv, hv)
            res = minimize(lambda z, av=av: av @ z, z0, jac=lambda z, av=av: av,
                           bounds=list(zip(lv, hv)),
                           constraints=[{"type": "ineq",
                                         "fun": lambda z, eps=eps: eps ** 2 - z @ z,
                                         "jac": lambda z: -2 * z}],
                           method="SLSQP", options={"ftol": 1e-14, "maxiter": 500})
            if res.success and res.x @ res.x <= eps ** 2 + 1e-9:
                best = min(best, float(res.fun))
        box = float((np.where(av > 0, lv, hv) * av).sum())
        l2 = -eps * float(np.linalg.norm(av))
        assert got >= max(box, l2) - 1e-12
        if math.isfinite(best):
            assert got <= best + 1e-9
            assert got == pytest.approx(best, abs=1e-7)


def test_a_two_input_net_is_bounded_below_its_grid_minimum():
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(),
                        nn.Linear(8, 3)).double()
    x = torch.tensor([[0.3, 0.6], [0.05, 0.9], [0.5, 0.5]], dtype=torch.float64)
    with torch.no_grad():
        y = net(x).argmax(1)
    grid = torch.linspace(-1, 1, 201, dtype=torch.float64)
    gx, gy = torch.meshgrid(grid, grid, indexing="ij")
    offsets = torch.stack([gx.flatten(), gy.flatten()], 1)
    chain = build_chain(net, (2,))
    for norm, eps in (("Linf", 0.1), ("Linf", 0.3), ("L2", 0.2), ("L2", 0.4)):
        bound = alpha_crown_margins(chain, x, y, eps, norm)
        for i in range(len(x)):
            d = offsets * eps
            if norm == "L2":
                d = d[d.norm(dim=1) <= eps]
            pts = (x[i] + d).clamp(0, 1)
            m = _true_margins(net, pts, y[i].repeat(len(pts))).min(dim=0).values
            finite = torch.isfinite(m)
            assert (bound[i][finite] <= m[finite] + 1e-12).all(), (norm, eps, i)


AFFINE = [
    (nn.Conv2d(2, 3, 3, padding=1), (2, 7, 6)),
    (nn.Conv2d(2, 4, 3, stride=2, padding=1, groups=2), (2, 7, 7)),
    (nn.Conv2d(2, 3, 3, dilation=2, padding=2, bias=False), (2, 8, 9)),
    (nn.Conv2d(2, 3, 4, padding="same"), (2, 6, 6)),
    (nn.Conv2d(2, 3, 3, padding="valid", stride=3), (2, 10, 8)),
    (nn.Conv2d(1, 2, 5, padding=2), (1, 2, 2)),
    (nn.AvgPool2d(2), (3, 6, 6)),
    (nn.AvgPool2d(3, stride=2, padding=1), (3, 7, 6)),
    (nn.AvgPool2d((2, 3), stride=(1, 2)), (2, 5, 7)),
    (nn.Linear(5, 4), (5,)),
    (nn.Linear(5, 4), (3, 5)),
]


@pytest.mark.parametrize("dense", [True, False], ids=["dense", "conv"])
@pytest.mark.parametrize("layer, shape", AFFINE, ids=[str(i) for i in range(len(AFFINE))])
def test_affine_ops_are_transposed_exactly(layer, shape, dense, monkeypatch):
    from marginrobust.evaluate.certify import crown as certify_crown

    monkeypatch.setattr(certify_crown, "DENSE_MAX", 2 ** 22 if dense else 0)
    layer = copy.deepcopy(layer).double()
    (op,) = build_chain(nn.Sequential(layer), shape, logits=False).ops
    x = torch.randn(3, *shape, dtype=torch.float64, requires_grad=True)
    out = layer(x)
    A = torch.randn(3, 4, *out.shape[1:], dtype=torch.float64)
    grads = torch.stack([torch.autograd.grad((out * A[:, s]).sum(), x, retain_graph=True)[0]
                         for s in range(4)], 1)
    back, c = _affine_back(op, A, torch.zeros(3, 4, dtype=torch.float64))
    torch.testing.assert_close(back, grads, rtol=0, atol=1e-12)
    # ⟨A, op(x)⟩ = ⟨A·op, x⟩ + c: the biases are carried too.
    lhs = (A * out[:, None]).flatten(2).sum(-1)
    torch.testing.assert_close((back * x[:, None]).flatten(2).sum(-1) + c, lhs.detach(),
                               rtol=1e-12, atol=1e-12)
    # The rows of chosen output units are the one-hot functionals pulled back.
    units = math.prod(out.shape[1:])
    idx = torch.stack([torch.randperm(units, generator=torch.Generator().manual_seed(i))
                       [:min(5, units)] for i in range(3)])
    one_hot = torch.zeros(3, idx.shape[1], units, dtype=torch.float64).scatter_(
        2, idx[..., None], 1.0).reshape(3, idx.shape[1], *out.shape[1:])
    rows, bias = _rows(op, idx)
    ref_rows, ref_bias = _affine_back(op, one_hot, torch.zeros(3, idx.shape[1],
                                                               dtype=torch.float64))
    torch.testing.assert_close(rows, ref_rows, rtol=0, atol=1e-12)
    torch.testing.assert_close(bias, ref_bias, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["mlp", "cnn", "odd-pools"])
def test_preactivation_bounds_hold_and_are_within_the_interval_ones(nets, name):
    net, shape = nets[name]
    x, _ = _points(net, shape)
    acts = [m for m in net.modules() if isinstance(m, (nn.ReLU, nn.LeakyReLU))]
    cases = {(norm, eps): preactivation_bounds(net, x, eps, norm)
             for norm, eps in (("Linf", 0.05), ("L2", 0.3))}
    seen: list[torch.Tensor] = []
    hooks = [m.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
             for m in acts]
    try:
        for (norm, eps), bounds in cases.items():
            assert len(bounds) == len(acts)
            seen.clear()
            with torch.no_grad():
                net(_samples(x, eps, norm, 32, 2))
            for (lo, hi), value in zip(bounds, seen):
                assert lo.shape == (len(x), *value.shape[1:]) and lo.dtype == torch.float64
                v = value.reshape(len(x), 32, *value.shape[1:])
                assert (lo[:, None] <= v + 1e-9).all() and (v <= hi[:, None] + 1e-9).all()
    finally:
        for h in hooks:
            h.remove()
    # The first activation's interval bounds (one affine op before it) are exact in
    # Linf; deeper ones are at least as tight as IBP's.
    chain = build_chain(net, shape)
    region = Region.around(x, 0.05, "Linf")
    mid, rad = (region.lo + region.hi) / 2, (region.hi - region.lo) / 2
    crown = preactivation_bounds(chain, x, 0.05, "Linf")
    k = 0
    for op in chain.ops[:chain.head]:
        if op.role in ("relu", "leaky"):
            lo, hi = crown[k]
            assert (lo >= mid - rad - 1e-12).all() and (hi <= mid + rad + 1e-12).all()
            k += 1
        mid, rad = op.interval(mid, rad)


# ---------------------------------------------------------------------- radii


@pytest.fixture(scope="module")
def trained_small(digits) -> nn.Module:
    """A small CNN with max pooling, lightly trained on digits."""
    torch.manual_seed(0)
    model = create_model("cnn", in_chans=1, img_size=8, width=0.125)
    return _fit(model, digits, lr=0.05, steps=60)


def _fit(model: nn.Module, digits, lr: float, steps: int) -> nn.Module:
    """Full-batch SGD with momentum 0.9 on the digits training set; the model in eval mode."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    for _ in range(steps):
        loss = F.cross_entropy(model(digits.x_train), digits.y_train)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.mark.parametrize("method", ["ibp", "crown", "alpha-crown"])
@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_nothing_at_099_of_a_radius_changes_the_prediction(method, norm, trained_small,
                                                           digits):
    x, y = digits.x_test[:24], digits.y_test[:24]
    r = certified_radii(trained_small, x, y, method, norm, alpha_steps=5)
    net = copy.deepcopy(trained_small).double()
    x64 = x.double()
    correct = (_true_margins(net, x64, y).min(dim=1).values > 0).numpy()
    assert (r[~correct] == 0).all() and (r[correct] > 0).all() and correct.sum() >= 12
    for i in np.flatnonzero(correct):
        eps = 0.99 * float(r[i])
        xi, yi = x64[i:i + 1], y[i:i + 1]
        worst = _pgd(net, xi, yi, eps, norm, steps=20).min()
        sampled = _true_margins(net, _samples(xi, eps, norm, 64, int(i)),
                                yi.repeat(64)).min()
        assert worst > 0 and sampled > 0, (i, eps)
    # The radius is certified and the certifier fails within the stated precision above.
    ok = torch.as_tensor(correct)
    at = margin_lower_bounds(trained_small, x[ok], y[ok], torch.as_tensor(r[correct]), norm,
                             method, alpha_steps=5)
    assert (at.min(dim=1).values > 0).all()


def test_radii_need_a_valid_method_and_precision(trained_small, digits):
    x, y = digits.x_test[:4], digits.y_test[:4]
    with pytest.raises(UserError, match="unknown certifier 'milp'; use one of ibp, crown"):
        certified_radii(trained_small, x, y, "milp")
    with pytest.raises(UserError, match="rel_tol"):
        certified_radii(trained_small, x, y, rel_tol=0.0)
    with pytest.raises(UserError, match="inputs must lie"):
        margin_lower_bounds(trained_small, x + 2, y, 0.1)
    with pytest.raises(UserError, match="nonnegative"):
        margin_lower_bounds(trained_small, x, y, -0.1)


def test_ibp_radius_agrees_with_the_direct_check(trained_small, digits):
    x, y = digits.x_test[:30], digits.y_test[:30]
    r = certified_radii(trained_small, x, y, "ibp", "Linf", rel_tol=1e-3)
    ok = r > 0
    assert ok.sum() >= 10
    xs, ys = x[torch.as_tensor(ok)], y[torch.as_tensor(ok)]
    for scale, expected in ((1.0, True), (1.002, False)):
        eps = torch.as_tensor(r[ok] * scale)
        got = np.array([ibp_certified(trained_small, xs[i:i + 1], ys[i:i + 1],
                                      float(eps[i]))[0] for i in range(len(xs))])
        assert (got == expected).all()


def test_crown_radii_beat_the_lipschitz_ones_on_a_trained_mlp(trained_mlp, digits):
    x, y = digits.x_test[:40], digits.y_test[:40]
    lip = lipschitz_radii(trained_mlp, x, y)
    ok = lip.correct
    for norm, base in (("Linf", lip.linf), ("L2", lip.l2)):
        crown = certified_radii(trained_mlp, x, y, "crown", norm)
        print(f"{norm}: median CROWN / Lipschitz radius "
              f"{np.median(crown[ok] / base[ok]):.2f}")
        assert np.median(crown[ok]) > np.median(base[ok])


# ---------------------------------------------------------------------- the engine


def _evaluate(model, digits, certify, n=12):
    ev = Evaluator(threats=[ThreatModel("L2", (0.3,)), ThreatModel("Linf", (0.03,))],
                   attacks=("pgd",), certify=certify, n=n, seed=0, device="cpu")
    return ev.evaluate(model, digits.x_test[:n], digits.y_test[:n], "test")


def test_evaluator_stores_the_certifiers_asked_for(trained_mlp, digits):
    result = _evaluate(trained_mlp, digits, ["crown"])
    for norm in ("L2", "Linf"):
        radius = result.array("certify-crown", "radius", norm)
        assert radius.shape == (12,) and (radius > 0).any()
    methods = {r.method for r in result.records}
    assert methods == {"pgd", "worst", "certify-crown", "certified"}
    crown = {r.norm: r for r in result.records if r.method == "certify-crown"}
    assert crown["Linf"].config == '{"rel_tol":0.001}'
    assert crown["Linf"].median_distance == pytest.approx(
        float(np.median(result.array("certify-crown", "radius", "Linf"))))
    none = _evaluate(trained_mlp, digits, False)
    assert not any(k.method.startswith("certif") for k in none.arrays)
    assert not any(r.method.startswith("certif") for r in none.records)


def test_default_certifiers_and_their_combination(trained_mlp, digits):
    result = _evaluate(trained_mlp, digits, True)
    by = {(r.method, r.norm): r for r in result.records}
    for name in ("lipschitz", "ibp", "crown"):
        assert result.array(f"certify-{name}", "radius", "Linf").shape == (12,)
    for norm in ("L2", "Linf"):
        best = max(by[(f"certify-{n}", norm)].robust_acc for n in ("lipschitz", "ibp", "crown"))
        assert by[("certified", norm)].robust_acc >= best
        assert by[("certified", norm)].robust_acc <= by[("worst", norm)].robust_acc
        assert not by[("certified", norm)].flags
    assert "certify-crown" in by[("certified", "L2")].config
    # The old pair keeps the old config, and so the old records' meaning.
    old = _evaluate(trained_mlp, digits, ["ibp", "lipschitz"])
    assert {r.config for r in old.records if r.method == "certified"} == {"{}"}


def test_the_default_set_leaves_crown_out_where_it_is_costly(trained_small, digits,
                                                             monkeypatch):
    from marginrobust.evaluate.certify import certifiers as certificates
    from marginrobust.evaluate.certify.crown import crown_cost

    cost = crown_cost(build_chain(trained_small, (1, 8, 8)))
    assert 1e6 < cost < 1e8  # the paper's CNN at width 1/8 on 8x8 digits
    monkeypatch.setitem(certificates.CROWN_DEFAULT_MAX, "cpu", cost / 2)
    result = _evaluate(trained_small, digits, True)
    by = {(r.method, r.norm): r for r in result.records}
    for norm in ("L2", "Linf"):
        crown = by[("certify-crown", norm)]
        assert crown.robust_acc is None and "ask for it by name" in crown.skipped
        # What ran is exactly the old pair: the old config, the old meaning.
        assert by[("certified", norm)].config == "{}" and by[("certified", norm)].skipped is None
        assert by[("certify-ibp", norm)].skipped is None
    asked = _evaluate(trained_small, digits, ["lipschitz", "ibp", "crown"])
    assert (asked.array("certify-crown", "radius", "Linf") > 0).any()
    assert not any(r.skipped for r in asked.records)


def test_exact_runs_after_the_attacks_in_linf_only(digits):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 6, bias=False), nn.ReLU(),
                        nn.Linear(6, 10, bias=False))
    _fit(net, digits, lr=0.1, steps=100)
    ev = Evaluator(threats=[ThreatModel("L2", (0.3,)), ThreatModel("Linf", (0.03,))],
                   attacks=("fmn",), certify=["crown", "exact"], n=8, seed=0, device="cpu")
    x, y = digits.x_test[:8], digits.y_test[:8]
    result = ev.evaluate(net.eval(), x, y, "test")
    keys = {r.key for r in result.records}
    assert keys == ev.expected_keys(UnitRequest("model", "test", 8, tuple(ev.threats)))
    assert ("certify-exact", "L2") not in {(r.method, r.norm) for r in result.records}
    exact = result.array("certify-exact", "radius", "Linf")
    crown = result.array("certify-crown", "radius", "Linf")
    fmn = result.array("fmn", "distances", "Linf")
    assert (exact >= crown).all() and (exact <= fmn * (1 + 1e-4)).all()
    assert result.array("certify-exact", "optimal", "Linf").any()


def test_exact_is_in_the_default_set_and_decides_open_points_at_each_eps(digits, monkeypatch):
    from marginrobust.evaluate.certify import exact as certify_exact

    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 6, bias=False), nn.ReLU(),
                        nn.Linear(6, 10, bias=False))
    _fit(net, digits, lr=0.1, steps=100)
    net.eval()
    # Distance searches that time out at once leave every point open: the per-ε
    # feasibility MILPs alone must then give exact_robust's answer at each budget.
    distances = certify_exact.exact_linf_distances
    monkeypatch.setattr(certify_exact, "exact_linf_distances",
                        lambda *a, **k: distances(*a, **{**k, "time_limit": 0.0}))
    eps = (0.01, 0.03)
    ev = Evaluator(threats=[ThreatModel("L2", (0.3,)), ThreatModel("Linf", eps)],
                   attacks=("fmn",), n=8, seed=0, device="cpu")
    assert "exact" in ev.certifiers
    x, y = digits.x_test[:8], digits.y_test[:8]
    result = ev.evaluate(net, x, y, "test")
    by = {(r.method, r.norm, r.eps): r for r in result.records}
    radius = result.array("certify-exact", "radius", "Linf")
    clean = (net(x).argmax(1) == y).numpy()
    wants = []
    for e in eps:
        assert by[("certify-exact", "Linf", e)].skipped is None
        want = certify_exact.exact_robust(net, x, y, e).robust & clean
        np.testing.assert_array_equal((radius > e) & clean, want)
        assert by[("certify-exact", "Linf", e)].robust_acc == pytest.approx(want.mean())
        wants.append(want)
    # Both answers occur: some points are robust at 0.01 and some are not at 0.03.
    assert wants[0].any() and not wants[1].all()


def test_bad_certifier_names_are_refused_by_name():
    with pytest.raises(UserError, match="unknown certifier 'crwn'; use True, False or names "
                                        "from lipschitz, ibp, crown, alpha-crown, exact"):
        Evaluator(certify=["crown", "crwn"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_crown_on_cuda_matches_the_cpu(nets):
    for name in ("cnn", "odd-pools"):
        net, shape = nets[name]
        x, y = _points(net, shape)
        for norm in ("Linf", "L2"):
            cpu = alpha_crown_margins(build_chain(net, shape), x, y, 0.05, norm)
            gpu = alpha_crown_margins(build_chain(copy.deepcopy(net).cuda(), shape),
                                      x.cuda(), y.cuda(), 0.05, norm)
            finite = torch.isfinite(cpu)
            torch.testing.assert_close(gpu.cpu()[finite], cpu[finite], rtol=1e-6, atol=1e-8)
