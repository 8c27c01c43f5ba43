"""Certified robustness of sequential ReLU nets: Lipschitz-margin radii and interval bounds.

Two certificates, both sound lower bounds on the distance to the nearest adversarial input:

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

Both run layer by layer in float64 from the module's own parameters (eval semantics:
dropout is the identity), so logits of 1e5 and beyond lose nothing. Rounding is not
directed, so "sound" means sound up to float64 rounding (relative 1e-16 per operation);
the operator-norm bounds carry an explicit relative slack of ``NORM_SLACK`` for it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError

__all__ = ["LayerBound", "NORM_SLACK", "RadiusResult", "certified_accuracy",
           "conv2d_norm_bound", "ibp_certified", "lipschitz_radii", "operator_norm_bounds"]

# Relative slack on every computed spectral norm: float64 FFT, Gram and eigensolver errors
# are ~1e-16 relative per unit of dimension, so 1e-10 keeps the bounds upper bounds even
# for huge layers.
NORM_SLACK = 1e-10

_DROPOUT = nn.modules.dropout._DropoutNd
_PASS_THROUGH = (nn.Identity, nn.Flatten, _DROPOUT)
_SUPPORTED = (nn.Linear, nn.Conv2d, nn.ReLU, nn.LeakyReLU, nn.MaxPool2d, nn.AvgPool2d,
              *_PASS_THROUGH)


@dataclass(frozen=True)
class LayerBound:
    """An upper bound on the l2 → l2 Lipschitz constant of one layer.

    Attributes:
        index: Position in the flattened layer list (nested Sequentials expanded).
        name: Qualified module name inside the model (``"3"``, ``"features.0"``).
        kind: Module class name, e.g. ``"Conv2d"``.
        bound: The upper bound (biases do not change Lipschitz constants).
        seconds: Time spent computing the bound.
        in_shape: Per-example input shape of the layer.
        out_shape: Per-example output shape of the layer.
    """

    index: int
    name: str
    kind: str
    bound: float
    seconds: float
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]


@dataclass
class RadiusResult:
    """Per-point certified radii from :func:`lipschitz_radii`.

    Attributes:
        l2: Certified l2 radius (0 for misclassified points).
        linf: Certified l∞ radius (0 for misclassified points).
        correct: Whether argmax of the float64 logits is the label (ties count as wrong).
        margin: min over j ≠ y of z_y − z_j in float64 (negative when misclassified).
        k_sub: Upper bound on the l2 Lipschitz constant of the body (all layers before
            the last Linear).
        bound_seconds: Time spent on the operator-norm bounds (of the bounds passed in,
            when precomputed).
    """

    l2: np.ndarray
    linf: np.ndarray
    correct: np.ndarray
    margin: np.ndarray
    k_sub: float
    bound_seconds: float


@dataclass
class _Op:
    """One leaf layer with float64 copies of its parameters on the model's device."""

    name: str
    module: nn.Module
    weight: torch.Tensor | None = None
    abs_weight: torch.Tensor | None = None
    bias: torch.Tensor | None = None


