"""A traced chain as dense layers, pre-activation bounds, and its big-M MILP encoding.

The exact verifier of :mod:`.exact` works on the chain of
:func:`.tracing.build_chain` unrolled into alternating dense affine maps and
piecewise-linear maps (ReLU and LeakyReLU unit by unit, max pooling window by window):
every run of affine operations (Linear, Conv2d, average pooling, reshapes, identities) is
one dense matrix, read off by pushing the identity basis through the operations, so this
is for small networks only.

Each affine map is rescaled by a positive constant so its entries are of order one: ReLU,
LeakyReLU and max pooling commute with positive scaling, so the logits of the rescaled net
are the original ones times one positive constant and every comparison f_j ≥ f_y keeps its
answer (for biases too, scaled by the product of the constants before them). Without this,
the logits of a long-trained homogeneous net (1e5 and more) would swamp the solver's
absolute tolerances.

Encodings (l, u: bounds of a unit's input valid over the whole region the MILP explores):

* max(z, a·z), 0 ≤ a < 1 (ReLU: a = 0): stable units (l ≥ 0 or u ≤ 0) are affine; else one
  binary δ and y ≥ z, y ≥ a·z, y ≤ z − (1 − a)·l·(1 − δ), y ≤ a·z + (1 − a)·u·δ, which
  force y = z when δ = 1 and y = a·z when δ = 0, and each is valid for the other value.
* max over a window of z_i: candidates whose upper bound is at most the largest lower bound
  never exceed another candidate and are dropped; one candidate left is an equality, else
  binaries δ_i with Σ δ_i = 1, y ≥ z_i for all i, and y ≤ z_i + (max_{m≠i} u_m − l_i)(1 − δ_i).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import sparse
from torch import nn

from .ops import Chain, NotCertifiable, Op

__all__ = ["BoundSource", "Layer", "MilpNet", "Problem", "interval_preactivation_bounds"]

# (chain, inputs (N, *shape), radius, norm) -> per ReLU of the chain, in forward order,
# float64 (lower, upper) of its input, shape (N, *shape of that input).
BoundSource = Callable[[Chain, torch.Tensor, float, str],
                       Sequence[tuple[torch.Tensor, torch.Tensor]]]

# Relative and absolute widening of every bound fed to the encoding: the bounds are
# computed in float64 without directed rounding.
BOUND_PAD = 1e-9


@torch.no_grad()
def interval_preactivation_bounds(chain: Chain, x: torch.Tensor, eps: float,
                                  norm: str = "Linf") -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Interval bounds of the input of every ReLU and LeakyReLU of ``chain`` (IBP).

    The input set is the box [x − eps, x + eps] ∩ [0, 1] (it contains the l2 ball too),
    pushed through the chain with the operations' own exact interval images.

    Args:
        chain: A chain with its float64 parameters.
        x: Inputs (N, *chain.input_shape).
        eps: Radius (≥ 0).
        norm: ``Linf`` or ``L2`` (the same box serves both).
    """
    x = x.to(torch.float64)
    lo, hi = (x - eps).clamp(min=0.0), (x + eps).clamp(max=1.0)
    mu, r = (lo + hi) / 2, (hi - lo) / 2
    out = []
    for op in chain.ops:
        if op.role in ("relu", "leaky"):
            out.append((mu - r, mu + r))
        mu, r = op.interval(mu, r)
    return out


@dataclass
class Layer:
    """One layer of the unrolled net.

    Attributes:
        kind: ``affine``, ``act`` (max(z, slope·z) per unit) or ``pool`` (max per window).
        weight: Dense (out, in) matrix of an affine layer, rescaled.
        bias: Its bias (out,), rescaled.
        slope: The activation's negative slope (0 for ReLU).
        windows: Per output of a pool, the indices of its inputs.
        source: For an activation, its position among the chain's activations.
        size: Number of outputs.
    """

    kind: str
    size: int
    weight: np.ndarray | None = None
    bias: np.ndarray | None = None
    slope: float = 0.0
    windows: list[np.ndarray] = field(default_factory=list)
    source: int = -1


