"""Certified radii and IBP: the bounds are upper bounds, and no attack beats a certificate."""

from __future__ import annotations

import copy
import math

import foolbox as fb
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

from marginrobust.errors import UserError
from marginrobust.evaluate.certify import (
    NotCertifiable,
    certified_accuracy,
    certify_reason,
    conv2d_norm_bound,
    ibp_certified,
    lipschitz_radii,
    operator_norm_bounds,
)
from marginrobust.models import create_model


def exact_operator(layer: nn.Module, in_shape: tuple[int, ...]) -> torch.Tensor:
    """The matrix of a linear layer on float64 inputs of ``in_shape``, column by column."""
    d = math.prod(in_shape)
    basis = torch.eye(d, dtype=torch.float64).reshape(d, *in_shape)
    with torch.no_grad():
        return copy.deepcopy(layer).double()(basis).reshape(d, -1).T


def exact_norm(layer: nn.Module, in_shape: tuple[int, ...]) -> float:
    return float(torch.linalg.svdvals(exact_operator(layer, in_shape))[0])


CONV_CASES = [  # (c_in, c_out, kernel, H, W, stride, dilation, groups, padding)
    (1, 1, 3, 4, 4, 1, 1, 1, 1),
    (2, 3, 3, 5, 6, 1, 1, 1, 1),
    (3, 2, 5, 4, 4, 1, 1, 1, 2),
    (3, 4, 5, 8, 8, 1, 1, 1, 2),
    (4, 4, 3, 6, 6, 1, 1, 1, 1),
    (1, 2, 5, 7, 5, 1, 1, 1, 2),
    (2, 2, 3, 7, 7, 2, 1, 1, 1),  # strided
    (3, 3, 5, 6, 5, 2, 1, 1, 2),  # strided
    (2, 3, 3, 6, 6, 1, 2, 1, 2),  # dilated
    (4, 2, 3, 5, 5, 1, 1, 2, 1),  # grouped
    (2, 2, 3, 6, 6, 1, 1, 1, 0),  # valid
    (2, 2, 4, 6, 6, 1, 1, 1, "same"),  # even kernel: asymmetric padding
    (2, 2, 5, 2, 2, 1, 1, 1, 2),  # kernel larger than the input: taps are cropped
    (2, 2, 6, 2, 3, 1, 1, 1, "same"),  # cropping with asymmetric padding
    (1, 2, 3, 3, 2, 1, 3, 1, "same"),  # dilated kernel wider than the input
]


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("case", CONV_CASES, ids=[str(c) for c in CONV_CASES])
def test_conv_bound_is_an_upper_bound_and_not_loose(case):
    c_in, c_out, k, h, w, stride, dilation, groups, padding = case
    torch.manual_seed(CONV_CASES.index(case))
    conv = nn.Conv2d(c_in, c_out, k, stride=stride, padding=padding, dilation=dilation,
                     groups=groups, bias=False)
    bound = conv2d_norm_bound(conv, (h, w))
    exact = exact_norm(conv, (c_in, h, w))
    print(f"conv {case}: bound/exact = {bound / exact:.3f}")
    assert bound >= exact - 1e-9
    assert bound <= 3 * exact


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("k, padding, hw", [(6, "same", (2, 3)), (5, 2, (2, 2)),
                                            (4, "same", (1, 2)), (3, "valid", (3, 4))])
def test_cropping_keeps_every_tap_that_meets_the_input(k, padding, hw):
    # One nonzero tap at a time: the exact norm is 1 if the tap ever meets the input
    # (for this padding split) and 0 otherwise, so a wrong crop shows up as bound < exact.
    conv = nn.Conv2d(1, 1, k, padding=padding, bias=False)
    for a in range(k):
        for b in range(k):
            with torch.no_grad():
                conv.weight.zero_()
                conv.weight[0, 0, a, b] = 1.0
            exact = exact_norm(conv, (1, *hw))
            assert conv2d_norm_bound(conv, hw) >= exact - 1e-9, (a, b)