def _leaves(module: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """Leaf modules of a (possibly nested) Sequential in forward order, validated."""
    out: list[tuple[str, nn.Module]] = []
    for name, child in module.named_children():
        qual = f"{prefix}{name}"
        if isinstance(child, nn.Sequential):
            out += _leaves(child, f"{qual}.")
        else:
            _check_supported(qual, child)
            out.append((qual, child))
    return out


def _check_supported(name: str, m: nn.Module) -> None:
    kind = type(m).__name__
    if not isinstance(m, _SUPPORTED):
        raise UserError(f"certification does not support layer {name!r} ({kind}); only "
                        "Linear, Conv2d, ReLU, LeakyReLU, MaxPool2d, AvgPool2d, Flatten, "
                        "Identity and Dropout are handled")
    if isinstance(m, nn.Conv2d) and m.padding_mode != "zeros":
        raise UserError(f"certification supports only zero padding, but layer {name!r} "
                        f"(Conv2d) uses padding_mode={m.padding_mode!r}")
    if isinstance(m, nn.LeakyReLU) and m.negative_slope < 0:
        raise UserError(f"certification needs a monotone activation, but layer {name!r} "
                        f"(LeakyReLU) has negative_slope={m.negative_slope}")
    if isinstance(m, nn.MaxPool2d) and m.return_indices:
        raise UserError(f"certification cannot use layer {name!r} (MaxPool2d) with "
                        "return_indices=True")
    if isinstance(m, nn.AvgPool2d) and (
            m.divisor_override is not None or m.ceil_mode
            or (not m.count_include_pad and _pair(m.padding) != (0, 0))):
        # These options shrink the divisor of some windows below kernel_h * kernel_w,
        # which breaks the l2 bound sqrt(coverage / (kernel_h * kernel_w)).
        raise UserError(f"certification supports AvgPool2d only with plain averaging, but "
                        f"layer {name!r} sets divisor_override, ceil_mode or "
                        "count_include_pad=False with padding")


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(v, int):
        return v, v
    a, b = tuple(v)
    return int(a), int(b)


def _prepare(model: nn.Module) -> list[_Op]:
    """Validated leaf layers of ``model`` with float64 parameter copies."""
    if not isinstance(model, nn.Sequential):
        raise UserError(f"certification needs an nn.Sequential model, not "
                        f"{type(model).__name__}")
    ops = []
    for name, m in _leaves(model):
        op = _Op(name, m)
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            op.weight = m.weight.detach().to(torch.float64)
            op.abs_weight = op.weight.abs()
            if m.bias is not None:
                op.bias = m.bias.detach().to(torch.float64)
        ops.append(op)
    if not ops:
        raise UserError("certification needs a model with at least one layer")
    return ops


def _head_index(ops: list[_Op]) -> int:
    """Index of the last Linear; only identity-like layers may follow it."""
    linear = [i for i, op in enumerate(ops) if isinstance(op.module, nn.Linear)]
    if not linear:
        raise UserError("certification needs a model whose logits come from a final "
                        "nn.Linear layer, but it has none")
    head = linear[-1]
    for op in ops[head + 1:]:
        if not isinstance(op.module, _PASS_THROUGH):
            raise UserError(f"certification needs the logits to come from the last Linear, "
                            f"but layer {op.name!r} ({type(op.module).__name__}) follows it")
    return head


def _device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _point(op: _Op, x: torch.Tensor) -> torch.Tensor:
    """Forward one layer on a float64 batch (no in-place ops: inputs may be the caller's)."""
    m = op.module
    if isinstance(m, nn.Linear):
        return F.linear(x, op.weight, op.bias)
    if isinstance(m, nn.Conv2d):
        return F.conv2d(x, op.weight, op.bias, m.stride, m.padding, m.dilation, m.groups)
    if isinstance(m, nn.ReLU):
        return F.relu(x)
    if isinstance(m, nn.LeakyReLU):
        return F.leaky_relu(x, m.negative_slope)
    if isinstance(m, _DROPOUT):
        return x
    return m(x)  # pools, Flatten, Identity: parameter-free and not in place


def _interval(op: _Op, mu: torch.Tensor, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact interval image of the box [mu − r, mu + r] under one layer (center, radius)."""
    m = op.module
    if isinstance(m, nn.Linear):
        # Over the box, W h ranges over W mu ± |W| r exactly (per coordinate).
        return F.linear(mu, op.weight, op.bias), F.linear(r, op.abs_weight)
    if isinstance(m, nn.Conv2d):
        args = (m.stride, m.padding, m.dilation, m.groups)
        return (F.conv2d(mu, op.weight, op.bias, *args),
                F.conv2d(r, op.abs_weight, None, *args))
    if isinstance(m, (nn.ReLU, nn.LeakyReLU, nn.MaxPool2d)):
        # Monotone coordinatewise (max-pool: monotone in every input), so the image of a
        # box is the box spanned by the images of its two corners.
        lo, hi = _point(op, mu - r), _point(op, mu + r)
        return (lo + hi) / 2, (hi - lo) / 2
    # AvgPool2d is linear with nonnegative weights; Flatten, Identity, Dropout reshape.
    return _point(op, mu), _point(op, r)


def _coverage(kernel: int, stride: int, dilation: int = 1) -> int:
    """Max number of pooling windows covering one pixel along one axis.

    Windows start every ``stride`` pixels and read offsets 0, d, …, (k−1)d; each offset
    puts a pixel in at most one window, and the windows containing it start within a
    span of (k−1)d + 1 pixels.
    """
    return min(kernel, (kernel - 1) * dilation // stride + 1)


def _conv_padding(conv: nn.Conv2d, kernel_hw: tuple[int, int]) -> list[tuple[int, int]]:
    """(before, after) zero padding of each spatial axis, ``kernel_hw`` being dilated sizes."""
    if conv.padding == "valid":
        return [(0, 0), (0, 0)]
    if conv.padding == "same":
        # As in ATen: the odd extra pixel of an even kernel goes after the input.
        return [((k - 1) // 2, k - 1 - (k - 1) // 2) for k in kernel_hw]
    return [(p, p) for p in _pair(conv.padding)]


@torch.no_grad()
def conv2d_norm_bound(conv: nn.Conv2d, input_hw: tuple[int, int], extra_grids: int = 3,
                      max_batch: int = 4096) -> float:
    """Upper bound on the l2 operator norm of ``conv`` acting on H×W inputs.

    Soundness (Sedghi, Gupta & Long 2019). Write the zero-padded stride-1 conv as
    P ∘ C ∘ E: E embeds the C_in×H×W input at row/column offset p_b of an N_h×N_w grid
    of zeros (an isometry), C is the circular cross-correlation with the kernel on that
    grid, and P keeps the H_1×W_1 outputs of the plain conv (a coordinate restriction,
    norm ≤ 1). Along an axis the plain conv reads padded indices t ∈ [0, H + p_b + p_a − 1];
    with N ≥ H + max(p_b, p_a) every t ≥ N wraps to t − N < p_b, i.e. onto the zero border,
    exactly where the padded input is zero too, so P C E equals the conv. N ≥ H_1 keeps
    the kept outputs distinct and N ≥ k keeps the kernel unaliased; any larger grid is
    valid too. C is block-diagonalised by the 2D DFT, so ‖C‖ is the largest spectral norm
    of the C_out×C_in matrices K̂(u, v) of the kernel's DFT on the grid, and
    ‖conv‖ ≤ ‖P‖‖C‖‖E‖ = max_{u,v} σ_max(K̂(u, v)). The real kernel gives
    K̂(−u, −v) = conj K̂(u, v), so half the frequencies (rfft2) suffice.

    Kernel taps that meet only padding for every output are cropped first (the operator
    is unchanged), which matters when the kernel is larger than the input. Dilation is a
    stride-1 conv with a zero-filled kernel; groups make each K̂(u, v) block diagonal
    (the max over the groups' blocks); stride s subsamples the stride-1 output, a
    coordinate restriction, so the stride-1 bound still holds.

    Args:
        conv: A zero-padded Conv2d.
        input_hw: Input height and width.
        extra_grids: Also try grids 1..extra_grids larger per axis and keep the minimum.
        max_batch: Matrices per batched eigensolver call (bounds memory).
    """
    if conv.padding_mode != "zeros":
        raise UserError(f"conv2d_norm_bound supports only zero padding, not "
                        f"{conv.padding_mode!r}")
    w = conv.weight.detach().to(torch.float64)
    c_out, c_in_g, kh, kw = w.shape
    dh, dw = _pair(conv.dilation)
    if (dh, dw) != (1, 1):
        dilated = w.new_zeros(c_out, c_in_g, dh * (kh - 1) + 1, dw * (kw - 1) + 1)
        dilated[..., ::dh, ::dw] = w
        w = dilated
    k_hw = (w.shape[-2], w.shape[-1])
    grid, crops = [], []
    for size, k, (before, after) in zip(input_hw, k_hw, _conv_padding(conv, k_hw),
                                        strict=True):
        out1 = size + before + after - k + 1  # stride-1 output size
        if out1 < 1:
            raise UserError(f"conv kernel {k} does not fit an input of size {size}")
        # Output i reads padded index i + a; tap a ever meets the input (indices
        # [before, before + size)) iff before − out1 < a < before + size.
        lo, hi = max(0, before - out1 + 1), min(k - 1, before + size - 1)
        before, after = before - lo, out1 + hi - size - before
        grid.append(max(size + max(before, after), out1, hi - lo + 1))
        crops.append(slice(lo, hi + 1))
    w = w[..., crops[0], crops[1]]
    # Every grid at least this large is valid; each samples different frequencies of the
    # same symbol, so the minimum over a few grids is a (slightly tighter) bound too.
    best = min(_circular_norm(w, conv.groups, (grid[0] + t, grid[1] + t), max_batch)
               for t in range(extra_grids + 1))
    return best * (1 + NORM_SLACK)


def _circular_norm(w: torch.Tensor, groups: int, grid: tuple[int, int], max_batch: int) -> float:
    """Exact l2 norm of the circular cross-correlation with kernel ``w`` on ``grid``."""
    c_out, c_in_g = w.shape[:2]
    spec = torch.fft.rfft2(w, s=grid)  # (c_out, c_in_g, N_h, N_w // 2 + 1)
    spec = spec.reshape(groups, c_out // groups, c_in_g, -1).permute(0, 3, 1, 2)
    mats = spec.reshape(-1, c_out // groups, c_in_g)
    return max(float(_spectral_norms(mats[i:i + max_batch]).max())
               for i in range(0, mats.shape[0], max_batch))


def _spectral_norms(mats: torch.Tensor) -> torch.Tensor:
    """Largest singular value of each matrix in a batch (float64 or complex128).

    σ_max² is the top eigenvalue of the smaller Gram matrix; a Hermitian eigensolver is
    several times faster than an SVD here, and the Gram's rounding error (≈ n·ε·σ_max²)
    is far inside NORM_SLACK.
    """
    gram = mats.mH @ mats if mats.shape[-1] <= mats.shape[-2] else mats @ mats.mH
    return torch.linalg.eigvalsh(gram)[..., -1].clamp(min=0).sqrt()


def _layer_bound(op: _Op, in_shape: tuple[int, ...]) -> float:
    m = op.module
    if isinstance(m, nn.Linear):
        # Applied along the last axis, copies of W act block-diagonally: same norm as W.
        return float(_spectral_norms(op.weight)) * (1 + NORM_SLACK)
    if isinstance(m, nn.Conv2d):
        return conv2d_norm_bound(m, (in_shape[-2], in_shape[-1]))
    if isinstance(m, nn.LeakyReLU):
        return max(1.0, m.negative_slope)
    if isinstance(m, nn.MaxPool2d):
        # |max_w a − max_w b| ≤ max_w |a − b| ≤ ‖(a − b)|_w‖₂, summed over windows: each
        # pixel is counted once per window covering it.
        kh, kw = _pair(m.kernel_size)
        sh, sw = _pair(m.stride)
        ch, cw = _pair(m.dilation)
        return math.sqrt(_coverage(kh, sh, ch) * _coverage(kw, sw, cw))
    if isinstance(m, nn.AvgPool2d):
        # Cauchy–Schwarz: (Σ_w x / n)² ≤ Σ_w x² / n, and each pixel lies in at most
        # `coverage` windows; non-overlapping k×k pooling gives exactly 1/k.
        kh, kw = _pair(m.kernel_size)
        sh, sw = _pair(m.stride if m.stride is not None else m.kernel_size)
        return math.sqrt(_coverage(kh, sh) * _coverage(kw, sw) / (kh * kw))
    return 1.0  # ReLU, Flatten, Identity, Dropout


def _trace(ops: list[_Op], input_shape: Sequence[int],
           device: torch.device) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """Per-example (input, output) shapes of every layer."""
    h = torch.zeros((1, *input_shape), dtype=torch.float64, device=device)
    shapes = []
    for op in ops:
        try:
            out = _point(op, h)
        except RuntimeError as exc:
            raise UserError(f"input shape {tuple(input_shape)} does not fit layer "
                            f"{op.name!r} ({type(op.module).__name__}): "
                            f"{str(exc).splitlines()[0]}") from exc
        shapes.append((tuple(h.shape[1:]), tuple(out.shape[1:])))
        h = out
    return shapes


@torch.no_grad()
def operator_norm_bounds(model: nn.Module, input_shape: Sequence[int]) -> list[LayerBound]:
    """Per-layer upper bounds on the l2 operator norm (Lipschitz constant) of ``model``.

    Linear: exact spectral norm. Conv2d: the circular-embedding DFT bound of
    :func:`conv2d_norm_bound`. ReLU, Flatten, Identity, Dropout: 1. LeakyReLU (slope
    a ≥ 0): max(1, a). MaxPool2d: sqrt(windows covering a pixel), 1 when
    non-overlapping. AvgPool2d: sqrt(coverage / window size), 1/k for k×k
    non-overlapping. Convs dominate the cost; compute once per model and pass the result
    to :func:`lipschitz_radii`.

    Args:
        model: An ``nn.Sequential`` of the layer types above.
        input_shape: Per-example input shape, e.g. ``(1, 28, 28)``.
    """
    ops = _prepare(model)
    shapes = _trace(ops, input_shape, _device(model))
    out = []
    for i, (op, (s_in, s_out)) in enumerate(zip(ops, shapes, strict=True)):
        start = time.perf_counter()
        bound = _layer_bound(op, s_in)
        out.append(LayerBound(i, op.name, type(op.module).__name__, bound,
                              time.perf_counter() - start, s_in, s_out))
    return out


def _check_bounds(ops: list[_Op], bounds: list[LayerBound], input_shape: tuple[int, ...]) -> None:
    kinds = [type(op.module).__name__ for op in ops]
    if [b.kind for b in bounds] != kinds or bounds[0].in_shape != input_shape:
        raise UserError("the precomputed bounds belong to another model or input shape; "
                        "recompute them with operator_norm_bounds(model, x.shape[1:])")


def _inf_to_2_row_bound(op: _Op, out_shape: tuple[int, ...]) -> float:
    """Upper bound on the l∞ → l2 norm of a Linear or Conv2d layer.

    Each output coordinate of channel/unit o is a dot product with (a restriction of) the
    row W_o, so |(Wδ)_o| ≤ ‖W_o‖₁ ‖δ‖∞ and ‖Wδ‖₂² ≤ reps · Σ_o ‖W_o‖₁² ‖δ‖∞², where reps
    counts the output positions sharing a row (spatial positions for a conv).
    """
    assert op.abs_weight is not None
    row_l1 = op.abs_weight.reshape(op.abs_weight.shape[0], -1).sum(dim=1)
    reps = math.prod(out_shape) / op.abs_weight.shape[0]
    return math.sqrt(reps * float(row_l1.pow(2).sum())) * (1 + NORM_SLACK)


def _inf_lipschitz(m: nn.Module) -> float:
    """l∞ → l∞ Lipschitz constant of a parameter-free layer (pools and ReLU: 1)."""
    return max(1.0, m.negative_slope) if isinstance(m, nn.LeakyReLU) else 1.0


def _min_ratio(margins: torch.Tensor, y: torch.Tensor, denom: torch.Tensor) -> torch.Tensor:
    """min over j ≠ y of margins[:, j] / denom[y, j] (margins positive where it matters)."""
    ratio = margins / denom[y]
    return ratio.scatter(1, y[:, None], math.inf).min(dim=1).values


def _labels(y: torch.Tensor | np.ndarray | Sequence[int], n: int, classes: int,
            device: torch.device) -> torch.Tensor:
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
    layer row by row (:func:`_inf_to_2_row_bound`) after the l∞-Lipschitz layers before
    it, times the l2 bounds after it; a body without weight layers uses the dual norm
    directly: |(w_y − w_j)·δh| ≤ ‖w_y − w_j‖₁ ‖δh‖∞, exact for a linear model.

    Args:
        model: An ``nn.Sequential`` ending in ``nn.Linear`` (then only identity layers).
        x: Inputs (N, *input_shape); moved once to the model's device.
        y: Integer labels (N,).
        bounds: Output of :func:`operator_norm_bounds` for this model and input shape.
        batch_size: Points per float64 forward pass.
    """
    ops = _prepare(model)
    device = _device(model)
    head = _head_index(ops)
    input_shape = tuple(x.shape[1:])
    if bounds is None:
        bounds = operator_norm_bounds(model, input_shape)
    _check_bounds(ops, bounds, input_shape)
    if len(bounds[head].in_shape) != 1:
        raise UserError(f"the last Linear ({ops[head].name!r}) must see flattened features, "
                        f"not shape {bounds[head].in_shape}")
    w_head = ops[head].weight
    assert w_head is not None
    classes = w_head.shape[0]
    k_sub = math.prod(b.bound for b in bounds[:head])

    # Pairwise row distances without the |a|² + |b|² − 2ab shortcut, which cancels.
    dist2 = torch.cdist(w_head, w_head, compute_mode="donot_use_mm_for_euclid_dist")
    denom_l2 = k_sub * dist2
    weighted = [i for i in range(head) if isinstance(ops[i].module, (nn.Linear, nn.Conv2d))]
    first = weighted[0] if weighted else head
    prefix_inf = math.prod(_inf_lipschitz(op.module) for op in ops[:first])
    if weighted:
        k_alt = (prefix_inf * _inf_to_2_row_bound(ops[first], bounds[first].out_shape)
                 * math.prod(b.bound for b in bounds[first + 1:head]))
        denom_inf = k_alt * dist2
    else:
        denom_inf = prefix_inf * torch.cdist(w_head, w_head, p=1)
    sqrt_d = math.sqrt(math.prod(input_shape))

    x = x.to(device)
    y = _labels(y, x.shape[0], classes, device)
    l2, linf, correct, margin = [], [], [], []
    for start in range(0, x.shape[0], batch_size):
        h = x[start:start + batch_size].to(torch.float64)
        yb = y[start:start + batch_size]
        for op in ops[:head + 1]:
            h = _point(op, h)
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
    from the box is sound (and loose by design). The box is pushed through every layer
    exactly in float64 center/radius form; at the head, z_y − z_j = (w_y − w_j)·h +
    (b_y − b_j) is bounded over the box of h at once, so
    lower = (w_y − w_j)·mu − |w_y − w_j|·r + (b_y − b_j) is its exact minimum there.
    A point is certified iff lower > 0 for every j ≠ y; at eps = 0 that is exactly
    "correctly classified, no tie".

    Args:
        model: An ``nn.Sequential`` ending in ``nn.Linear``.
        x: Inputs (N, *input_shape), inside ``input_bounds``.
        y: Integer labels (N,).
        eps: Radius (≥ 0).
        norm: ``"L2"`` or ``"Linf"`` (case-insensitive).
        batch_size: Points per batch; memory grows with batch × classes × features.
        input_bounds: The valid input range the box is clipped to, or None for no clipping.
    """
    if norm.lower() not in _NORMS:
        raise UserError(f"norm must be L2 or Linf, not {norm!r}")
    if not eps >= 0:
        raise UserError(f"eps must be a nonnegative number, not {eps}")
    ops = _prepare(model)
    device = _device(model)
    head = _head_index(ops)
    w_head, b_head = ops[head].weight, ops[head].bias
    assert w_head is not None
    x = x.to(device)
    if input_bounds is not None and x.numel() and (
            float(x.min()) < input_bounds[0] or float(x.max()) > input_bounds[1]):
        raise UserError(f"inputs must lie in {list(input_bounds)} for IBP; pass "
                        "input_bounds=None for unbounded inputs")
    y = _labels(y, x.shape[0], w_head.shape[0], device)
    out = []
    for start in range(0, x.shape[0], batch_size):
        xb = x[start:start + batch_size].to(torch.float64)
        yb = y[start:start + batch_size]
        lo, hi = xb - eps, xb + eps
        if input_bounds is not None:
            lo, hi = lo.clamp(min=input_bounds[0]), hi.clamp(max=input_bounds[1])
        mu, r = (lo + hi) / 2, (hi - lo) / 2
        for op in ops[:head]:
            mu, r = _interval(op, mu, r)
        if len(mu.shape) != 2:
            raise UserError(f"the last Linear ({ops[head].name!r}) must see flattened "
                            f"features, not shape {tuple(mu.shape[1:])}")
        z = F.linear(mu, w_head, b_head)
        center = z.gather(1, yb[:, None]) - z
        diff_abs = (w_head[yb][:, None, :] - w_head[None, :, :]).abs()  # (B, C, D)
        lower = center - torch.einsum("bcd,bd->bc", diff_abs, r)
        out.append(lower.scatter(1, yb[:, None], math.inf).min(dim=1).values > 0)
    if not out:
        return np.zeros(0, dtype=np.bool_)
    return torch.cat(out).cpu().numpy()


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
