"""Per-layer upper bounds on Lipschitz constants, for the certificates of
:mod:`marginrobust.evaluate.certify.lipschitz_ibp`.

l2 → l2 operator norms of every operation of a model's chain
(:func:`marginrobust.evaluate.certify.tracing.build_chain`): exact spectral norms for
Linear, the circular-embedding DFT bound for Conv2d, closed forms for pools and
activations; and the l∞ → l2 row bound of a weight layer used by the l∞ radius. Every
computed spectral norm carries a relative slack of ``NORM_SLACK`` for float64 rounding
(see ``docs/science.md``, certificates).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ...errors import UserError
from .ops import Chain, Op, pair
from .tracing import build_chain

__all__ = ["LayerBound", "NORM_SLACK", "chain_bounds", "check_bounds", "conv2d_norm_bound",
           "conv_padding", "inf_lipschitz", "inf_to_2_row_bound", "operator_norm_bounds"]

# Relative slack on every computed spectral norm: float64 FFT, Gram and eigensolver errors
# are ~1e-16 relative per unit of dimension, so 1e-10 keeps the bounds upper bounds even
# for huge layers.
NORM_SLACK = 1e-10


@dataclass(frozen=True)
class LayerBound:
    """An upper bound on the l2 → l2 Lipschitz constant of one operation of the chain.

    Attributes:
        index: Position in the chain (nested containers expanded).
        name: Qualified module name inside the model (``"3"``, ``"features.0"``), or the
            graph node name of a function (``"relu_1"``, ``"view"``).
        kind: Module class name, e.g. ``"Conv2d"``; for a function the layer it equals
            (``"ReLU"``), ``"Reshape"`` for view / reshape / flatten.
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