def test_reshaped_kernel_norm_is_not_a_bound():
    # An all-ones 3x3 kernel: the reshaped 1x9 kernel has norm 3, but a constant image
    # is nearly amplified 9 times; this is why the conv bound uses the DFT.
    conv = nn.Conv2d(1, 1, 3, padding=1, bias=False)
    nn.init.ones_(conv.weight)
    naive = float(torch.linalg.matrix_norm(conv.weight.detach().double().reshape(1, -1), ord=2))
    exact = exact_norm(conv, (1, 8, 8))
    assert naive < exact - 1
    assert conv2d_norm_bound(conv, (8, 8)) >= exact - 1e-9


def test_linear_bound_is_the_exact_spectral_norm():
    torch.manual_seed(0)
    lin = nn.Linear(37, 23)
    (b,) = operator_norm_bounds(nn.Sequential(lin), (37,))
    exact = float(torch.linalg.svdvals(lin.weight.detach().double())[0])
    assert b.bound == pytest.approx(exact, rel=1e-9) and b.bound >= exact
    assert (b.kind, b.in_shape, b.out_shape) == ("Linear", (37,), (23,))


@pytest.mark.parametrize("pool, expected", [(nn.AvgPool2d(2), 0.5), (nn.AvgPool2d(3, 1), 1.0),
                                            (nn.MaxPool2d(2), 1.0), (nn.MaxPool2d(3, 2), 2.0),
                                            (nn.MaxPool2d(3, 1), 3.0)])
def test_pool_bounds(pool, expected):
    (b,) = operator_norm_bounds(nn.Sequential(pool), (2, 6, 6))
    assert b.bound == pytest.approx(expected)
    if isinstance(pool, nn.AvgPool2d):
        assert b.bound >= exact_norm(pool, (2, 6, 6)) - 1e-12
    else:  # empirical Lipschitz ratio over random pairs and near-ties
        g = torch.Generator().manual_seed(0)
        x = torch.rand(512, 2, 6, 6, generator=g, dtype=torch.float64)
        d = 1e-3 * torch.randn(512, 2, 6, 6, generator=g, dtype=torch.float64)
        ratio = (pool(x + d) - pool(x)).flatten(1).norm(dim=1) / d.flatten(1).norm(dim=1)
        assert float(ratio.max()) <= b.bound + 1e-12


# ---------------------------------------------------------------- trained models on digits


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    data = load_digits()
    x = torch.tensor(data.data / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
    return x, torch.tensor(data.target, dtype=torch.long)


def _train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> nn.Module:
    torch.manual_seed(0)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (64,), generator=g)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def mlp(digits) -> nn.Module:
    torch.manual_seed(0)
    x, y = digits
    return _train(create_model("mlp", in_chans=1, img_size=8, widths=(32,), bias="first"),
                  x[:1500], y[:1500], 300)


@pytest.fixture(scope="module")
def cnn(digits) -> nn.Module:
    torch.manual_seed(1)
    x, y = digits
    return _train(create_model("cnn", in_chans=1, img_size=8, width=0.25), x[:1500], y[:1500],
                  150)


@pytest.fixture(scope="module")
def test_points(digits) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = digits
    return x[1500:1620], y[1500:1620]


