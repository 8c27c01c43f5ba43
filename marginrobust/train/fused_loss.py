"""The trainer's float64 log-domain loss as one autograd node with a closed-form backward.

Each SGD step of the trainer minimises the relative loss

    rel = mean_b exp(log ℓ_b − F),   log ℓ_b = log softplus(s_b),
    s_b = logsumexp_{j≠y}(f_j − f_y),

with F the log of the last accepted mean loss (``schedules``: the frame trick), written in
the trainer as ``torch.exp(log_losses(logits, y) - F).mean()``. Through autograd that is
about twenty small float64 kernels forward and as many backward (gather, scatter,
logsumexp, two clamps, softplus, log, where, exp, mean and their backward ops); on a GPU
they cost more than the float64 arithmetic itself. :class:`FusedLogLoss` computes the
same forward values with the same float64 formulas, keeps what the backward needs, and
gives the gradient with respect to the logits in a handful of kernels:

    d log ℓ / d s    = σ(s) / softplus(s)        (s ≥ −30; torch's softplus for s > 20)
                     = 1 − e^{s}/2               (s < −30, the asymptotic branch)
    d s / d f_j      = p_j = softmax_{k≠y}(f_k − f_y)_j      for j ≠ y
    d s / d f_y      = −Σ_{j≠y} p_j = −1
    d rel / d log ℓ_b = exp(log ℓ_b − F) / B

so ∂rel/∂f_bj = (w_b/B)·(d log ℓ/d s)_b·p_bj for j ≠ y and minus the same row factor at
j = y, with w_b = exp(log ℓ_b − F). Nothing is formed that can overflow or vanish
wrongly: p is a softmax (its largest entry is at least 1/(K−1)), w is relative to the
frame, and both branches of d log ℓ/d s are bounded by 1 (docs/science.md: the log
domain, the frame trick).

:func:`framed_loss` is the drop-in for the trainer's expression;
:func:`fused_log_losses` for ``margins.log_losses`` where a gradient is wanted. The
values are the reference's bits (the same formulas in the same order); the gradients
agree to 1e-12 relative or better (the same terms in another order: e^{d−m}/S rather
than e^{d−s}, both conditioned by |d|·2⁻⁵³), and with float32 logits the float32
gradients are in practice the same. ``tests/test_fused_loss.py`` checks both on random
logits, below log10 𝓛 = −1000, on ties and on misclassified points. The one place they
differ by more is s = −30 exactly, where the reference's two clamps give a zero gradient;
the closed form is continuous there.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

# The switch to the asymptotic form; must equal ``margins._SMALL_S`` (tested), so that the
# fused loss and ``margins.log_losses`` take the same branch for every s.
SMALL_S = -30.0


def _forward(logits: torch.Tensor, y: torch.Tensor, log_frame: float
             ) -> tuple[torch.Tensor, ...]:
    """rel, log ℓ and what the backward needs, all float64, in about twenty kernels.

    The values are those of ``margins.log_losses`` bit for bit: the same formulas in the
    same order (the reference's clamps only keep autograd away from the unused branch of
    ``where``, and no autograd runs here, so an inf there is harmless).
    """
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise ValueError(f"logits must be (batch, classes) with at least two classes, "
                         f"not {tuple(logits.shape)}")
    z = logits.to(torch.float64)
    y1 = y.view(-1, 1)
    d = z - z.gather(1, y1)
    d.scatter_(1, y1, -math.inf)
    # logsumexp by hand, as torch computes it (max, then log of the shifted sum, plus the
    # max), so that s has the reference's bits and the softmax p comes for free.
    m = d.amax(dim=1, keepdim=True)  # finite: at least one j ≠ y
    p = (d - m).exp_()  # exactly 0 at j = y
    total = p.sum(dim=1, keepdim=True)
    s = (total.log() + m).squeeze(1)
    p.div_(total)
    u = torch.exp(s)
    sp = F.softplus(s)
    small = s < SMALL_S
    log_l = torch.where(small, s - 0.5 * u, torch.log(sp))
    w = torch.exp(log_l - log_frame)
    return w.mean(), log_l, p, s, u, sp, small, w


def _backward(g: torch.Tensor, y: torch.Tensor, p: torch.Tensor, s: torch.Tensor,
              u: torch.Tensor, sp: torch.Tensor, small: torch.Tensor) -> torch.Tensor:
    """∂/∂f (float64) given g = ∂/∂ log ℓ per example."""
    # d log ℓ/d s on the large branch exactly as autograd forms it through log and
    # torch's softplus (whose derivative is 1 above its threshold of 20, as its value is s).
    large = torch.ops.aten.softplus_backward(g / sp, s, 1.0, 20.0)
    # On the small branch d/ds (s − e^s/2) = 1 − e^s/2.
    row = torch.where(small, torch.addcmul(g, g, u, value=-0.5), large).unsqueeze(1)
    grad = p * row
    # ∂s/∂f_y = −Σ_{j≠y} p_j = −1.
    grad.scatter_(1, y.view(-1, 1), -row)
    return grad


class FusedLogLoss(torch.autograd.Function):
    """(rel, log ℓ) from float32 (or any float) logits and int64 labels, one autograd node.

    ``apply(logits, y, log_frame)`` returns the 0-dim float64 relative loss
    mean_b exp(log ℓ_b − F) and the (B,) float64 log losses; both are differentiable
    (first order) with respect to the logits. The gradient has the logits' dtype.
    """

    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, y: torch.Tensor,
                log_frame: float) -> tuple[torch.Tensor, torch.Tensor]:
        rel, log_l, *saved = _forward(logits, y, float(log_frame))
        ctx.save_for_backward(y, *saved)
        ctx.logits_dtype = logits.dtype
        # Unused outputs get None rather than a tensor of zeros: no kernel for them.
        ctx.set_materialize_grads(False)
        return rel, log_l

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, g_rel: torch.Tensor | None, g_log_l: torch.Tensor | None
                 ) -> tuple[torch.Tensor | None, None, None]:
        y, p, s, u, sp, small, w = ctx.saved_tensors
        if g_rel is None and g_log_l is None:
            return None, None, None
        # ∂/∂ log ℓ_b of what was differentiated: (g/B)·w_b from rel, plus g_log_l.
        g = None
        if g_rel is not None:
            g = w * (g_rel / w.numel())
        if g_log_l is not None:
            g = g_log_l if g is None else g + g_log_l
        assert g is not None
        return _backward(g, y, p, s, u, sp, small).to(ctx.logits_dtype), None, None


def framed_loss(logits: torch.Tensor, y: torch.Tensor, log_frame: float = 0.0) -> torch.Tensor:
    """The trainer's relative loss mean_b exp(log ℓ_b − F), float64, 0-dim.

    The same value as ``torch.exp(margins.log_losses(logits, y) - log_frame).mean()`` with
    a fused backward: the one-line swap in ``Trainer._run_epoch``.

    Args:
        logits: (B, K) logits, K ≥ 2, any float dtype (float32 in training).
        y: (B,) int64 labels.
        log_frame: F, the natural log of the reference mean loss (``schedule.log_frame``).
    """
    rel, _ = FusedLogLoss.apply(logits, y, log_frame)
    return rel


def framed_loss_and_log_losses(logits: torch.Tensor, y: torch.Tensor, log_frame: float = 0.0
                               ) -> tuple[torch.Tensor, torch.Tensor]:
    """(:func:`framed_loss`, per-example log ℓ), both from one forward, both differentiable."""
    rel, log_l = FusedLogLoss.apply(logits, y, log_frame)
    return rel, log_l


def fused_log_losses(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """log ℓ_n, float64: the values of ``margins.log_losses`` with the fused backward."""
    _, log_l = FusedLogLoss.apply(logits, y, 0.0)
    return log_l


__all__ = ["SMALL_S", "FusedLogLoss", "framed_loss", "framed_loss_and_log_losses",
           "fused_log_losses"]