def _coverage(kernel: int, stride: int, dilation: int = 1) -> int:
    """Max number of pooling windows covering one pixel along one axis.

    Windows start every ``stride`` pixels and read offsets 0, d, …, (k−1)d; each offset
    puts a pixel in at most one window, and the windows containing it start within a
    span of (k−1)d + 1 pixels.
    """
    return min(kernel, (kernel - 1) * dilation // stride + 1)


def conv_padding(conv: nn.Conv2d, kernel_hw: tuple[int, int]) -> list[tuple[int, int]]:
    """(before, after) zero padding of each spatial axis, ``kernel_hw`` being dilated sizes."""
    if conv.padding == "valid":
        return [(0, 0), (0, 0)]
    if conv.padding == "same":
        # As in ATen: the odd extra pixel of an even kernel goes after the input.
        return [((k - 1) // 2, k - 1 - (k - 1) // 2) for k in kernel_hw]
    return [(p, p) for p in pair(conv.padding)]


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
    dh, dw = pair(conv.dilation)
    if (dh, dw) != (1, 1):
        dilated = w.new_zeros(c_out, c_in_g, dh * (kh - 1) + 1, dw * (kw - 1) + 1)
        dilated[..., ::dh, ::dw] = w
        w = dilated
    k_hw = (w.shape[-2], w.shape[-1])
    grid, crops = [], []
    for size, k, (before, after) in zip(input_hw, k_hw, conv_padding(conv, k_hw),
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


def _layer_bound(op: Op) -> float:
    m = op.module
    if op.role == "linear":
        # Applied along the last axis, copies of W act block-diagonally: same norm as W.
        return float(_spectral_norms(op.weight)) * (1 + NORM_SLACK)
    if op.role == "conv":
        assert isinstance(m, nn.Conv2d)
        return conv2d_norm_bound(m, (op.in_shape[-2], op.in_shape[-1]))
    if op.role == "leaky":
        return max(1.0, op.slope)
    if isinstance(m, nn.MaxPool2d):
        # |max_w a − max_w b| ≤ max_w |a − b| ≤ ‖(a − b)|_w‖₂, summed over windows: each
        # pixel is counted once per window covering it.
        kh, kw = pair(m.kernel_size)
        sh, sw = pair(m.stride)
        ch, cw = pair(m.dilation)
        return math.sqrt(_coverage(kh, sh, ch) * _coverage(kw, sw, cw))
    if isinstance(m, nn.AvgPool2d):
        # Cauchy–Schwarz: (Σ_w x / n)² ≤ Σ_w x² / n, and each pixel lies in at most
        # `coverage` windows; non-overlapping k×k pooling gives exactly 1/k.
        kh, kw = pair(m.kernel_size)
        sh, sw = pair(m.stride if m.stride is not None else m.kernel_size)
        return math.sqrt(_coverage(kh, sh) * _coverage(kw, sw) / (kh * kw))
    return 1.0  # ReLU, reshapes, identities


def chain_bounds(chain: Chain) -> list[LayerBound]:
    """:func:`operator_norm_bounds` of an already built chain (with its parameters)."""
    out = []
    for i, op in enumerate(chain.ops):
        start = time.perf_counter()
        bound = _layer_bound(op)
        out.append(LayerBound(i, op.name, op.kind, bound, time.perf_counter() - start,
                              op.in_shape, op.out_shape))
    return out


@torch.no_grad()
def operator_norm_bounds(model: nn.Module, input_shape: Sequence[int]) -> list[LayerBound]:
    """Per-operation upper bounds on the l2 operator norm (Lipschitz constant) of ``model``.

    Linear: exact spectral norm. Conv2d: the circular-embedding DFT bound of
    :func:`conv2d_norm_bound`. ReLU, reshapes, Identity, Dropout: 1. LeakyReLU (slope
    a ≥ 0): max(1, a). MaxPool2d: sqrt(windows covering a pixel), 1 when
    non-overlapping. AvgPool2d: sqrt(coverage / window size), 1/k for k×k
    non-overlapping. Convs dominate the cost; compute once per model and pass the result
    to :func:`marginrobust.evaluate.certify.lipschitz_ibp.lipschitz_radii`.

    Args:
        model: Any module whose forward is a chain of the operations above
            (:mod:`marginrobust.evaluate.certify.tracing`), whatever its class.
        input_shape: Per-example input shape, e.g. ``(1, 28, 28)``.

    Raises:
        NotCertifiable: If the model is not such a chain (the message names why).
    """
    return chain_bounds(build_chain(model, input_shape, logits=False))


def check_bounds(chain: Chain, bounds: list[LayerBound]) -> None:
    """Raise unless ``bounds`` were computed for this chain and input shape."""
    if [b.kind for b in bounds] != [op.kind for op in chain.ops] \
            or bounds[0].in_shape != chain.input_shape:
        raise UserError("the precomputed bounds belong to another model or input shape; "
                        "recompute them with operator_norm_bounds(model, x.shape[1:])")


def inf_to_2_row_bound(op: Op) -> float:
    """Upper bound on the l∞ → l2 norm of a Linear or Conv2d operation.

    Each output coordinate of channel/unit o is a dot product with (a restriction of) the
    row W_o, so |(Wδ)_o| ≤ ‖W_o‖₁ ‖δ‖∞ and ‖Wδ‖₂² ≤ reps · Σ_o ‖W_o‖₁² ‖δ‖∞², where reps
    counts the output positions sharing a row (spatial positions for a conv).
    """
    assert op.abs_weight is not None
    row_l1 = op.abs_weight.reshape(op.abs_weight.shape[0], -1).sum(dim=1)
    reps = math.prod(op.out_shape) / op.abs_weight.shape[0]
    return math.sqrt(reps * float(row_l1.pow(2).sum())) * (1 + NORM_SLACK)


def inf_lipschitz(op: Op) -> float:
    """l∞ → l∞ Lipschitz constant of a parameter-free operation (pools, ReLU: 1)."""
    return max(1.0, op.slope) if op.role == "leaky" else 1.0