def _worst_margin(model64: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """min over j ≠ y of z_y − z_j in float64 (positive iff the label is kept)."""
    z = model64(x)
    m = z.gather(1, y[:, None]) - z
    return m.scatter(1, y[:, None], math.inf).min(dim=1).values


def _pgd_in_ball(model64: nn.Module, x: torch.Tensor, y: torch.Tensor, radius: torch.Tensor,
                 norm: str, steps: int = 40, clip: bool = False) -> torch.Tensor:
    """Projected gradient descent on the margin inside the ball (per-point radius)."""
    shape = (-1,) + (1,) * (x.dim() - 1)
    r = radius.reshape(shape)
    g = torch.Generator().manual_seed(0)
    delta = (torch.rand(x.shape, generator=g, dtype=x.dtype) * 2 - 1) * r
    for _ in range(steps):
        delta.requires_grad_(True)
        point = (x + delta).clamp(0, 1) if clip else x + delta
        grad, = torch.autograd.grad(_worst_margin(model64, point, y).sum(), delta)
        with torch.no_grad():
            if norm == "L2":
                step = grad / grad.flatten(1).norm(dim=1).clamp(min=1e-30).reshape(shape)
                delta = delta - 0.25 * r * step
                scale = (r / delta.flatten(1).norm(dim=1).clamp(min=1e-30).reshape(shape))
                delta = delta * scale.clamp(max=1.0)
            else:
                delta = (delta - 0.25 * r * grad.sign()).clamp(-r, r)
    point = (x + delta).clamp(0, 1) if clip else x + delta
    return point.detach()


def _random_in_ball(x: torch.Tensor, radius: torch.Tensor, norm: str, n: int) -> torch.Tensor:
    """``n`` random points on the sphere / at the corners of each point's ball."""
    g = torch.Generator().manual_seed(1)
    shape = (-1,) + (1,) * (x.dim() - 1)
    xs = x.repeat_interleave(n, 0)
    r = radius.repeat_interleave(n).reshape(shape)
    if norm == "L2":
        u = torch.randn(xs.shape, generator=g, dtype=x.dtype)
        return xs + r * u / u.flatten(1).norm(dim=1).reshape(shape)
    return xs + r * torch.randint(0, 2, xs.shape, generator=g).to(x.dtype).mul(2).sub(1)


@pytest.mark.parametrize("which", ["mlp", "cnn"])
def test_no_point_inside_the_certified_ball_changes_the_label(which, request, test_points):
    model = request.getfixturevalue(which)
    x, y = test_points
    res = lipschitz_radii(model, x, y)
    assert res.correct.mean() > 0.8
    model64 = copy.deepcopy(model).double()
    x64 = x.double()
    keep = torch.as_tensor(res.correct)
    xs, ys = x64[keep], y[keep]
    for norm, radius in (("L2", res.l2), ("Linf", res.linf)):
        r = torch.as_tensor(radius)[keep] * (1 - 1e-6)
        assert (r > 0).all()
        adv = _pgd_in_ball(model64, xs, ys, r, norm)
        assert (_worst_margin(model64, adv, ys) > 0).all(), norm
        rnd = _random_in_ball(xs, r, norm, 8)
        assert (_worst_margin(model64, rnd, ys.repeat_interleave(8)) > 0).all(), norm


@pytest.mark.parametrize("which", ["mlp", "cnn"])
def test_minimal_norm_attacks_never_beat_the_certified_radius(which, request, test_points):
    model = request.getfixturevalue(which)
    x, y = test_points
    res = lipschitz_radii(model, x, y)
    fmodel = fb.PyTorchModel(model.eval(), bounds=(0, 1))
    for attack, radius, order in ((fb.attacks.L2FMNAttack(steps=50), res.l2, 2),
                                  (fb.attacks.LInfFMNAttack(steps=50), res.linf, math.inf)):
        _, adv, success = attack(fmodel, x, y, epsilons=None)
        dist = (adv - x).flatten(1).double().norm(p=order, dim=1).numpy()
        ok = success.numpy() & res.correct
        assert ok.sum() > 50
        ratio = radius[ok] / dist[ok]
        print(f"{which} {type(attack).__name__}: certified/attack median {np.median(ratio):.3f}"
              f" max {ratio.max():.3f}")
        # float32 attack points sit on the float32 decision boundary: allow its rounding.
        assert (radius[ok] <= dist[ok] * (1 + 1e-4)).all()


def test_ibp_certificate_is_sound_and_monotone(mlp, test_points):
    x, y = test_points
    eps = 0.02
    cert = ibp_certified(mlp, x, y, eps, "Linf")
    assert cert.sum() >= 5, "IBP certifies nothing: the test would be vacuous"
    model64 = copy.deepcopy(mlp).double()
    xs, ys = x.double()[torch.as_tensor(cert)], y[torch.as_tensor(cert)]
    r = torch.full((len(xs),), eps, dtype=torch.float64)
    adv = _pgd_in_ball(model64, xs, ys, r, "Linf", clip=True)
    assert (_worst_margin(model64, adv, ys) > 0).all()
    rnd = _random_in_ball(xs, r, "Linf", 16).clamp(0, 1)
    assert (_worst_margin(model64, rnd, ys.repeat_interleave(16)) > 0).all()
    # Nested boxes give nested certified sets; L2 uses the same (enclosing) box.
    masks = [ibp_certified(mlp, x, y, e, "Linf") for e in (0.0, 0.01, 0.02, 0.05)]
    for small, large in zip(masks, masks[1:], strict=False):
        assert not (large & ~small).any()
    assert (ibp_certified(mlp, x, y, eps, "l2") == cert).all()


@pytest.mark.parametrize("which", ["mlp", "cnn"])
def test_ibp_at_zero_certifies_exactly_the_correct_points(which, request, test_points):
    model = request.getfixturevalue(which)
    x, y = test_points
    y = y.clone()
    y[::3] = (y[::3] + 1) % 10  # force some misclassified points
    res = lipschitz_radii(model, x, y)
    assert not res.correct.all() and res.correct.any()
    assert (ibp_certified(model, x, y, 0.0, "Linf") == res.correct).all()
    assert (res.l2[~res.correct] == 0).all() and (res.linf[~res.correct] == 0).all()
    assert (res.l2[res.correct] > 0).all()
    assert (res.margin[~res.correct] <= 0).all() and (res.margin[res.correct] > 0).all()


def test_ties_count_as_misclassified():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3, bias=False))
    nn.init.zeros_(model[1].weight)  # all logits equal
    x, y = torch.rand(5, 4), torch.zeros(5, dtype=torch.long)
    res = lipschitz_radii(model, x, y)
    assert not res.correct.any() and (res.l2 == 0).all()
    assert not ibp_certified(model, x, y, 0.0, "Linf").any()


