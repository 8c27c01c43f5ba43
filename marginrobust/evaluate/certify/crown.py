"""CROWN and alpha-CROWN: linear-relaxation bounds on the margins of a traced chain.

(About 790 lines: the backward pass, the relaxation of each operation, the two input sets
and the slope optimisation share the chain's bookkeeping, which splitting would pass around.)

CROWN (Zhang et al. 2018) bounds a linear function of a layer's output from below by
walking back through the chain of :func:`.tracing.build_chain` to the input
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
clip(−a_i/λ, l_i, u_i)) and equals the minimum at the best λ (strong duality), found in
closed form after sorting the coordinates' clipping points. So the bound is the exact
minimum up to rounding: at least the larger of the L2 dual-norm bound x·a − ε‖a‖₂ and the
box bound, and often well above both.

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
input, intersected with the interval (IBP) image of the previous bounds. Only units whose
bounds can change a relaxation are back-substituted: those the interval bounds leave
unstable, and in front of a MaxPool2d also those of the windows the interval bounds do not
resolve (a window whose best input dominates the others keeps its exact relaxation under
any tighter bounds); the others keep their interval bounds, which cannot move a final
bound. A nonlinear operation fed by another one without an affine operation in between
(ReLU → MaxPool2d) takes the interval image of the previous bounds. In Linf, the units one
affine operation away from the input take their interval bounds, which are exact there.

**alpha-CROWN** (Xu et al. 2021): the free slope of each unstable unit, one per margin and
point, is optimised by projected Adam steps on the sum of the margins' lower bounds, from
CROWN's choice; the result is the elementwise maximum of CROWN's bounds and the best of
every step (each step's bound is sound), so it is never looser than CROWN. Only the slopes
of the final margins are optimised; intermediate bounds are CROWN's.

Everything is float64 and batched over points, on the chain's device (CPU or cuda). As for
the other certificates, rounding is not directed: "sound" means sound up to float64
rounding. Cost: each back-substituted unit is two rows pulled back through every
operation before it (the rows of the affine operation computing it are built directly;
small convolutions and poolings are applied as dense float64 matrices, faster than
transposed convolutions), so a point costs about the sum over nonlinear layers of
(2 × its back-substituted units × the work of pulling a row back to the input):
:func:`crown_cost` is the estimate with every unit counted. Memory is held to
``max_elements`` float64 values per back-substituted tensor by chunking the units.
"""

from __future__ import annotations

import functools
import math
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import UserError
from ..threats import normalize_norm
from .operator_norms import conv_padding
from .ops import Chain, NotCertifiable, Op, pair
from .tracing import build_chain

__all__ = ["CrownBounds", "Region", "alpha_crown_margins", "crown_cost", "crown_margins",
           "get_chain", "preactivation_bounds"]

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
            return _dot(a, (lo + hi) / 2) - _dot(a.abs(), (hi - lo) / 2) + c
        x = self.x.flatten(1)[:, None]
        return _dot(a, x) + _l2_box_min(a, lo - x, hi - x, self.eps) + c


