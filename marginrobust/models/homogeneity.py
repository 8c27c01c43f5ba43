"""Numerical homogeneity check (docs/science.md, margins: the homogeneity order L).

f is homogeneous of order L when f(cθ; x) = c^L f(θ; x). We never assume it: for
c in (0.5, 2, 3) we measure L_c = log(‖f(cθ)‖/‖f(θ)‖) / log c in float64 and accept
only if every L_c rounds to the same integer L and the relative error of
f(cθ) against c^L f(θ) is below ``tol``.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.func import functional_call

from ._layers import WEIGHT_LAYERS, weight_layers

NORM_LAYERS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm,
               nn.modules.instancenorm._InstanceNorm, nn.LocalResponseNorm)
HOMOGENEOUS_MODULES = (nn.ReLU, nn.LeakyReLU, nn.Identity, nn.Flatten, nn.Dropout,
                       nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d,
                       nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
                       nn.AdaptiveMaxPool2d, nn.Sequential, nn.ModuleList)


@dataclass
class HomogeneityReport:
    """Outcome of :func:`check_homogeneity`.

    Attributes:
        order: The integer order L, or None when the model is not homogeneous.
        orders: Measured L_c at θ for each scale c.
        max_rel_error: Worst ‖f(cθ) − c^L f(θ)‖ / ‖c^L f(θ)‖ over c and over the
            parameter points checked (L rounded); inf where no single L was found.
        blame: Modules that break homogeneity (biases after layer 1, norm layers,
            non-homogeneous activations), as "name (Type): reason".
        perturbed_orders: Measured L_c at the random perturbation of θ (empty when θ
            already failed).
        rel_errors: The relative error at θ and, if checked, at its perturbation (inf
            where the measured orders gave no single L).
        tol: The relative error allowed.
    """

    order: int | None
    orders: dict[float, float]
    max_rel_error: float
    blame: list[str] = field(default_factory=list)
    perturbed_orders: dict[float, float] = field(default_factory=dict)
    rel_errors: tuple[float, ...] = ()
    tol: float = 1e-6

    @property
    def homogeneous(self) -> bool:
        return self.order is not None

    def describe(self) -> str:
        """One line for humans: the order, or what differs and where."""
        if self.homogeneous:
            return (f"homogeneous of order L={self.order} "
                    f"(max relative error {self.max_rel_error:.1e})")
        if self.orders and not any(math.isfinite(v) for v in self.orders.values()):
            return ("no homogeneity order measured: f(θ; x) is zero on every input given, so "
                    "f(cθ) = c^L f(θ) holds for any L; check on inputs with nonzero outputs")
        why = "; ".join(self.blame) if self.blame else "no single module identified"
        return f"not homogeneous: {self._what_differs()}; to blame: {why}"

    def _what_differs(self) -> str:
        cs = ", ".join(f"{c:g}" for c in self.orders)
        at_theta = f"at θ the measured orders L_c (c = {cs}) are {_fmt(self.orders)}"
        first = _verdict(self.orders, self.rel_errors[:1], self.tol)
        if first:
            return f"{at_theta}, {first}"
        order = round(next(iter(self.orders.values())))
        second = _verdict(self.perturbed_orders, self.rel_errors[1:], self.tol, order)
        return (f"{at_theta} and f(cθ) = c^{order} f(θ) holds there to "
                f"{self.rel_errors[0]:.1e}, but at a random perturbation of θ they are "
                f"{_fmt(self.perturbed_orders)}, "
                f"{second}")


def _fmt(orders: dict[float, float]) -> str:
    return ", ".join(f"{v:.3f}" for v in orders.values())


def _verdict(orders: dict[float, float], errors: tuple[float, ...], tol: float,
             expected: int | None = None) -> str:
    """Why one parameter point fails, or "" if it passes (``expected``: the order found
    at θ, which a perturbation of θ must give too)."""
    if not all(math.isfinite(v) for v in orders.values()):
        return "undefined where f is zero for every input given"
    rounded = {round(v) for v in orders.values()}
    if len(rounded) > 1:
        return "which do not round to one integer"
    (order,) = rounded
    if expected is not None and order != expected:
        return f"which round to L={order}, not {expected}"
    if order <= 0:
        return f"so f does not grow with θ (order {order})"
    if errors and errors[0] > tol:
        return (f"which round to L={order}, but f(cθ) differs from c^{order} f(θ) by a "
                f"relative {errors[0]:.1e} (allowed {tol:.0e})")
    return ""


def blame_modules(model: nn.Module) -> list[str]:
    """Modules whose presence breaks homogeneity, found by inspection."""
    first = weight_layers(model)[:1]
    out = []
    for name, m in model.named_modules():
        kind = type(m).__name__
        if isinstance(m, WEIGHT_LAYERS):
            if m.bias is not None and (not first or m is not first[0]):
                out.append(f"{name} ({kind}): bias after the first layer")
        elif isinstance(m, NORM_LAYERS):
            out.append(f"{name} ({kind}): normalisation layer")
        elif not list(m.children()) and not isinstance(m, HOMOGENEOUS_MODULES):
            if any(True for _ in m.parameters(recurse=False)) or _is_activation(m):
                out.append(f"{name} ({kind}): not positively homogeneous")
    return out


def _is_activation(m: nn.Module) -> bool:
    return type(m).__module__.startswith("torch.nn.modules.activation")


@torch.no_grad()
def check_homogeneity(model: nn.Module, x: torch.Tensor,
                      scales: tuple[float, ...] = (0.5, 2.0, 3.0),
                      tol: float = 1e-6, seed: int = 0) -> HomogeneityReport:
    """Measure the homogeneity order of ``model`` on a batch ``x`` in float64.

    Homogeneity is a property of the architecture, but at a special parameter point
    (zero-initialised biases) a non-homogeneous net can pass the test. So the check
    runs at θ and at a seeded random perturbation of θ, and both must pass.

    Args:
        model: Any classifier; it is copied, never modified.
        x: A small input batch (a few dozen points suffice).
        scales: The factors c applied to all parameters together.
        tol: Relative error allowed between f(cθ) and c^L f(θ).
        seed: Seed of the perturbation.
    """
    m = copy.deepcopy(model).double().eval()
    x = x.detach().to(next(m.parameters()).device, torch.float64)
    params = dict(m.named_parameters())
    buffers = dict(m.named_buffers())
    gen = torch.Generator().manual_seed(seed)
    typical = torch.cat([p.abs().flatten() for p in params.values()]).mean().clamp_min(1e-3)
    perturbed = {}
    for k, p in params.items():
        scale = 0.1 * (p.abs().mean() if p.abs().sum() > 0 else typical)
        noise = torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.device)
        perturbed[k] = p + scale * noise
    orders: dict[float, float] = {}
    perturbed_orders: dict[float, float] = {}
    errs: list[float] = []
    order: int | None = None
    for i, point in enumerate((params, perturbed)):
        measured = _measure(m, point, buffers, x, scales)
        if i == 0:
            orders = measured
        else:
            perturbed_orders = measured
        finite = [v for v in measured.values() if math.isfinite(v)]
        this = round(sum(finite) / len(finite)) if len(finite) == len(measured) else None
        if this is None or len({round(v) for v in measured.values()}) > 1 \
                or (order is not None and this != order):
            order = None
            errs.append(math.inf)
            break
        order = this
        errs.append(_rel_error(m, point, buffers, x, scales, this))
        if errs[-1] > tol or this <= 0:
            break
    err = max(errs)
    ok = order is not None and order > 0 and err <= tol and len(errs) == 2
    return HomogeneityReport(order if ok else None, orders, err,
                             [] if ok else blame_modules(model), perturbed_orders, tuple(errs),
                             tol)


def _measure(m: nn.Module, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor],
             x: torch.Tensor, scales: tuple[float, ...]) -> dict[float, float]:
    n0 = functional_call(m, (params, buffers), (x,)).norm().item()
    orders = {}
    for c in scales:
        scaled = {k: c * v for k, v in params.items()}
        nc = functional_call(m, (scaled, buffers), (x,)).norm().item()
        orders[c] = math.log(nc / n0) / math.log(c) if n0 > 0 and nc > 0 else math.nan
    return orders


def _rel_error(m: nn.Module, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor],
               x: torch.Tensor, scales: tuple[float, ...], order: int) -> float:
    f0 = functional_call(m, (params, buffers), (x,))
    worst = 0.0
    for c in scales:
        fc = functional_call(m, ({k: c * v for k, v in params.items()}, buffers), (x,))
        ref = c**order * f0
        worst = max(worst, ((fc - ref).norm() / ref.norm().clamp_min(1e-300)).item())
    return worst


def homogeneity_order(model: nn.Module, x: torch.Tensor, tol: float = 1e-6) -> int | None:
    """The homogeneity order L of ``model`` measured on ``x``, or None if not homogeneous."""
    return check_homogeneity(model, x, tol=tol).order