def test_radii_are_invariant_to_scaling_a_homogeneous_net(test_points):
    torch.manual_seed(3)
    x, y = test_points
    # float64 parameters, so that c·θ itself is not rounded to float32 (small margins are
    # differences of large logits and would amplify that rounding).
    model = create_model("cnn", in_chans=1, img_size=8, width=0.25).double()
    x = x.double()
    with torch.no_grad():
        y = model(x).argmax(1)
    y[::4] = (y[::4] + 1) % 10  # some misclassified points too
    base = lipschitz_radii(model, x, y)
    assert base.correct.any()
    for c in (3.0, 1e3):
        scaled = copy.deepcopy(model)
        with torch.no_grad():
            for p in scaled.parameters():
                p.mul_(c)
        res = lipschitz_radii(scaled, x, y)
        assert (res.correct == base.correct).all()
        np.testing.assert_allclose(res.l2, base.l2, rtol=1e-6)
        np.testing.assert_allclose(res.linf, base.linf, rtol=1e-6)
        assert res.k_sub == pytest.approx(base.k_sub * c ** 3, rel=1e-6)
        assert (ibp_certified(scaled, x, y, 0.01, "Linf")
                == ibp_certified(model, x, y, 0.01, "Linf")).all()


def test_body_lipschitz_bound_holds_empirically(cnn):
    bounds = operator_norm_bounds(cnn, (1, 8, 8))
    k_sub = math.prod(b.bound for b in bounds[:-1])
    body = nn.Sequential(*list(copy.deepcopy(cnn))[:-1]).double()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(256, 1, 8, 8, generator=g, dtype=torch.float64)
    d = 1e-2 * torch.randn(256, 1, 8, 8, generator=g, dtype=torch.float64)
    with torch.no_grad():
        ratio = (body(x + d) - body(x)).norm(dim=1) / d.flatten(1).norm(dim=1)
    assert float(ratio.max()) <= k_sub
    assert lipschitz_radii(cnn, x[:4].float(), torch.zeros(4), bounds=bounds).k_sub == k_sub