def _l2_box_min(a: torch.Tensor, dlo: torch.Tensor, dhi: torch.Tensor,
                eps: torch.Tensor) -> torch.Tensor:
    """min of a·δ over ‖δ‖₂ ≤ eps, dlo ≤ δ ≤ dhi (dlo ≤ 0 ≤ dhi): (N, S) from a (N, S, d),
    dlo/dhi (N, 1, d), eps (N,); the dual bound g(λ*) of the module docstring.

    With t = 1/λ the minimiser of each term is δ_i(t) = clip(−a_i t, dlo_i, dhi_i): −a_i t
    until t reaches t_i = |b_i| / |a_i|, then b_i (b_i = dlo_i if a_i > 0, else dhi_i). So
    ‖δ(t)‖² = t² Σ_{t_i > t} a_i² + Σ_{t_i ≤ t} b_i² rises with t, and the best t solves
    ‖δ(t)‖ = eps on the interval between two sorted breakpoints, in closed form. If even
    the box corner (t = ∞) lies in the ball, λ* = 0 and the bound is the box bound. The
    value returned is g at the λ found, a lower bound whatever rounding did to λ.
    """
    e2 = (eps * eps)[:, None]
    with torch.no_grad():
        coef = a.detach()
        corner = torch.where(coef > 0, dlo, dhi)
        size = coef.abs()
        t_break = torch.where(size > 0, corner.abs() / torch.where(size > 0, size, 1.0),
                              math.inf)
        t_sorted, order = t_break.sort(dim=-1)
        a2, b2 = (coef * coef).gather(-1, order), (corner * corner).gather(-1, order)
        clipped_b2 = b2.cumsum(-1)  # Σ b² of the first k + 1 breakpoints
        free_a2 = (a2.sum(-1, keepdim=True) - a2.cumsum(-1)).clamp(min=0)  # Σ a² after
        # ‖δ‖² at each breakpoint; a coordinate with a_i = 0 (t_i = ∞) adds nothing.
        at_break = clipped_b2 + torch.where(free_a2 > 0, t_sorted.nan_to_num(posinf=0.0) ** 2
                                            * free_a2, 0.0)
        k = (at_break < e2[..., None]).sum(-1, keepdim=True)  # breakpoints before t*
        inside = k.squeeze(-1) >= coef.shape[-1]  # the whole box corner is in the ball
        kc = k.clamp(max=coef.shape[-1] - 1)
        before_b2 = torch.where(k > 0, clipped_b2.gather(-1, (kc - 1).clamp(min=0)), 0.0)
        rest_a2 = torch.where(k > 0, free_a2.gather(-1, (kc - 1).clamp(min=0)),
                              a2.sum(-1, keepdim=True))
        t_star = ((e2[..., None] - before_b2).clamp(min=0) / rest_a2.clamp(min=1e-300)).sqrt()
        lam = torch.where(inside | (eps[:, None] == 0), 0.0, 1.0 / t_star.squeeze(-1))
        lam = lam.nan_to_num(0.0, 0.0, 0.0)
    safe = torch.where(lam > 0, lam, 1.0)[..., None]
    delta = torch.where((lam > 0)[..., None],
                        torch.minimum(torch.maximum(-coef / safe, dlo), dhi), corner)
    # g(λ) with δ held fixed: the same value, and Danskin's gradient δ for alpha-CROWN.
    return (a * delta).sum(-1) + lam / 2 * ((delta * delta).sum(-1) - e2)


# ---------------------------------------------------------------------- relaxations