def _dense(ops: list[Op], in_shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Matrix and offset of a run of affine operations on flattened inputs of ``in_shape``."""
    d = math.prod(in_shape)
    with torch.no_grad():
        def apply(h: torch.Tensor) -> torch.Tensor:
            for op in ops:
                h = op.point(h)
            return h.reshape(h.shape[0], -1)

        offset = apply(torch.zeros((1, *in_shape), dtype=torch.float64))
        cols = [apply(torch.eye(d, dtype=torch.float64)[i:i + 512].reshape(-1, *in_shape))
                - offset for i in range(0, d, 512)]
    return torch.cat(cols).T.cpu().numpy(), offset[0].cpu().numpy()


def _pool_windows(op: Op) -> list[np.ndarray]:
    """Inputs of each output of a max pool, found by raising one input at a time."""
    assert op.module is not None
    d = math.prod(op.in_shape)
    members: list[list[int]] = [[] for _ in range(math.prod(op.out_shape))]
    with torch.no_grad():
        for i in range(0, d, 512):
            n = min(512, d - i)
            probe = torch.zeros((n, d), dtype=torch.float64)
            probe[torch.arange(n), torch.arange(i, i + n)] = 1.0
            hit = op.module(probe.reshape(n, *op.in_shape)).reshape(n, -1) > 0.5
            for k, o in zip(*np.nonzero(hit.cpu().numpy()), strict=True):
                members[o].append(i + int(k))
    return [np.array(m, dtype=np.int64) for m in members]


class MilpNet:
    """A chain unrolled into rescaled dense layers (see the module docstring).

    Args:
        chain: The chain, with its float64 parameters and a head (logits).

    Raises:
        NotCertifiable: For an average pool the unrolling cannot read (never: it is
            linear) or any operation that is not piecewise linear.
    """

    def __init__(self, chain: Chain) -> None:
        self.chain = chain
        self.layers: list[Layer] = []
        self.scales: list[float] = []  # cumulative scale of each layer's outputs
        pending: list[Op] = []
        shape = chain.input_shape
        acts = 0
        scale = 1.0
        for op in chain.ops[:chain.head + 1]:
            if op.role in ("relu", "leaky") or isinstance(op.module, nn.MaxPool2d):
                scale = self._flush(pending, shape, scale)
                pending, shape = [], op.out_shape
                if op.role == "pool":
                    self.layers.append(Layer("pool", math.prod(op.out_shape),
                                             windows=_pool_windows(op)))
                else:
                    self.layers.append(Layer("act", math.prod(op.out_shape), slope=op.slope,
                                             source=acts))
                    acts += 1
                self.scales.append(scale)
            elif op.role in ("linear", "conv", "pool", "reshape", "identity"):
                pending.append(op)
            else:
                raise NotCertifiable(f"cannot verify {chain.model_name} exactly: {op.kind} "
                                     f"at {op.name!r} is not piecewise linear")
        self._flush(pending, shape, scale)
        self.activations = acts
        self.classes = self.layers[-1].size
        self.input_size = math.prod(chain.input_shape)

    def _flush(self, ops: list[Op], shape: tuple[int, ...], scale: float) -> float:
        w, b = _dense(ops, shape)
        c = 1.0 / max(float(np.abs(w).max()), 1e-300)
        scale *= c
        # The bias is multiplied by the scale of everything so far, so the whole prefix is
        # the original one times `scale` (positive homogeneity of the nonlinear layers).
        self.layers.append(Layer("affine", w.shape[0], weight=w * c, bias=b * scale))
        self.scales.append(scale)
        return scale

    def unstable_units(self) -> int:
        """Units that may need a binary variable: activation units plus pool outputs."""
        return sum(layer.size for layer in self.layers if layer.kind in ("act", "pool"))

    def bounds(self, x: np.ndarray, radius: float, source: BoundSource | None,
               norm: str = "Linf") -> list[tuple[np.ndarray, np.ndarray]]:
        """Bounds of every layer's outputs over the ball of ``radius`` around ``x`` ∩ [0, 1].

        Interval arithmetic on the rescaled dense layers, intersected with the bounds of
        ``source`` at each activation's input (rescaled the same way); the first entry is
        the input box itself.
        """
        lo, hi = np.maximum(x - radius, 0.0), np.minimum(x + radius, 1.0)
        out = [(lo, hi)]
        ext = None
        if source is not None:
            xt = torch.as_tensor(x, dtype=torch.float64).reshape(1, *self.chain.input_shape)
            ext = [(a[0].reshape(-1).cpu().numpy(), b[0].reshape(-1).cpu().numpy())
                   for a, b in source(self.chain, xt, radius, norm)]
            if len(ext) != self.activations:
                raise ValueError(f"the bound source gave {len(ext)} bounds for "
                                 f"{self.activations} activations")
        for k, layer in enumerate(self.layers):
            if layer.kind == "affine":
                w, b = layer.weight, layer.bias
                assert w is not None and b is not None
                wp, wn = np.maximum(w, 0.0), np.minimum(w, 0.0)
                lo, hi = wp @ lo + wn @ hi + b, wp @ hi + wn @ lo + b
                nxt = self.layers[k + 1] if k + 1 < len(self.layers) else None
                if ext is not None and nxt is not None and nxt.kind == "act":
                    el, eh = ext[nxt.source]
                    sc = self.scales[k]
                    lo, hi = np.maximum(lo, el * sc), np.minimum(hi, eh * sc)
                    hi = np.maximum(hi, lo)
            elif layer.kind == "act":
                lo, hi = np.maximum(lo, layer.slope * lo), np.maximum(hi, layer.slope * hi)
            else:
                lo = np.array([lo[m].max() for m in layer.windows])
                hi = np.array([hi[m].max() for m in layer.windows])
            out.append((lo, hi))
        return out

    @torch.no_grad()
    def logits(self, x: np.ndarray) -> np.ndarray:
        """float64 logits of the original chain (not the unrolled layers) at one input."""
        h = torch.as_tensor(x, dtype=torch.float64).reshape(1, *self.chain.input_shape)
        for op in self.chain.ops[:self.chain.head + 1]:
            h = op.point(h)
        return h[0].cpu().numpy()


def _pad(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return lo - BOUND_PAD * (1 + np.abs(lo)), hi + BOUND_PAD * (1 + np.abs(hi))


class Problem:
    """A MILP under construction: variables with bounds, sparse rows lo ≤ A v ≤ hi."""

    def __init__(self) -> None:
        self.lb: list[np.ndarray] = []
        self.ub: list[np.ndarray] = []
        self.integer: list[np.ndarray] = []
        self.n = 0
        self.rows: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.lo: list[np.ndarray] = []
        self.hi: list[np.ndarray] = []
        self.m = 0

    def variables(self, lb: np.ndarray, ub: np.ndarray, integer: bool = False) -> np.ndarray:
        """Add len(lb) variables; return their indices."""
        lb, ub = np.asarray(lb, dtype=np.float64), np.asarray(ub, dtype=np.float64)
        idx = np.arange(self.n, self.n + lb.size)
        self.lb.append(lb.ravel())
        self.ub.append(ub.ravel())
        self.integer.append(np.full(lb.size, int(integer)))
        self.n += lb.size
        return idx

    def constrain(self, cols: np.ndarray, vals: np.ndarray, lo: np.ndarray | float,
                  hi: np.ndarray | float) -> None:
        """Rows lo ≤ Σ_k vals[r, k] · v[cols[r, k]] ≤ hi, one per row of ``cols``."""
        cols, vals = np.atleast_2d(cols), np.atleast_2d(vals).astype(np.float64)
        m = cols.shape[0]
        rows = np.repeat(np.arange(self.m, self.m + m), cols.shape[1])
        self.rows.append((rows, cols.ravel(), vals.ravel()))
        self.lo.append(np.broadcast_to(np.asarray(lo, dtype=np.float64), (m,)).copy())
        self.hi.append(np.broadcast_to(np.asarray(hi, dtype=np.float64), (m,)).copy())
        self.m += m

    def matrices(self) -> tuple[sparse.csr_array, np.ndarray, np.ndarray, np.ndarray,
                                np.ndarray, np.ndarray]:
        """(A, row lo, row hi, var lb, var ub, integrality) for ``scipy.optimize.milp``."""
        r, c, v = (np.concatenate(p) for p in zip(*self.rows, strict=True))
        keep = v != 0
        a = sparse.csr_array((v[keep], (r[keep], c[keep])), shape=(self.m, self.n))
        return (a, np.concatenate(self.lo), np.concatenate(self.hi), np.concatenate(self.lb),
                np.concatenate(self.ub), np.concatenate(self.integer))


def encode(net: MilpNet, x: np.ndarray, radius: float,
           bounds: list[tuple[np.ndarray, np.ndarray]]) -> tuple[Problem, np.ndarray, int,
                                                                  np.ndarray]:
    """The network over the Linf ball of ``radius`` around ``x`` ∩ [0, 1], as MILP rows.

    Returns:
        (problem, indices of the input variables, index of the eps variable, indices of
        the (rescaled) logit variables). The eps variable is ≤ ``radius`` and every input
        variable within eps of ``x``; no output constraint is added yet.
    """
    p = Problem()
    lo, hi = bounds[0]
    xin = p.variables(lo, hi)
    eps = int(p.variables(np.zeros(1), np.array([radius]))[0])
    d = x.size
    ones = np.ones(d)
    e = np.full(d, eps)
    # |x' − x|_i ≤ eps, coordinate by coordinate.
    p.constrain(np.stack([xin, e], 1), np.stack([ones, ones], 1), x, np.inf)
    p.constrain(np.stack([xin, e], 1), np.stack([ones, -ones], 1), -np.inf, x)
    h = xin
    for k, layer in enumerate(net.layers):
        lo, hi = _pad(*bounds[k + 1])
        if layer.kind == "affine":
            w, b = layer.weight, layer.bias
            assert w is not None and b is not None
            z = p.variables(lo, hi)
            # z − W h = b
            cols = np.concatenate([z[:, None], np.broadcast_to(h, (z.size, h.size))], 1)
            p.constrain(cols, np.concatenate([np.ones((z.size, 1)), -w], 1), b, b)
            h = z
        elif layer.kind == "act":
            h = _encode_act(p, h, layer.slope, *bounds[k])
        else:
            h = _encode_pool(p, h, layer.windows, *_pad(*bounds[k]))
    return p, xin, eps, h


def _encode_act(p: Problem, z: np.ndarray, a: float, lo: np.ndarray,
                hi: np.ndarray) -> np.ndarray:
    # Stability is read from the unpadded bounds: padding would make a unit whose bound is
    # exactly 0 (a dead unit of a bias-free net) look unstable.
    active, inactive = lo >= 0, hi <= 0
    lo, hi = _pad(lo, hi)
    unstable = ~(active | inactive)
    y = p.variables(np.maximum(lo, a * lo), np.maximum(hi, a * hi))
    one = np.ones(z.size)
    slope = np.where(active, 1.0, a)
    stable = ~unstable
    p.constrain(np.stack([y[stable], z[stable]], 1),
                np.stack([one[stable], -slope[stable]], 1), 0.0, 0.0)
    if unstable.any():
        yu, zu, lu, uu = y[unstable], z[unstable], lo[unstable], hi[unstable]
        n = yu.size
        delta = p.variables(np.zeros(n), np.ones(n), integer=True)
        on = np.ones(n)
        p.constrain(np.stack([yu, zu], 1), np.stack([on, -on], 1), 0.0, np.inf)
        p.constrain(np.stack([yu, zu], 1), np.stack([on, -a * on], 1), 0.0, np.inf)
        p.constrain(np.stack([yu, zu, delta], 1), np.stack([on, -on, -(1 - a) * lu], 1),
                    -np.inf, -(1 - a) * lu)
        p.constrain(np.stack([yu, zu, delta], 1), np.stack([on, -a * on, -(1 - a) * uu], 1),
                    -np.inf, 0.0)
    return y


def _encode_pool(p: Problem, z: np.ndarray, windows: list[np.ndarray], lo: np.ndarray,
                 hi: np.ndarray) -> np.ndarray:
    y = p.variables(np.array([lo[m].max() for m in windows]),
                    np.array([hi[m].max() for m in windows]))
    for o, members in enumerate(windows):
        floor = lo[members].max()
        keep = members[hi[members] > floor]
        if keep.size == 0:  # every candidate is pinned at the same value
            keep = members[[int(np.argmax(lo[members]))]]
        if keep.size == 1:
            p.constrain(np.array([[y[o], z[keep[0]]]]), np.array([[1.0, -1.0]]), 0.0, 0.0)
            continue
        n = keep.size
        delta = p.variables(np.zeros(n), np.ones(n), integer=True)
        p.constrain(delta[None, :], np.ones((1, n)), 1.0, 1.0)
        yo = np.full(n, y[o])
        on = np.ones(n)
        p.constrain(np.stack([yo, z[keep]], 1), np.stack([on, -on], 1), 0.0, np.inf)
        u = hi[keep]
        top2 = np.sort(u)[-2:]
        others = np.where(u == top2[-1], top2[0], top2[-1])  # max over the other candidates
        big = others - lo[keep]
        p.constrain(np.stack([yo, z[keep], delta], 1), np.stack([on, -on, big], 1),
                    -np.inf, big)
    return y