def test_linear_model_radii_are_exact():
    # Without a body the certificates are the exact distances to the decision boundary.
    torch.manual_seed(0)
    model = create_model("mlp", in_chans=1, img_size=8, widths=(), bias="all")
    with torch.no_grad():
        model[1].bias.normal_()
    x = torch.rand(64, 1, 8, 8, dtype=torch.float64).float()
    y = model(x).argmax(1)
    res = lipschitz_radii(model, x, y)
    w, b = model[1].weight.detach().double(), model[1].bias.detach().double()
    x64 = x.double().flatten(1)
    z = x64 @ w.T + b
    dw = w[y][:, None, :] - w[None]  # (N, C, D)
    m = z.gather(1, y[:, None]) - z
    dist2 = (m / dw.norm(dim=2)).scatter(1, y[:, None], math.inf)
    distinf = (m / dw.abs().sum(dim=2)).scatter(1, y[:, None], math.inf)
    np.testing.assert_allclose(res.l2, dist2.min(dim=1).values.numpy(), rtol=1e-9)
    np.testing.assert_allclose(res.linf, distinf.min(dim=1).values.numpy(), rtol=1e-9)
    # Stepping just past the radius towards the closest class flips the label.
    j = dist2.min(dim=1).indices
    u = -dw[torch.arange(64), j]
    step = (res.l2 * (1 + 1e-6))[:, None] * (u / u.norm(dim=1, keepdim=True)).numpy()
    z_adv = (x64 + torch.as_tensor(step)) @ w.T + b
    assert (z_adv.gather(1, j[:, None]) >= z_adv.gather(1, y[:, None])).all()


def test_row_l1_linf_bound_helps_a_sparse_low_rank_first_layer():
    # W1 = u vᵀ with v on 4 pixels: ‖W1‖_{∞→2} ≤ ‖u‖‖v‖₁ ≤ 2‖u‖‖v‖₂, while the generic
    # route pays sqrt(64)‖W1‖₂ = 8‖u‖‖v‖₂.
    torch.manual_seed(0)
    model = create_model("mlp", in_chans=1, img_size=8, widths=(16,))
    v = torch.zeros(64)
    v[[9, 18, 27, 36]] = torch.tensor([1.0, -2.0, 1.5, 0.5])
    with torch.no_grad():
        model[1].weight.copy_(torch.randn(16, 1) * v)
    x = torch.rand(100, 1, 8, 8)
    with torch.no_grad():
        y = model(x).argmax(1)
    res = lipschitz_radii(model, x, y)
    assert (res.linf > 2 * res.l2 / 8).all()
    model64 = copy.deepcopy(model).double()
    adv = _pgd_in_ball(model64, x.double(), y, torch.as_tensor(res.linf) * (1 - 1e-6), "Linf")
    assert (_worst_margin(model64, adv, y) > 0).all()


def test_other_supported_layers_are_sound():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.LeakyReLU(0.1), nn.Dropout(0.5)),
        nn.AvgPool2d(2), nn.Identity(), nn.Conv2d(4, 6, 3, padding=1, stride=2, bias=False),
        nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True), nn.Flatten(), nn.Linear(6, 5),
        nn.Identity())
    model.train()  # dropout must be treated as the identity regardless
    x = torch.rand(200, 1, 8, 8)
    with torch.no_grad():
        y = model.eval()(x).argmax(1)
    model.train()
    bounds = operator_norm_bounds(model, (1, 8, 8))
    assert [b.name for b in bounds][:3] == ["0.0", "0.1", "0.2"]
    assert bounds[3].bound == pytest.approx(0.5)
    res = lipschitz_radii(model, x, y, bounds=bounds)
    assert res.correct.all()
    model64 = copy.deepcopy(model).eval().double()
    for norm, radius in (("L2", res.l2), ("Linf", res.linf)):
        r = torch.as_tensor(radius) * (1 - 1e-6)
        adv = _pgd_in_ball(model64, x.double(), y, r, norm)
        assert (_worst_margin(model64, adv, y) > 0).all()
    assert ibp_certified(model, x, y, 0.0, "Linf").all()