class _Activation:
    """The linear relaxation of a ReLU / LeakyReLU over [l, u], per point and unit.

    Stable units are a slope (1 or a); the unstable ones, gathered per point (``index``,
    padded to the batch's largest count, ``valid``), get the chord and the free slope.
    """

    def __init__(self, slope: float, lo: torch.Tensor, hi: torch.Tensor) -> None:
        n = lo.shape[0]
        lo, hi = lo.reshape(n, -1), hi.reshape(n, -1)
        self.a = slope
        self.convex = slope <= 1.0  # max(z, a z); else min(z, a z)
        unstable = (lo < 0) & (hi > 0)
        self.base = torch.where(unstable, 0.0, torch.where(lo >= 0, 1.0, slope))
        counts = unstable.sum(1)
        k = int(counts.max()) if n else 0
        self.index = torch.argsort((~unstable).to(torch.int8), dim=1, stable=True)[:, :k]
        self.valid = (torch.arange(k, device=lo.device)[None] < counts[:, None]).to(lo.dtype)
        lk, uk = lo.gather(1, self.index), hi.gather(1, self.index)
        lk, uk = torch.where(self.valid > 0, lk, -1.0), torch.where(self.valid > 0, uk, 1.0)
        self.chord = (uk - slope * lk) / (uk - lk)
        self.chord_icpt = lk * (slope - self.chord)
        # The free slope through the origin: 1 (the identity side) iff u ≥ −l.
        self.default = torch.where(uk >= -lk, 1.0, 0.0).to(lo.dtype)

    def _free_slope(self, alpha: torch.Tensor) -> torch.Tensor:
        """alpha in [0, 1] → the free slope a + α(1 − a): 1 at α = 1, a at α = 0."""
        return self.a + alpha * (1.0 - self.a)

    def back(self, A: torch.Tensor, c: torch.Tensor,
             alpha: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(A·relaxation, c + intercepts): pos·lower + neg·upper, alpha (N, S, k) the free
        slopes of the unstable units (default: CROWN's)."""
        n, s = A.shape[:2]
        flat = A.reshape(n, s, -1)
        out = flat * self.base[:, None]
        if self.index.shape[1]:
            index = self.index[:, None].expand(n, s, -1)
            part = flat.gather(2, index)
            free = self._free_slope(self.default[:, None] if alpha is None else alpha)
            chord, icpt = self.chord[:, None], self.chord_icpt[:, None]
            (ls, li), (us, ui) = ((free, 0.0), (chord, icpt)) if self.convex else \
                ((chord, icpt), (free, 0.0))
            pos, neg = part.clamp(min=0), part.clamp(max=0)
            valid = self.valid[:, None]
            c = c + ((pos * li + neg * ui) * valid).sum(-1)
            out.scatter_add_(2, index, (pos * ls + neg * us) * valid)
        return out.reshape(A.shape), c

    @property
    def has_unstable(self) -> bool:
        return bool(self.index.shape[1])


def _dot(A: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """⟨A[n, s], v[n]⟩ for A (N, S, *shape) and v (N, 1, *shape): (N, S)."""
    return torch.bmm(A.flatten(2), v.flatten(1)[..., None]).squeeze(-1)


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
        self.geometry = ((kh, kw), (dh, dw), (sh, sw))

    def cover(self, windows: torch.Tensor) -> torch.Tensor:
        """Which inputs (N, C, H, W) lie in at least one of the ``windows`` (N, C, L)."""
        (kh, kw), dilation, stride = self.geometry
        n, c, length = windows.shape
        cols = windows.to(torch.float64)[:, :, None].expand(n, c, kh * kw, length)
        count = F.fold(cols.reshape(n, c * kh * kw, length), self.padded, (kh, kw),
                       dilation=dilation, stride=stride)
        ph, pw, h, w = self.crop
        return count[..., ph:ph + h, pw:pw + w] > 0

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


@dataclass
class _ConvSpec:
    """A Conv2d or AvgPool2d as a zero-padded conv (plain averaging, as check_pool
    requires, is a depthwise conv with weights 1 / window size)."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    stride: tuple[int, int]
    dilation: tuple[int, int]
    groups: int
    pads: list[tuple[int, int]]


def _conv_spec(op: Op) -> _ConvSpec:
    m = op.module
    if len(op.in_shape) != 3:
        raise NotCertifiable(f"{op.kind} at {op.name!r} needs (channels, height, width) "
                             f"inputs, not shape {op.in_shape}")
    if isinstance(m, nn.Conv2d):
        assert op.weight is not None
        kernel = [d * (t - 1) + 1 for d, t in zip(pair(m.dilation), op.weight.shape[-2:])]
        return _ConvSpec(op.weight, op.bias, pair(m.stride), pair(m.dilation), m.groups,
                         conv_padding(m, (kernel[0], kernel[1])))
    assert isinstance(m, nn.AvgPool2d)
    (kh, kw), (ph, pw), ch = pair(m.kernel_size), pair(m.padding), op.in_shape[0]
    weight = torch.full((ch, 1, kh, kw), 1.0 / (kh * kw), dtype=torch.float64,
                        device=_device(op))
    return _ConvSpec(weight, None, pair(m.stride if m.stride else m.kernel_size), (1, 1), ch,
                     [(ph, ph), (pw, pw)])


def _device(op: Op) -> torch.device:
    if op.weight is not None:
        return op.weight.device
    params = list(op.module.parameters()) if op.module is not None else []
    return params[0].device if params else torch.device("cpu")


# Affine ops with at most this many (output × input) units are applied as dense float64
# matrices: a matrix product is several times faster than a float64 transposed conv.
DENSE_MAX = 2 ** 22
# id(float64 weight copy or pool module) -> (weak reference to it, matrix, bias); an entry
# goes with its key.
_DENSE: dict[int, tuple[Any, torch.Tensor, torch.Tensor | None]] = {}


def _dense(op: Op, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """(matrix (out units, in units), bias per out unit) of a small conv or pool, cached
    per float64 weight copy (a chain's own), or None."""
    if op.role == "linear" or math.prod(op.in_shape) * math.prod(op.out_shape) > DENSE_MAX:
        return None
    key = op.weight if op.weight is not None else op.module
    hit = _DENSE.get(id(key))
    if hit is not None and hit[0]() is key and hit[1].device == device \
            and hit[1].shape[1] == math.prod(op.in_shape):
        return hit[1], hit[2]
    spec = _conv_spec(op)
    units = math.prod(op.in_shape)
    basis = torch.eye(units, dtype=torch.float64, device=device).reshape(units, *op.in_shape)
    basis = F.pad(basis, (spec.pads[1][0], spec.pads[1][1], spec.pads[0][0], spec.pads[0][1]))
    cols = F.conv2d(basis, spec.weight.to(device), None, spec.stride, 0, spec.dilation,
                    spec.groups)
    matrix = cols.reshape(units, -1).T.contiguous()
    bias = (None if spec.bias is None
            else spec.bias.to(device).repeat_interleave(math.prod(op.out_shape[1:])))
    if id(key) not in _DENSE:
        weakref.finalize(key, _DENSE.pop, id(key), None)
    _DENSE[id(key)] = (weakref.ref(key), matrix, bias)
    return matrix, bias


def _affine_back(op: Op, A: torch.Tensor, c: torch.Tensor,
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(A·op, c + A·bias) for an affine ``op`` applied to A (N, S, *op.out_shape)."""
    n, s = A.shape[:2]
    if op.role == "linear":
        assert op.weight is not None
        if op.bias is not None:
            c = c + (A * op.bias).flatten(2).sum(-1)
        return A @ op.weight, c
    dense = _dense(op, A.device)
    if dense is not None:
        matrix, bias = dense
        flat = A.reshape(n, s, -1)
        if bias is not None:
            c = c + flat @ bias
        return (flat @ matrix).reshape(n, s, *op.in_shape), c
    spec = _conv_spec(op)
    if spec.bias is not None:
        c = c + A.flatten(3).sum(-1) @ spec.bias
    return _conv_back(A, spec.weight, spec.stride, spec.dilation, spec.groups, spec.pads,
                      op.in_shape), c


def _conv_rows(weight: torch.Tensor, bias: torch.Tensor | None, stride: tuple[int, int],
               dilation: tuple[int, int], groups: int, pads: list[tuple[int, int]],
               in_shape: tuple[int, ...], out_shape: tuple[int, ...], idx: torch.Tensor,
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows (N, k, *in_shape) and biases (N, k) of a zero-padded conv's output units
    ``idx`` (N, k), flat indices into ``out_shape``: each row is its kernel placed on the
    padded grid at the unit's window, the padding then cropped off."""
    n, k = idx.shape
    c_out, ho, wo = out_shape
    c_in, h, w = in_shape
    (bh, ah), (bw, aw) = pads
    hp, wp = h + bh + ah, w + bw + aw
    cin_g, kh, kw = weight.shape[1:]
    o, p, q = idx // (ho * wo), (idx // wo) % ho, idx % wo
    first = (o // (c_out // groups)) * cin_g
    arange = functools.partial(torch.arange, device=idx.device)
    chan = first[..., None, None, None] + arange(cin_g)[:, None, None]
    row = p[..., None, None, None] * stride[0] + arange(kh)[:, None] * dilation[0]
    col = q[..., None, None, None] * stride[1] + arange(kw) * dilation[1]
    flat = (chan * hp + row) * wp + col  # (N, k, cin_g, kh, kw), distinct per unit
    A = weight.new_zeros(n, k, c_in * hp * wp)
    A.scatter_(2, flat.reshape(n, k, -1), weight[o].reshape(n, k, -1))
    A = A.reshape(n, k, c_in, hp, wp)[..., bh:bh + h, bw:bw + w]
    return A, (bias[o] if bias is not None else A.new_zeros(n, k))


def _rows(op: Op, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows (N, k, *op.in_shape) and biases (N, k) of an affine op's output units ``idx``
    (N, k), flat indices into its output: the one-hot functionals pulled back through op."""
    n, k = idx.shape
    if op.role == "linear" and len(op.in_shape) == 1:
        assert op.weight is not None
        return op.weight[idx], (op.bias[idx] if op.bias is not None
                                else op.weight.new_zeros(n, k))
    dense = None if op.role == "linear" else _dense(op, idx.device)
    if dense is not None:
        matrix, bias = dense
        return (matrix[idx].reshape(n, k, *op.in_shape),
                bias[idx] if bias is not None else matrix.new_zeros(n, k))
    if op.role != "linear":
        spec = _conv_spec(op)
        return _conv_rows(spec.weight, spec.bias, spec.stride, spec.dilation, spec.groups,
                          spec.pads, op.in_shape, op.out_shape, idx)
    one_hot = torch.zeros(n, k, math.prod(op.out_shape), dtype=torch.float64,
                          device=idx.device).scatter_(2, idx[..., None], 1.0)
    return _affine_back(op, one_hot.reshape(n, k, *op.out_shape),
                        one_hot.new_zeros(n, k))


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
    def _next(self, i: int) -> int:
        """Index of the first op after op i that is not an identity (the head if none)."""
        j = i + 1
        while j < len(self.ops) and self.ops[j].role == "identity":
            j += 1
        return j

    def _ends_nonlinear_run(self, i: int) -> bool:
        """Whether the op after op i (reshapes and identities skipped) is affine or the
        head: then the bounds of op i's output are used by nothing but its relaxation."""
        j = i + 1
        while j < len(self.ops) and self.ops[j].role in ("identity", "reshape"):
            j += 1
        return j == len(self.ops) or _is_affine(self.ops[j])

    def _needed(self, i: int, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        """The units (N, *shape) of op i's input whose bounds can change a relaxation.

        Every unit, unless op i is an activation whose output goes (identities aside) to
        an affine op or the head, where only units unstable under (lo, hi) count; or to a
        MaxPool2d and then an affine op or the head, where the units of the windows that
        (lo, hi) do not already resolve count too (a window whose best input dominates the
        others keeps its exact relaxation under any tighter bounds).
        """
        op = self.ops[i]
        every = torch.ones_like(lo, dtype=torch.bool)
        if op.role not in ("relu", "leaky"):
            return every
        unstable = (lo < 0) & (hi > 0)
        j = self._next(i)
        if j == len(self.ops) or _is_affine(self.ops[j]):
            return unstable
        if not (_is_pool(self.ops[j], nn.MaxPool2d) and self._ends_nonlinear_run(j)):
            return every
        pool = _MaxPool(self.ops[j], op.point(lo), op.point(hi))
        open_ = pool.cover(~pool.exact)
        return unstable | (open_ & (hi > 0) if op.role == "relu" else open_)

    def _exact_interval(self, i: int) -> bool:
        """Linf, and one affine op (with reshapes and identities) maps the input to op i's:
        the interval bounds are then its exact bounds over the box."""
        before = self.ops[:i]
        return (self.region.norm == "Linf" and sum(map(_is_affine, before)) == 1
                and all(_is_affine(o) or o.role in ("reshape", "identity") for o in before))

    @torch.no_grad()
    def _intermediate(self) -> None:
        lo, hi = self.region.lo, self.region.hi
        affine_since = False
        for i, op in enumerate(self.ops):
            if _is_nonlinear(op):
                if affine_since and not self._exact_interval(i):
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
        need = self._needed(i, lo, hi).reshape(n, units)
        lo, hi = lo.reshape(n, units).clone(), hi.reshape(n, units).clone()
        counts = need.sum(1)
        rows = int(counts.max()) if n else 0
        if not rows:
            return lo.reshape(n, *op.in_shape), hi.reshape(n, *op.in_shape)
        # The affine op that computes op i's input (reshapes keep the units' flat order).
        src = i - 1
        while not _is_affine(self.ops[src]):
            src -= 1
        order = torch.argsort((~need).to(torch.int8), dim=1, stable=True)[:, :rows]
        valid = torch.arange(rows, device=lo.device)[None] < counts[:, None]
        widest = max(math.prod(o.in_shape) for o in self.ops[:src + 1])
        chunk = max(1, self.max_elements // max(1, 2 * n * widest))
        for start in range(0, rows, chunk):
            idx = order[:, start:start + chunk]
            k = idx.shape[1]
            A, c = _rows(self.ops[src], idx)
            # Both signs: the lower bound of −unit is minus its upper bound.
            A, c = self.back(src, torch.cat([A, -A], dim=1), torch.cat([c, -c], dim=1))
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
                if isinstance(r, _Activation) and r.has_unstable}


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
    params = {j: r.default[:, None].expand(-1, classes, -1).clone().requires_grad_(True)
              for j, r in relax.items()}
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


def _op_cost(op: Op) -> int:
    """Multiply-adds of pulling one row back through ``op``."""
    units_in, units_out = math.prod(op.in_shape), math.prod(op.out_shape)
    if op.role == "linear" or (_is_affine(op) and units_in * units_out <= DENSE_MAX):
        return units_in * units_out if op.role != "linear" else units_out * op.in_shape[-1] \
            * (units_in // op.in_shape[-1])
    if op.role == "conv":
        assert op.module is not None
        m = op.module
        return units_out * (op.in_shape[0] // m.groups) * math.prod(pair(m.kernel_size))
    if _is_affine(op):  # average pooling
        return units_out * math.prod(pair(op.module.kernel_size))  # type: ignore[union-attr]
    return units_in if _is_nonlinear(op) else 0


def crown_cost(chain: Chain) -> float:
    """An upper estimate of CROWN's multiply-adds per point and bound evaluation: two rows
    per unit of every nonlinear op's input fed by an affine op (every unit counted, as if
    all were unstable), and one row per logit, each built at the input of the affine op
    that computes them and pulled back from there to the input."""
    ops = chain.ops[:chain.head]
    to_input = [0]
    for op in ops:
        to_input.append(to_input[-1] + _op_cost(op))
    rows, source = 0, None
    for i, op in enumerate(ops):
        if _is_affine(op):
            source = i
        elif _is_nonlinear(op):
            if source is not None:
                start = math.prod(ops[source].in_shape) + to_input[source]
                rows += 2 * math.prod(op.in_shape) * start
            source = None
    head = chain.ops[chain.head]
    return float(rows + math.prod(head.out_shape) * (math.prod(head.in_shape)
                                                     + to_input[-1]))


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
            :class:`Chain` (from :func:`.tracing.build_chain`).
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
