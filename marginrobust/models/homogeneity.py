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
        orders: Measured L_c for each scale c.
        max_rel_error: Worst ‖f(cθ) − c^L f(θ)‖ / ‖c^L f(θ)‖ over c (L rounded).
        blame: Modules that break homogeneity (biases after layer 1, norm layers,
            non-homogeneous activations), as "name (Type): reason".
    """

    order: int | None
    orders: dict[float, float]
    max_rel_error: float
    blame: list[str] = field(default_factory=list)

    @property
    def homogeneous(self) -> bool:
        return self.order is not None

    def describe(self) -> str:
        """One line for humans."""
        if self.homogeneous:
            return (f"homogeneous of order L={self.order} "
                    f"(max relative error {self.max_rel_error:.1e})")
        why = "; ".join(self.blame) if self.blame else "no single module identified"
        return (f"not homogeneous: worst relative error {self.max_rel_error:.1e} "
                f"(measured orders {', '.join(f'{v:.3f}' for v in self.orders.values())}); "
                f"to blame: {why}")


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
    errs: list[float] = []
    order: int | None = None
    for point in (params, perturbed):
        measured = _measure(m, point, buffers, x, scales)
        orders = orders or measured
        finite = [v for v in measured.values() if math.isfinite(v)]
        this = round(sum(finite) / len(finite)) if len(finite) == len(measured) else None
        if this is None or (order is not None and this != order):
            order, errs = None, [math.inf]
            orders = measured
            break
        order = this
        errs.append(_rel_error(m, point, buffers, x, scales, this))
    err = max(errs)
    ok = order is not None and order > 0 and err <= tol
    return HomogeneityReport(order if ok else None, orders, err, [] if ok else blame_modules(model))


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