@pytest.mark.parametrize("bad", [
    nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.Tanh(), nn.Linear(8, 3)),
    nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.Flatten(),
                  nn.Linear(128, 3)),
    nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, padding_mode="reflect"), nn.Flatten(),
                  nn.Linear(128, 3)),
    nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.LeakyReLU(-0.5), nn.Linear(8, 3)),
    nn.Sequential(nn.Flatten(), nn.Linear(64, 3), nn.ReLU()),
    nn.Sequential(nn.Conv2d(1, 3, 8), nn.Flatten()),
])
def test_unsupported_models_raise_user_error(bad):
    x, y = torch.rand(2, 1, 8, 8), torch.zeros(2, dtype=torch.long)
    with pytest.raises(UserError) as info:
        lipschitz_radii(bad, x, y)
    assert "\n" not in str(info.value)


def test_user_errors_name_the_problem(mlp):
    x, y = torch.rand(3, 1, 8, 8), torch.zeros(3, dtype=torch.long)
    with pytest.raises(UserError, match="Tanh"):
        operator_norm_bounds(nn.Sequential(nn.Tanh(), nn.Linear(2, 2)), (2,))
    with pytest.raises(NotCertifiable, match="cannot certify ModuleList: its forward cannot be "
                                             "traced"):
        lipschitz_radii(nn.ModuleList([nn.Linear(2, 2)]), x, y)
    with pytest.raises(UserError, match="another model"):
        lipschitz_radii(mlp, x, y, bounds=operator_norm_bounds(mlp, (64,)))
    with pytest.raises(UserError, match="norm"):
        ibp_certified(mlp, x, y, 0.1, "L1")
    with pytest.raises(UserError, match="inputs must lie"):
        ibp_certified(mlp, x + 1, y, 0.1, "Linf")
    with pytest.raises(UserError, match="labels"):
        lipschitz_radii(mlp, x, torch.full((3,), 10))


# ---------------------------------------------------------------- any module, not only Sequential


