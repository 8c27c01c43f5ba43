"""Certified robustness of ReLU nets: Lipschitz-margin radii and interval bounds.

Two certificates, both sound lower bounds on the distance to the nearest adversarial input
(``docs/science.md``, certificates):

* **Lipschitz margin.** Split the net into a body g (everything before the last
  ``nn.Linear``) and the head z = W g(x) + b. For the label y and any j ≠ y,
  z_y − z_j = (w_y − w_j)·g(x) + (b_y − b_j), and g is K_sub-Lipschitz in l2 with
  K_sub the product of per-layer operator-norm upper bounds, so the sign of z_y − z_j
  cannot flip within ‖δ‖₂ < (z_y − z_j) / (K_sub ‖w_y − w_j‖₂). The minimum over j is
  the certified l2 radius; it is invariant to rescaling a homogeneous net, like the
  normalized margin.
* **Interval bound propagation (IBP).** Propagate the input box through every layer in
  exact interval arithmetic and certify a point when the lower bound of z_y − z_j over
  the box of the penultimate activations is positive for every j ≠ y.

Any model qualifies whose forward is a chain of supported operations, whatever its
Python class (an ``nn.Sequential``, or an ``nn.Module`` calling conv → relu → flatten →
linear in ``forward``): it is read by tracing (:mod:`.tracing`), and anything else
raises :class:`NotCertifiable` naming the first unsupported operation;
:func:`certify_reason` says so without raising. The bounds live in :mod:`.operator_norms`.

Both certificates run operation by operation in float64 from the module's own parameters
(eval semantics: dropout is the identity), so logits of 1e5 and beyond lose nothing.
Rounding is not directed, so "sound" means sound up to float64 rounding (relative 1e-16
per operation); the operator-norm bounds carry an explicit relative slack of
``NORM_SLACK`` for it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...errors import UserError
from .crown import Region
from .operator_norms import (
    LayerBound,
    chain_bounds,
    check_bounds,
    inf_lipschitz,
    inf_to_2_row_bound,
)
from .ops import Chain
from .tracing import build_chain

__all__ = ["RadiusResult", "certified_accuracy", "ibp_certified", "ibp_margins", "label_tensor",
           "lipschitz_radii"]


@dataclass
class RadiusResult:
    """Per-point certified radii from :func:`lipschitz_radii`.

    Attributes:
        l2: Certified l2 radius (0 for misclassified points).
        linf: Certified l∞ radius (0 for misclassified points).
        correct: Whether argmax of the float64 logits is the label (ties count as wrong).
        margin: min over j ≠ y of z_y − z_j in float64 (negative when misclassified).
        k_sub: Upper bound on the l2 Lipschitz constant of the body (all operations
            before the last Linear).
        bound_seconds: Time spent on the operator-norm bounds (of the bounds passed in,
            when precomputed).
    """

    l2: np.ndarray
    linf: np.ndarray
    correct: np.ndarray
    margin: np.ndarray
    k_sub: float
    bound_seconds: float


def _min_ratio(margins: torch.Tensor, y: torch.Tensor, denom: torch.Tensor) -> torch.Tensor:
    """min over j ≠ y of margins[:, j] / denom[y, j] (margins positive where it matters)."""
    ratio = margins / denom[y]
    return ratio.scatter(1, y[:, None], math.inf).min(dim=1).values


def label_tensor(y: torch.Tensor | np.ndarray | Sequence[int], n: int, classes: int,
                 device: torch.device) -> torch.Tensor:
    """``y`` as a long tensor of ``n`` labels on ``device``, each checked to be in
    ``[0, classes)`` (one clear sentence otherwise)."""
    y = torch.as_tensor(y, device=device).long().reshape(-1)
    if y.numel() != n:
        raise UserError(f"got {n} inputs but {y.numel()} labels")
    if n and (int(y.min()) < 0 or int(y.max()) >= classes):
        raise UserError(f"labels must lie in [0, {classes}) for a model with {classes} logits")
    return y


@torch.no_grad()
def lipschitz_radii(model: nn.Module, x: torch.Tensor, y: torch.Tensor | np.ndarray,
                    bounds: list[LayerBound] | None = None,
                    batch_size: int = 256) -> RadiusResult:
    """Certified l2 and l∞ radii from the logit margin and a Lipschitz bound of the body.

    l2: r(x) = min_{j≠y} (z_y − z_j) / (K_sub ‖w_y − w_j‖₂) (see the module docstring);
    misclassified points (ties included) get 0. Scaling every parameter of a homogeneous
    net by c scales the margins by c^L and K_sub ‖w_y − w_j‖₂ by c^(L−1) · c, so r is
    unchanged.

    l∞: the larger of two sound radii. (a) r₂ / sqrt(d), since ‖δ‖₂ ≤ sqrt(d) ‖δ‖∞ for
    d input coordinates. (b) An l∞ → l2 bound of the body that treats its first weight
    layer row by row (:func:`.operator_norms.inf_to_2_row_bound`) after the l∞-Lipschitz
    layers before
    it, times the l2 bounds after it; a body without weight layers uses the dual norm
    directly: |(w_y − w_j)·δh| ≤ ‖w_y − w_j‖₁ ‖δh‖∞, exact for a linear model.

    Args:
        model: Any module whose forward is a chain of supported operations ending in
            ``nn.Linear`` (then only identities), whatever its class.
        x: Inputs (N, *input_shape); moved once to the model's device.
        y: Integer labels (N,).
        bounds: Output of :func:`operator_norm_bounds` for this model and input shape.
        batch_size: Points per float64 forward pass.

    Raises:
        NotCertifiable: If the model is not such a chain (the message names why).
    """
    chain = build_chain(model, x.shape[1:])
    ops, head, input_shape = chain.ops, chain.head, chain.input_shape
    if bounds is None:
        bounds = chain_bounds(chain)
    check_bounds(chain, bounds)
    w_head = ops[head].weight
    assert w_head is not None
    classes = w_head.shape[0]
    k_sub = math.prod(b.bound for b in bounds[:head])

    # Pairwise row distances without the |a|² + |b|² − 2ab shortcut, which cancels.
    dist2 = torch.cdist(w_head, w_head, compute_mode="donot_use_mm_for_euclid_dist")
    denom_l2 = k_sub * dist2
    weighted = [i for i in range(head) if ops[i].role in ("linear", "conv")]
    first = weighted[0] if weighted else head
    prefix_inf = math.prod(inf_lipschitz(op) for op in ops[:first])
    if weighted:
        k_alt = (prefix_inf * inf_to_2_row_bound(ops[first])
                 * math.prod(b.bound for b in bounds[first + 1:head]))
        denom_inf = k_alt * dist2
    else:
        denom_inf = prefix_inf * torch.cdist(w_head, w_head, p=1)
    sqrt_d = math.sqrt(math.prod(input_shape))

    device = w_head.device
    x = x.to(device)
    y = label_tensor(y, x.shape[0], classes, device)
    l2, linf, correct, margin = [], [], [], []
    for start in range(0, x.shape[0], batch_size):
        h = x[start:start + batch_size].to(torch.float64)
        yb = y[start:start + batch_size]
        for op in ops[:head + 1]:
            h = op.point(h)
        # margins[b, j] = z_y − z_j in float64: exact enough for logits of any size.
        margins = h.gather(1, yb[:, None]) - h
        m = margins.scatter(1, yb[:, None], math.inf).min(dim=1).values
        ok = m > 0
        r2 = torch.where(ok, _min_ratio(margins, yb, denom_l2), 0.0)
        rinf = torch.where(ok, _min_ratio(margins, yb, denom_inf), 0.0)
        l2.append(r2)
        linf.append(torch.maximum(r2 / sqrt_d, rinf))
        correct.append(ok)
        margin.append(m)

    def cat(parts: list[torch.Tensor], dtype: torch.dtype) -> np.ndarray:
        if not parts:
            return np.zeros(0, dtype=np.bool_ if dtype == torch.bool else np.float64)
        return torch.cat(parts).cpu().numpy()

    return RadiusResult(l2=cat(l2, torch.float64), linf=cat(linf, torch.float64),
                        correct=cat(correct, torch.bool), margin=cat(margin, torch.float64),
                        k_sub=k_sub, bound_seconds=sum(b.seconds for b in bounds))


_NORMS = {"l2": "L2", "linf": "Linf"}


@torch.no_grad()
def ibp_certified(model: nn.Module, x: torch.Tensor, y: torch.Tensor | np.ndarray, eps: float,
                  norm: str = "Linf", batch_size: int = 256,
                  input_bounds: tuple[float, float] | None = (0.0, 1.0)) -> np.ndarray:
    """Which points interval bound propagation certifies at radius ``eps``.

    The input set is the box [max(x − eps, lo), min(x + eps, hi)] for both norms: the l2
    ball of radius eps lies inside the l∞ ball of the same radius, so an l2 certificate
    from the box is sound (and loose by design). A point is certified iff every margin
    lower bound of :func:`ibp_margins` is positive; at eps = 0 that is exactly "correctly
    classified, no tie".

    Args:
        model: Any module whose forward is a chain of supported operations ending in
            ``nn.Linear``, whatever its class.
        x: Inputs (N, *input_shape), inside ``input_bounds``.
        y: Integer labels (N,).
        eps: Radius (≥ 0).
        norm: ``"L2"`` or ``"Linf"`` (case-insensitive).
        batch_size: Points per batch; memory grows with batch × classes × features.
        input_bounds: The valid input range the box is clipped to, or None for no clipping.

    Raises:
        NotCertifiable: If the model is not such a chain (the message names why).
    """
    if norm.lower() not in _NORMS:
        raise UserError(f"norm must be L2 or Linf, not {norm!r}")
    if not eps >= 0:
        raise UserError(f"eps must be a nonnegative number, not {eps}")
    chain = build_chain(model, x.shape[1:])
    out = [ibp_margins(chain, x[start:start + batch_size], yb, eps, input_bounds)
           .min(dim=1).values > 0
           for start, yb in _label_batches(chain, x, y, batch_size)]
    if not out:
        return np.zeros(0, dtype=np.bool_)
    return torch.cat(out).cpu().numpy()


def _label_batches(chain: Chain, x: torch.Tensor, y: torch.Tensor | np.ndarray | Sequence[int],
                   batch_size: int) -> list[tuple[int, torch.Tensor]]:
    """(start, labels of the batch) per batch of ``batch_size`` points, labels checked."""
    w_head = chain.ops[chain.head].weight
    assert w_head is not None
    labels = label_tensor(y, x.shape[0], w_head.shape[0], w_head.device)
    return [(start, labels[start:start + batch_size])
            for start in range(0, x.shape[0], batch_size)]


@torch.no_grad()
def ibp_margins(chain: Chain, x: torch.Tensor, y: torch.Tensor, eps: float | torch.Tensor,
                input_bounds: tuple[float, float] | None = (0.0, 1.0)) -> torch.Tensor:
    """IBP lower bounds (N, C) of the margins z_y − z_j (+inf at j = y) on one batch.

    The box [max(x − eps, lo), min(x + eps, hi)] (``eps`` a number or one per point) is
    pushed through every operation before the head exactly; at the head
    z_y − z_j = (w_y − w_j)·h + (b_y − b_j) is bounded over the box of h at once, so
    lower = (w_y − w_j)·mu − |w_y − w_j|·r + (b_y − b_j) is its exact minimum there.

    Args:
        chain: The model's chain (:func:`.tracing.build_chain`) with its parameters.
        x: Inputs (N, *input_shape), inside ``input_bounds``.
        y: Integer labels (N,) on the chain's device.
        eps: Radius, a number or a tensor (N,).
        input_bounds: The valid input range the box is clipped to, or None.
    """
    ops, head = chain.ops, chain.head
    w_head, b_head = ops[head].weight, ops[head].bias
    assert w_head is not None
    region = Region.around(x.to(w_head.device), eps, "Linf", input_bounds)
    mu, r = (region.lo + region.hi) / 2, (region.hi - region.lo) / 2
    for op in ops[:head]:
        mu, r = op.interval(mu, r)
    z = F.linear(mu, w_head, b_head)
    center = z.gather(1, y[:, None]) - z
    diff_abs = (w_head[y][:, None, :] - w_head[None, :, :]).abs()  # (B, C, D)
    lower = center - torch.einsum("bcd,bd->bc", diff_abs, r)
    return lower.scatter(1, y[:, None], math.inf)


def certified_accuracy(radii: np.ndarray, eps: float, correct: np.ndarray | None = None) -> float:
    """Fraction of points certified at ``eps``: correct and radius > eps (strict).

    Misclassified points have radius 0 from :func:`lipschitz_radii`, so ``correct`` is
    needed only for radii from elsewhere. For an IBP mask use ``mask.mean()``.

    Args:
        radii: Per-point certified radii.
        eps: The radius to certify.
        correct: Optional per-point correctness mask.
    """
    radii = np.asarray(radii, dtype=np.float64)
    if radii.size == 0:
        raise UserError("certified accuracy needs at least one point")
    ok = radii > eps
    if correct is not None:
        ok &= np.asarray(correct, dtype=bool)
    return float(ok.mean())
