"""CROWN and alpha-CROWN: linear-relaxation bounds on the margins of a traced chain.

CROWN (Zhang et al. 2018) bounds a linear function of a layer's output from below by
walking back through the chain of :func:`.certify_chain.build_chain` to the input
("back-substitution"): affine operations (Linear, Conv2d, AvgPool2d, reshapes,
identities) are transposed exactly, and each nonlinear operation is replaced by a pair of
linear functions that sandwich it over the bounds of its input. The result is a linear
function of the input, whose minimum over the input set is a sound lower bound.

**What is bounded.** The margins f_y − f_j of the logits: the specification rows
e_y − e_j are folded into the last Linear (its rows w_y − w_j, biases b_y − b_j), so each
margin is bounded directly rather than from separate logit bounds. Certified at ε iff the
lower bound of every margin j ≠ y is positive.

**The input set.** The Linf or L2 ball of radius ε around x, intersected with the box
[0, 1] (``input_bounds``). Linf ∩ box is the box [max(x − ε, 0), min(x + ε, 1)], whose
minimum of a·x' is exact: a·c − |a|·r (center c, radius r). L2 ∩ box: the exact minimum of
a·δ over {‖δ‖₂ ≤ ε, δ in the box shifted to x}, from the Lagrangian dual
g(λ) = Σ_i min_{δ_i in [l_i, u_i]} (a_i δ_i + λ δ_i² / 2) − λ ε² / 2, which is a lower
bound for every λ ≥ 0 (weak duality; each term has the closed-form minimiser
clip(−a_i/λ, l_i, u_i)) and equals the minimum at the best λ (strong duality). λ is found
by a bisection on log λ (the sign of g' = (‖δ(λ)‖² − ε²)/2), and the largest g seen is
kept, so the bound is at least the larger of the L2 dual-norm bound (λ = ‖a‖/ε, no
clipping) and the box bound (λ = 0), and within rounding of the exact one.

**Relaxations** (l, u: bounds of the input of the operation, per point and unit).

* ReLU and LeakyReLU with slope a ≥ 0 (f(z) = max(z, a z) for a ≤ 1, min(z, a z) for
  a > 1). Stable units (l ≥ 0 or u ≤ 0) are exact. Unstable ones (l < 0 < u): for a ≤ 1 the
  chord through (l, a l) and (u, u) from above and s·z from below with s in [a, 1]; for
  a > 1 the chord from below and s·z, s in [1, a], from above. CROWN's choice of the free
  slope s: the end of its range nearer the larger of u and −l (s = 1 iff u ≥ −l); alpha-
  CROWN optimises it.
* MaxPool2d (y = max over a window): from below, the input with the largest lower bound
  (y ≥ x_i for every i); from above, the same input where its lower bound is at least every
  other input's upper bound (then y = x_i exactly), else the constant max of the upper
  bounds. Padding counts as −inf, as in the forward.

**Intermediate bounds.** The bounds l, u of the input of every ReLU, LeakyReLU and
MaxPool2d come from CROWN itself: back-substitution of each unit (both signs) to the
input, intersected with the interval (IBP) image of the previous bounds. Units whose
interval bounds already make them stable are not back-substituted (their relaxation is
exact whatever their bounds), except in front of a MaxPool2d, whose relaxation uses the
bounds of every input. A nonlinear operation fed by another one without an affine
operation in between (ReLU → MaxPool2d) takes the interval image of the previous bounds.

**alpha-CROWN** (Xu et al. 2021): the free slope of each unstable unit, one per margin and
point, is optimised by projected Adam steps on the sum of the margins' lower bounds, from
CROWN's choice; the result is the elementwise maximum of CROWN's bounds and the best of
every step (each step's bound is sound), so it is never looser than CROWN. Only the slopes
of the final margins are optimised; intermediate bounds are CROWN's.

Everything is float64 and batched over points, on the chain's device (CPU or cuda). As for
the other certificates, rounding is not directed: "sound" means sound up to float64
rounding. Cost: the intermediate bounds back-substitute up to two rows per unstable unit
of each layer through every layer before it, so a point costs about the sum over
nonlinear layers of (2 × its back-substituted units × a forward pass up to it); memory is
held to ``max_elements`` float64 values per back-substituted tensor by chunking the units.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from .certify_bounds import conv_padding
from .certify_chain import build_chain
from .certify_ops import Chain, NotCertifiable, Op, pair
from .threats import normalize_norm

__all__ = ["CrownBounds", "Region", "alpha_crown_margins", "crown_margins", "get_chain",
           "preactivation_bounds"]

# Bisection steps on log λ of the L2 ∩ box dual: λ is bracketed within a factor e^30, so
# 40 halvings place it to a relative 3e-11 (g is flat at its maximum).
L2_DUAL_STEPS = 40
L2_DUAL_SPAN = 30.0
# Float64 values of one back-substituted tensor (batch × rows × features); temporaries
# take a few times that.
MAX_ELEMENTS = {"cpu": 2 ** 23, "cuda": 2 ** 26}
ALPHA_STEPS = 20
ALPHA_LR = 0.2

Bounds = tuple[torch.Tensor, torch.Tensor]


def get_chain(model: nn.Module | Chain, input_shape: Sequence[int]) -> Chain:
    """``model`` read as a chain ending in the logits' Linear (a :class:`Chain` as is)."""
    if isinstance(model, Chain):
        if model.head < 0:
            raise UserError("the chain must end in the logits' Linear (build_chain with "
                            "logits=True)")
        if model.ops and model.ops[model.head].weight is None:
            raise UserError("the chain has no parameters (build_chain with parameters=True)")
        return model
    return build_chain(model, input_shape)