class ConvNet(nn.Module):
    """conv → relu → flatten → linear in forward, in one of several spellings."""

    def __init__(self, style: str, bias: bool) -> None:
        super().__init__()
        self.style = style
        self.conv = nn.Conv2d(1, 4, 3, padding=1, bias=bias)
        self.act = nn.ReLU()
        self.fc = nn.Linear(4 * 8 * 8, 10, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        if self.style == "functional":
            return self.fc(F.relu(h).view(h.size(0), -1))
        if self.style == "torch":
            return self.fc(torch.flatten(torch.relu(h), 1))
        return self.fc(self.act(h).reshape(h.shape[0], -1))  # modules and reshape


def _sequential_twin(net: ConvNet) -> nn.Sequential:
    return nn.Sequential(net.conv, nn.ReLU(), nn.Flatten(), net.fc)


@pytest.fixture(scope="module")
def conv_nets(digits) -> dict[bool, ConvNet]:
    """Per bias mode (none / first layer), a ConvNet trained on digits."""
    x, y = digits
    nets = {}
    for bias in (False, True):
        torch.manual_seed(2)
        net = ConvNet("modules", bias)
        _train(_sequential_twin(net), x[:1500], y[:1500], 150)
        nets[bias] = net.eval()
    return nets


@pytest.mark.parametrize("style", ["functional", "torch", "modules"])
@pytest.mark.parametrize("bias", [False, True], ids=["bias-free", "first-bias"])
def test_a_plain_module_gets_exactly_the_certificates_of_its_sequential(
        style, bias, conv_nets, test_points):
    net = copy.deepcopy(conv_nets[bias])
    net.style = style
    seq = _sequential_twin(net)
    x, y = test_points
    assert certify_reason(net, (1, 8, 8)) is None
    b_net, b_seq = operator_norm_bounds(net, (1, 8, 8)), operator_norm_bounds(seq, (1, 8, 8))
    assert [b.bound for b in b_net] == [b.bound for b in b_seq]
    assert [b.in_shape for b in b_net] == [b.in_shape for b in b_seq]
    a, b = lipschitz_radii(net, x, y), lipschitz_radii(seq, x, y)
    assert a.correct.mean() > 0.8
    for field in ("l2", "linf", "correct", "margin"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert a.k_sub == b.k_sub
    for eps in (0.0, 0.01, 0.03):
        np.testing.assert_array_equal(ibp_certified(net, x, y, eps, "Linf"),
                                      ibp_certified(seq, x, y, eps, "Linf"))
    assert ibp_certified(net, x, y, 0.01, "Linf").any()


@pytest.mark.parametrize("bias", [False, True], ids=["bias-free", "first-bias"])
def test_fmn_never_finds_an_adversarial_inside_a_plain_modules_radius(bias, conv_nets,
                                                                      test_points):
    net = copy.deepcopy(conv_nets[bias])
    net.style = "functional"
    x, y = test_points
    res = lipschitz_radii(net, x, y)
    fmodel = fb.PyTorchModel(net, bounds=(0, 1))
    for attack, radius, order in ((fb.attacks.L2FMNAttack(steps=50), res.l2, 2),
                                  (fb.attacks.LInfFMNAttack(steps=50), res.linf, math.inf)):
        torch.manual_seed(0)
        _, adv, success = attack(fmodel, x, y, epsilons=None)
        dist = (adv - x).flatten(1).double().norm(p=order, dim=1).numpy()
        ok = success.numpy() & res.correct
        assert ok.sum() > 50
        # float32 attack points sit on the float32 decision boundary: allow its rounding.
        assert (radius[ok] <= dist[ok] * (1 + 1e-4)).all()
    for p in net.parameters():
        p.grad = None


class FunctionalLayers(nn.Module):
    """Functional pools and leaky ReLU, dropout and a flatten: the Sequential below."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1, bias=False)
        self.fc = nn.Linear(6 * 2 * 2, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.avg_pool2d(F.leaky_relu(self.conv1(x), 0.1), 2)
        h = F.max_pool2d(F.relu(self.conv2(F.dropout(h, 0.5, self.training))), 2)
        return self.fc(h.flatten(1).contiguous())


def test_functional_layers_match_their_modules():
    torch.manual_seed(0)
    net = FunctionalLayers()
    seq = nn.Sequential(net.conv1, nn.LeakyReLU(0.1), nn.AvgPool2d(2), nn.Dropout(0.5),
                        net.conv2, nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Identity(),
                        net.fc)
    x = torch.rand(64, 1, 8, 8)
    with torch.no_grad():
        y = seq.eval()(x).argmax(1)
    net.train()  # F.dropout(training=True) is traced, and still read as the identity
    kinds = [b.kind for b in operator_norm_bounds(net, (1, 8, 8))]
    assert kinds == ["Conv2d", "LeakyReLU", "AvgPool2d", "Dropout", "Conv2d", "ReLU",
                     "MaxPool2d", "Reshape", "Identity", "Linear"]
    assert [b.bound for b in operator_norm_bounds(net, (1, 8, 8))] == \
        [b.bound for b in operator_norm_bounds(seq, (1, 8, 8))]
    a, b = lipschitz_radii(net, x, y), lipschitz_radii(seq, x, y)
    np.testing.assert_array_equal(a.l2, b.l2)
    np.testing.assert_array_equal(a.linf, b.linf)
    np.testing.assert_array_equal(ibp_certified(net, x, y, 0.02, "Linf"),
                                  ibp_certified(seq, x, y, 0.02, "Linf"))


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(64, 64), nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(1)
        return self.fc2(torch.relu(self.fc1(h)) + h)


class TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(64, 10), nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(1)
        return torch.relu(self.fc1(h)), self.fc2(h)


class WithBatchNorm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn, self.fc = nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), \
            nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.bn(self.conv(x)), 1))


class Sigmoid(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(64, 8), nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.sigmoid(self.fc1(x.view(x.size(0), -1))))


class MixesExamples(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.reshape(-1, 32))  # two rows per 8x8 digit


class DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            x = x * 2
        return self.fc(x.flatten(1))


class ScaledLinear(nn.Linear):
    """A Linear subclass whose forward is not nn.Linear's: it must not be taken as one."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * 3


def _hooked() -> nn.Module:
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    model[1].register_forward_hook(lambda module, args, out: out * 2)
    return model


@pytest.mark.parametrize("model, sentence", [
    (Residual(), "cannot certify Residual: add (a skip connection) at node 'add' is not a "
                 "supported operation"),
    (TwoHeads(), "cannot certify TwoHeads: the output of 'flatten' is read by both 'fc1' "
                 "and 'fc2' (a branch)"),
    (WithBatchNorm(), "cannot certify WithBatchNorm: BatchNorm2d at module 'bn' is not a "
                      "supported operation"),
    (Sigmoid(), "cannot certify Sigmoid: sigmoid at node 'sigmoid' is not a supported "
                "operation"),
    (MixesExamples(), "cannot certify MixesExamples: Reshape at 'reshape' does not keep the "
                      "examples of a batch apart"),
    (DataDependent(), "cannot certify DataDependent: its forward cannot be traced with "
                      "torch.fx (symbolically traced variables cannot be used as inputs to "
                      "control flow)"),
    (nn.Sequential(nn.Flatten(), DataDependent()),
     "cannot certify Sequential: DataDependent at module '1' cannot be traced with torch.fx "
     "(symbolically traced variables cannot be used as inputs to control flow)"),
    (_hooked(), "cannot certify Sequential: Linear at module '1' has forward hooks, which "
                "certification cannot read"),
    (nn.Sequential(nn.Flatten(), ScaledLinear(64, 10)),
     "cannot certify Sequential: linear at node 'linear' in ScaledLinear '1' is not a "
     "supported operation"),
])
def test_uncertifiable_models_are_named_in_one_sentence(model, sentence):
    x, y = torch.rand(3, 1, 8, 8), torch.zeros(3, dtype=torch.long)
    reason = certify_reason(model, (1, 8, 8))
    assert reason is not None and reason.startswith(sentence)
    assert "\n" not in reason and reason.count(". ") == 0
    for certificate in (lambda: lipschitz_radii(model, x, y),
                        lambda: ibp_certified(model, x, y, 0.1),
                        lambda: operator_norm_bounds(model, (1, 8, 8))):
        with pytest.raises(NotCertifiable) as info:
            certificate()
        assert str(info.value) == reason
        assert isinstance(info.value, UserError)


def test_certify_reason_accepts_the_registered_models():
    for name, kwargs in (("mlp", {"widths": (16,)}), ("cnn", {"width": 0.25}),
                         ("vgg16", {"width": 0.125})):
        model = create_model(name, in_chans=1, img_size=8, **kwargs)
        assert certify_reason(model, (1, 8, 8)) is None, name
    with pytest.raises(UserError, match="do not fit"):
        certify_reason(create_model("mlp", in_chans=1, img_size=8), (1, 9, 9))


def test_certified_accuracy_is_strict_and_uses_correctness():
    radii = np.array([0.0, 0.1, 0.2, 0.3])
    assert certified_accuracy(radii, 0.0) == 0.75
    assert certified_accuracy(radii, 0.2) == 0.25
    assert certified_accuracy(radii, 0.0, correct=np.array([1, 1, 0, 1], bool)) == 0.5
    with pytest.raises(UserError):
        certified_accuracy(np.array([]), 0.1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_runs_on_cuda(cnn, test_points):
    x, y = test_points
    cpu = lipschitz_radii(cnn, x, y)
    model = copy.deepcopy(cnn).cuda()
    gpu = lipschitz_radii(model, x, y)
    np.testing.assert_allclose(gpu.l2, cpu.l2, rtol=1e-6)
    assert (ibp_certified(model, x, y, 0.0, "Linf") == cpu.correct).all()