def _is_pool(op: Op, kind: type[nn.Module]) -> bool:
    return op.role == "pool" and isinstance(op.module, kind)


def _is_affine(op: Op) -> bool:
    return op.role in ("linear", "conv") or _is_pool(op, nn.AvgPool2d)


def _is_nonlinear(op: Op) -> bool:
    return op.role in ("relu", "leaky") or _is_pool(op, nn.MaxPool2d)


# ---------------------------------------------------------------------- the input set


@dataclass
class Region:
    """The input set: the ``norm`` ball of radius ``eps`` around ``x`` ∩ the input box.

    Attributes:
        x: Centers (N, *shape), float64.
        eps: Radii (N,), float64.
        norm: ``Linf`` or ``L2``.
        lo, hi: The box [x − eps, x + eps] ∩ input box (it contains the set).
    """

    x: torch.Tensor
    eps: torch.Tensor
    norm: str
    lo: torch.Tensor
    hi: torch.Tensor

    @classmethod
    def around(cls, x: torch.Tensor, eps: float | torch.Tensor, norm: str,
               input_bounds: tuple[float, float] | None = (0.0, 1.0)) -> Region:
        """The region of radius ``eps`` (a number or one per point) around ``x``."""
        x = x.to(torch.float64)
        eps_t = torch.as_tensor(eps, dtype=torch.float64, device=x.device)
        eps_t = eps_t.expand(x.shape[0]).clone() if eps_t.dim() == 0 else eps_t.reshape(-1)
        if eps_t.numel() != x.shape[0]:
            raise UserError(f"got {x.shape[0]} inputs but {eps_t.numel()} radii")
        if x.shape[0] and not bool(torch.isfinite(eps_t).all() and (eps_t >= 0).all()):
            raise UserError("every radius must be a finite nonnegative number")
        if input_bounds is not None and x.numel() and (
                float(x.min()) < input_bounds[0] or float(x.max()) > input_bounds[1]):
            raise UserError(f"inputs must lie in {list(input_bounds)}; pass "
                            "input_bounds=None for unbounded inputs")
        e = eps_t.reshape(-1, *[1] * (x.dim() - 1))
        lo, hi = x - e, x + e
        if input_bounds is not None:
            lo, hi = lo.clamp(min=input_bounds[0]), hi.clamp(max=input_bounds[1])
        return cls(x, eps_t, normalize_norm(norm), lo, hi)

    def minimum(self, a: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """min over the region of ⟨a[n, s], x'⟩ + c[n, s], shape (N, S); ``a`` is
        (N, S, *shape). Differentiable in ``a`` (for alpha-CROWN)."""
        a = a.flatten(2)
        lo, hi = self.lo.flatten(1)[:, None], self.hi.flatten(1)[:, None]
        if self.norm == "Linf":
            mid, rad = (lo + hi) / 2, (hi - lo) / 2
            return (a * mid).sum(-1) - (a.abs() * rad).sum(-1) + c
        x = self.x.flatten(1)[:, None]
        return (a * x).sum(-1) + _l2_box_min(a, lo - x, hi - x, self.eps) + c


def _l2_box_min(a: torch.Tensor, dlo: torch.Tensor, dhi: torch.Tensor,
                eps: torch.Tensor) -> torch.Tensor:
    """min of a·δ over ‖δ‖₂ ≤ eps, dlo ≤ δ ≤ dhi (dlo ≤ 0 ≤ dhi), by the dual of the
    module docstring: (N, S) from a (N, S, d), dlo/dhi (N, 1, d), eps (N,)."""
    e2 = (eps * eps)[:, None]

    def at(lam: torch.Tensor, coef: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """g(λ) and ‖δ(λ)‖² (λ = 0: the box corner)."""
        safe = torch.where(lam > 0, lam, 1.0)[..., None]
        inner = torch.minimum(torch.maximum(-coef / safe, dlo), dhi)
        corner = torch.where(coef > 0, dlo, dhi)
        delta = torch.where((lam > 0)[..., None], inner, corner)
        sq = (delta * delta).sum(-1)
        return (a * delta).sum(-1) + lam / 2 * (sq - e2), sq

    with torch.no_grad():
        coef = a.detach()
        norm_a = coef.norm(dim=-1)
        valid = (eps[:, None] > 0) & (norm_a > 0)
        top = torch.where(valid, norm_a / torch.where(valid, eps[:, None], 1.0), 1.0).log()
        bottom = top - L2_DUAL_SPAN
        best_lam = torch.zeros_like(norm_a)
        best, _ = at(best_lam, coef)
        for _ in range(L2_DUAL_STEPS):
            mid = (bottom + top) / 2
            lam = torch.where(valid, mid.exp(), 0.0)
            g, sq = at(lam, coef)
            better = valid & (g > best)
            best, best_lam = torch.where(better, g, best), torch.where(better, lam, best_lam)
            # g is concave with g' = (‖δ‖² − ε²)/2: go up while the clipped step is too long.
            up = sq > e2
            bottom, top = torch.where(up, mid, bottom), torch.where(up, top, mid)
    if not a.requires_grad:
        return best
    # The same value with the gradient of a (Danskin: δ at the best λ, held fixed).
    return at(best_lam, coef)[0]


# ---------------------------------------------------------------------- relaxations


class _Activation:
    """The linear relaxation of a ReLU / LeakyReLU over [l, u], per point and unit."""

    def __init__(self, slope: float, lo: torch.Tensor, hi: torch.Tensor) -> None:
        self.a = slope
        self.convex = slope <= 1.0  # max(z, a z); else min(z, a z)
        self.unstable = (lo < 0) & (hi > 0)
        active, inactive = lo >= 0, hi <= 0
        stable_slope = torch.where(active, 1.0, torch.where(inactive, slope, 0.0))
        width = torch.where(self.unstable, hi - lo, 1.0)
        chord = torch.where(self.unstable, (hi - slope * lo) / width, stable_slope)
        chord_icpt = torch.where(self.unstable, lo * (slope - chord), 0.0)
        # The free slope through the origin: 1 (identity side) iff u ≥ −l.
        self.default = torch.where(hi >= -lo, 1.0, 0.0).to(lo.dtype)
        free = torch.where(self.unstable, self._free_slope(self.default), stable_slope)
        if self.convex:
            self.lower = (free, torch.zeros_like(lo))
            self.upper = (chord, chord_icpt)
        else:
            self.lower = (chord, chord_icpt)
            self.upper = (free, torch.zeros_like(lo))

    def _free_slope(self, alpha: torch.Tensor) -> torch.Tensor:
        """alpha in [0, 1] → the free slope a + α(1 − a): 1 at α = 1, a at α = 0."""
        return self.a + alpha * (1.0 - self.a)

    def back(self, A: torch.Tensor, c: torch.Tensor,
             alpha: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        (ls, li), (us, ui) = ((t[:, None] for t in self.lower),
                              (t[:, None] for t in self.upper))
        if alpha is not None:
            free = torch.where(self.unstable[:, None], self._free_slope(alpha),
                               ls if self.convex else us)
            ls, us = (free, us) if self.convex else (ls, free)
        pos, neg = A.clamp(min=0), A.clamp(max=0)
        c = c + (pos * li + neg * ui).flatten(2).sum(-1)
        return pos * ls + neg * us, c


class _MaxPool:
    """The relaxation of a MaxPool2d over input bounds [l, u] (module docstring)."""

    def __init__(self, op: Op, lo: torch.Tensor, hi: torch.Tensor) -> None:
        m = op.module
        assert isinstance(m, nn.MaxPool2d)
        if len(op.in_shape) != 3:
            raise NotCertifiable(f"MaxPool2d at {op.name!r} needs (channels, height, width) "
                                 f"inputs, not shape {op.in_shape}")
        (kh, kw), (dh, dw) = pair(m.kernel_size), pair(m.dilation)
        sh, sw = pair(m.stride if m.stride else m.kernel_size)
        ph, pw = pair(m.padding)
        c, h, w = op.in_shape
        ho, wo = op.out_shape[-2:]
        # ceil_mode windows may run past the padded input: pad them with −inf too.
        eh = max(0, (ho - 1) * sh + dh * (kh - 1) + 1 - (h + 2 * ph))
        ew = max(0, (wo - 1) * sw + dw * (kw - 1) + 1 - (w + 2 * pw))
        self.padded = (h + 2 * ph + eh, w + 2 * pw + ew)
        self.crop = (ph, pw, h, w)
        n = lo.shape[0]

        def windows(t: torch.Tensor) -> torch.Tensor:
            t = F.pad(t, (pw, pw + ew, ph, ph + eh), value=-math.inf)
            cols = F.unfold(t, (kh, kw), dilation=(dh, dw), stride=(sh, sw))
            return cols.reshape(t.shape[0], -1, kh * kw, ho * wo)

        lw, uw = windows(lo), windows(hi)
        best = lw.argmax(dim=2, keepdim=True)  # (N, C, 1, L)
        l_best = lw.gather(2, best)
        others = uw.scatter(2, best, -math.inf).amax(dim=2, keepdim=True)
        self.exact = (l_best >= others).squeeze(2)  # (N, C, L)
        self.u_max = uw.amax(dim=2)
        # Flat index, in the padded grid, of each window's chosen input.
        grid = torch.arange(self.padded[0] * self.padded[1], dtype=torch.float64,
                            device=lo.device).reshape(1, 1, *self.padded)
        flat = F.unfold(grid, (kh, kw), dilation=(dh, dw), stride=(sh, sw))[0].long()
        self.index = flat.gather(0, best.reshape(-1, ho * wo)).reshape(n, c, ho * wo)
        self.channels = c

    def back(self, A: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, s = A.shape[:2]
        a = A.reshape(n, s, self.channels, -1)
        pos, neg = a.clamp(min=0), a.clamp(max=0)
        exact = self.exact[:, None]
        coef = pos + torch.where(exact, neg, 0.0)
        c = c + torch.where(exact, 0.0, neg * self.u_max[:, None]).flatten(2).sum(-1)
        out = a.new_zeros(n, s, self.channels, self.padded[0] * self.padded[1])
        out.scatter_add_(3, self.index[:, None].expand(-1, s, -1, -1), coef)
        ph, pw, h, w = self.crop
        out = out.reshape(n, s, self.channels, *self.padded)[..., ph:ph + h, pw:pw + w]
        return out, c


# ---------------------------------------------------------------------- affine maps


def _conv_back(A: torch.Tensor, weight: torch.Tensor, stride: tuple[int, int],
               dilation: tuple[int, int], groups: int, pads: list[tuple[int, int]],
               in_shape: tuple[int, ...]) -> torch.Tensor:
    """A (N, S, C_out, H_o, W_o) times a zero-padded conv: the transposed conv on the
    padded grid, then the padding cropped off."""
    n, s = A.shape[:2]
    _, h, w = in_shape
    (bh, ah), (bw, aw) = pads
    hp, wp = h + bh + ah, w + bw + aw
    kh, kw = weight.shape[-2:]
    ho, wo = A.shape[-2:]
    extra = (hp - ((ho - 1) * stride[0] + dilation[0] * (kh - 1) + 1),
             wp - ((wo - 1) * stride[1] + dilation[1] * (kw - 1) + 1))
    out = F.conv_transpose2d(A.reshape(n * s, *A.shape[2:]), weight, None, stride, 0, extra,
                             groups, dilation)
    return out[..., bh:bh + h, bw:bw + w].reshape(n, s, *in_shape)


def _affine_back(op: Op, A: torch.Tensor, c: torch.Tensor,
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(A·op, c + A·bias) for an affine ``op`` applied to A (N, S, *op.out_shape)."""
    n, s = A.shape[:2]
    m = op.module
    if op.role == "linear":
        assert op.weight is not None
        if op.bias is not None:
            c = c + (A * op.bias).flatten(2).sum(-1)
        return A @ op.weight, c
    if op.role == "conv":
        assert isinstance(m, nn.Conv2d) and op.weight is not None
        if op.bias is not None:
            c = c + A.flatten(3).sum(-1) @ op.bias
        k = [d * (k - 1) + 1 for d, k in zip(pair(m.dilation), op.weight.shape[-2:])]
        pads = conv_padding(m, (k[0], k[1]))
        return _conv_back(A, op.weight, pair(m.stride), pair(m.dilation), m.groups, pads,
                          op.in_shape), c
    assert isinstance(m, nn.AvgPool2d)
    if len(op.in_shape) != 3:
        raise NotCertifiable(f"AvgPool2d at {op.name!r} needs (channels, height, width) "
                             f"inputs, not shape {op.in_shape}")
    # Plain averaging (check_pool) is a depthwise conv with weights 1 / window size.
    kh, kw = pair(m.kernel_size)
    ph, pw = pair(m.padding)
    ch = op.in_shape[0]
    weight = A.new_full((ch, 1, kh, kw), 1.0 / (kh * kw))
    return _conv_back(A, weight, pair(m.stride if m.stride else m.kernel_size), (1, 1), ch,
                      [(ph, ph), (pw, pw)], op.in_shape), c


# ---------------------------------------------------------------------- CROWN


class CrownBounds:
    """CROWN on one batch of points: intermediate bounds, then margins.

    Args:
        chain: The model's chain with its float64 parameters, ending in the logits.
        region: The input set of each point.
        max_elements: Float64 values of one back-substituted tensor (chunks of units).
    """

    def __init__(self, chain: Chain, region: Region, max_elements: int | None = None) -> None:
        self.chain = chain
        self.ops = chain.ops[:chain.head]
        self.region = region
        self.max_elements = max_elements or MAX_ELEMENTS.get(region.x.device.type,
                                                             MAX_ELEMENTS["cpu"])
        self.relax: dict[int, _Activation | _MaxPool] = {}
        self.bounds: dict[int, Bounds] = {}
        self._intermediate()

    # ------------------------------------------------------------------ intermediate
    def _feeds_pool(self, i: int) -> bool:
        """Whether the output of op i reaches a MaxPool2d before any affine op."""
        for op in self.ops[i + 1:]:
            if _is_pool(op, nn.MaxPool2d):
                return True
            if op.role not in ("relu", "leaky", "reshape", "identity"):
                return False
        return False

    @torch.no_grad()
    def _intermediate(self) -> None:
        lo, hi = self.region.lo, self.region.hi
        affine_since = False
        for i, op in enumerate(self.ops):
            if _is_nonlinear(op):
                if affine_since:
                    lo, hi = self._crown_unit_bounds(i, lo, hi)
                self.bounds[i] = (lo, hi)
                self.relax[i] = (_Activation(op.slope, lo, hi) if op.role in ("relu", "leaky")
                                 else _MaxPool(op, lo, hi))
                affine_since = False
            elif _is_affine(op):
                affine_since = True
            mid, rad = op.interval((lo + hi) / 2, (hi - lo) / 2)
            lo, hi = mid - rad, mid + rad

    def _crown_unit_bounds(self, i: int, lo: torch.Tensor, hi: torch.Tensor) -> Bounds:
        """CROWN bounds of the input of op i, intersected with the box (lo, hi)."""
        op = self.ops[i]
        n, units = lo.shape[0], math.prod(op.in_shape)
        lo, hi = lo.reshape(n, units).clone(), hi.reshape(n, units).clone()
        if self._feeds_pool(i) or _is_pool(op, nn.MaxPool2d):
            need = torch.ones_like(lo, dtype=torch.bool)
        else:
            need = (lo < 0) & (hi > 0)
        counts = need.sum(1)
        rows = int(counts.max()) if n else 0
        if rows:
            order = torch.argsort((~need).to(torch.int8), dim=1, stable=True)[:, :rows]
            valid = torch.arange(rows, device=lo.device)[None] < counts[:, None]
            widest = max(math.prod(o.in_shape) for o in self.ops[:i + 1])
            chunk = max(1, self.max_elements // max(1, 2 * n * widest))
            for start in range(0, rows, chunk):
                idx = order[:, start:start + chunk]
                k = idx.shape[1]
                spec = lo.new_zeros(n, 2 * k, units)
                signs = torch.cat([lo.new_ones(n, k), -lo.new_ones(n, k)], dim=1)
                spec.scatter_(2, torch.cat([idx, idx], dim=1)[..., None], signs[..., None])
                A, c = self.back(i, spec.reshape(n, 2 * k, *op.in_shape), lo.new_zeros(n, 2 * k))
                val = self.region.minimum(A, c)
                ok = valid[:, start:start + k]
                cur_l, cur_u = lo.gather(1, idx), hi.gather(1, idx)
                lo.scatter_(1, idx, torch.where(ok, torch.maximum(cur_l, val[:, :k]), cur_l))
                hi.scatter_(1, idx, torch.where(ok, torch.minimum(cur_u, -val[:, k:]), cur_u))
        return lo.reshape(n, *op.in_shape), hi.reshape(n, *op.in_shape)

    # ------------------------------------------------------------------ back-substitution
    def back(self, i: int, A: torch.Tensor, c: torch.Tensor,
             alphas: dict[int, torch.Tensor] | None = None,
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """The linear lower bound ⟨A, h_i⟩ + c of a function of h_i (the input of op i)
        rewritten as one of the chain's input: (A', c')."""
        n, s = A.shape[:2]
        for j in range(i - 1, -1, -1):
            op = self.ops[j]
            rel = self.relax.get(j)
            if isinstance(rel, _Activation):
                A, c = rel.back(A, c, None if alphas is None else alphas.get(j))
            elif rel is not None:
                A, c = rel.back(A, c)
            elif _is_affine(op):
                A, c = _affine_back(op, A, c)
            elif op.role == "reshape":
                A = A.reshape(n, s, *op.in_shape)
        return A, c

    def margins(self, y: torch.Tensor, alphas: dict[int, torch.Tensor] | None = None,
                ) -> torch.Tensor:
        """Lower bounds (N, C) of f_y − f_j over the region (0 at j = y)."""
        head = self.chain.ops[self.chain.head]
        w = head.weight
        assert w is not None
        n = y.shape[0]
        A = (w[y][:, None, :] - w[None]).reshape(n, w.shape[0], *head.in_shape)
        c = (head.bias[y][:, None] - head.bias[None] if head.bias is not None
             else A.new_zeros(n, w.shape[0]))
        A, c = self.back(len(self.ops), A, c, alphas)
        return self.region.minimum(A, c)

    def unstable(self) -> dict[int, _Activation]:
        """The activation relaxations with unstable units (alpha-CROWN's parameters)."""
        return {j: r for j, r in self.relax.items()
                if isinstance(r, _Activation) and bool(r.unstable.any())}


def _with_inf(bounds: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return bounds.scatter(1, y[:, None], math.inf)


@torch.no_grad()
def crown_margins(chain: Chain, x: torch.Tensor, y: torch.Tensor, eps: float | torch.Tensor,
                  norm: str = "Linf", input_bounds: tuple[float, float] | None = (0.0, 1.0),
                  max_elements: int | None = None) -> torch.Tensor:
    """CROWN lower bounds (N, C) of the margins f_y − f_j (+inf at j = y) on one batch."""
    crown = CrownBounds(chain, Region.around(x, eps, norm, input_bounds), max_elements)
    return _with_inf(crown.margins(y), y)


def alpha_crown_margins(chain: Chain, x: torch.Tensor, y: torch.Tensor,
                        eps: float | torch.Tensor, norm: str = "Linf",
                        input_bounds: tuple[float, float] | None = (0.0, 1.0),
                        steps: int = ALPHA_STEPS, lr: float = ALPHA_LR,
                        max_elements: int | None = None) -> torch.Tensor:
    """alpha-CROWN lower bounds (N, C) of the margins (+inf at j = y) on one batch:
    elementwise ≥ :func:`crown_margins` (module docstring)."""
    with torch.no_grad():
        crown = CrownBounds(chain, Region.around(x, eps, norm, input_bounds), max_elements)
        best = crown.margins(y)
    relax = crown.unstable()
    if not relax or steps <= 0:
        return _with_inf(best, y)
    classes = best.shape[1]
    params = {j: r.default[:, None].expand(-1, classes, *r.default.shape[1:]).clone()
              .requires_grad_(True) for j, r in relax.items()}
    opt = torch.optim.Adam(list(params.values()), lr=lr)
    others = torch.ones_like(best, dtype=torch.bool).scatter(1, y[:, None], False)
    for step in range(steps + 1):
        with torch.enable_grad():
            val = crown.margins(y, params)
        best = torch.maximum(best, val.detach())
        if step == steps:
            break
        opt.zero_grad()
        (-val[others].sum()).backward()
        opt.step()
        with torch.no_grad():
            for p in params.values():
                p.clamp_(0.0, 1.0)
    return _with_inf(best, y)


@torch.no_grad()
def preactivation_bounds(model: nn.Module | Chain, x: torch.Tensor,
                         eps: float | torch.Tensor, norm: str = "Linf",
                         input_bounds: tuple[float, float] | None = (0.0, 1.0),
                         batch_size: int = 256) -> list[Bounds]:
    """CROWN bounds of the input of every ReLU and LeakyReLU of the chain, in forward order.

    Each entry is (lower, upper), float64, shape (N, *shape of that input), on the chain's
    device. Units whose interval bounds prove them stable keep those (CROWN is not run on
    them: their relaxation is exact either way); the others get CROWN's bounds intersected
    with the interval ones (module docstring). Sound for every point of the ``norm`` ball of
    radius ``eps`` around each x, intersected with ``input_bounds``.

    Args:
        model: A module whose forward is a supported chain ending in a Linear, or its
            :class:`Chain` (from :func:`.certify_chain.build_chain`).
        x: Inputs (N, *input_shape), inside ``input_bounds``.
        eps: Radius, a number or one per point (N,).
        norm: ``Linf`` or ``L2``.
        input_bounds: The valid input range, or None.
        batch_size: Points per batch.

    Raises:
        NotCertifiable: If the model is not such a chain (the message names why).
    """
    chain = get_chain(model, x.shape[1:])
    device = chain.ops[chain.head].weight.device  # type: ignore[union-attr]
    x = x.to(device)
    eps_t = torch.as_tensor(eps, dtype=torch.float64, device=device)
    eps_t = eps_t.expand(x.shape[0]) if eps_t.dim() == 0 else eps_t.reshape(-1)
    acts = [i for i, op in enumerate(chain.ops[:chain.head]) if op.role in ("relu", "leaky")]
    parts: list[list[Bounds]] = []
    for start in range(0, x.shape[0], batch_size):
        region = Region.around(x[start:start + batch_size], eps_t[start:start + batch_size],
                               norm, input_bounds)
        crown = CrownBounds(chain, region)
        parts.append([crown.bounds[i] for i in acts])
    if not parts:
        empty = [torch.zeros(0, *chain.ops[i].in_shape, dtype=torch.float64, device=device)
                 for i in acts]
        return [(e, e) for e in empty]
    return [(torch.cat([p[k][0] for p in parts]), torch.cat([p[k][1] for p in parts]))
            for k in range(len(acts))]
