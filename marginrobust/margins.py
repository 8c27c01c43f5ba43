"""Margin statistics of a classifier, in float64 and in the log domain.

The formulas are those of docs/science.md (margins; smoothed margin in the log domain).

Pure functions: logits and parameters in, numbers out; no I/O, no training.

Per example: q_n = f_y − max_{j≠y} f_j and the cross-entropy loss
ℓ_n = log(1 + Σ_{j≠y} exp(f_j − f_y)) = softplus(s_n), s_n = logsumexp_{j≠y}(f_j − f_y).
Late in training 𝓛 = Σ ℓ_n falls far below the smallest float64 (1e-308), so only
log ℓ_n, log 𝓛 and the margins are ever formed; nothing here turns into 0, inf or NaN
when log10 𝓛 is −1000 or lower.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from . import distributed
from .models import homogeneity_order, layer_norms

LN10 = math.log(10.0)
# Below s = -30, log(softplus(s)) = s - e^s/2 + O(e^{2s}) is exact in float64.
_SMALL_S = -30.0
NEAR_SUPPORT_DECADES = tuple(range(1, 8))


def per_example_margins(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """q_n = f_y(x_n) − max_{j≠y} f_j(x_n) in float64 (negative when misclassified)."""
    z = logits.to(torch.float64)
    zy = z.gather(1, y.view(-1, 1)).squeeze(1)
    others = z.scatter(1, y.view(-1, 1), -math.inf)
    return zy - others.max(dim=1).values


def log_losses(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """log ℓ_n of the cross-entropy loss, float64, differentiable, finite for any finite logits.

    ℓ_n itself underflows once s_n < −745; its log never does.
    """
    z = logits.to(torch.float64)
    zy = z.gather(1, y.view(-1, 1))
    s = torch.logsumexp((z - zy).scatter(1, y.view(-1, 1), -math.inf), dim=1)
    # Clamp each branch to its own domain so the unused branch of `where` cannot
    # produce inf/NaN (whose gradient would leak through the selection).
    s_lo = s.clamp(max=_SMALL_S)
    s_hi = s.clamp(min=_SMALL_S)
    small = s_lo - 0.5 * torch.exp(s_lo)
    large = torch.log(nn.functional.softplus(s_hi))
    return torch.where(s < _SMALL_S, small, large)


def log_sum_loss(log_l: torch.Tensor) -> float:
    """log 𝓛 = log Σ_n ℓ_n from the per-example log losses (natural log)."""
    return float(torch.logsumexp(log_l.to(torch.float64), dim=0))


def neg_log_expm1(log_loss: float) -> float:
    """−log(expm1(𝓛)) given log 𝓛: the numerator of the smoothed margin.

    For tiny 𝓛 it is −log 𝓛 − log1p(𝓛/2 + 𝓛²/6 + …) ≈ −log 𝓛 − 𝓛/2; for large 𝓛
    it is −𝓛 − log1p(−e^{−𝓛}); in between the direct formula is accurate.
    """
    if log_loss < _SMALL_S:
        return -log_loss - 0.5 * math.exp(log_loss)
    loss = math.exp(log_loss) if log_loss < 700 else math.inf
    if loss > 30.0:
        return -loss
    return -math.log(math.expm1(loss))


@torch.no_grad()
def param_norm(model: nn.Module) -> float:
    """ρ = ‖θ‖₂ over all parameters, in float64."""
    # vector_norm accumulates in float64 without a float64 copy of the weights.
    norms = [torch.linalg.vector_norm(p.detach(), dtype=torch.float64)
             for p in model.parameters()]
    return float(torch.linalg.vector_norm(torch.stack(norms)))


def stats_from_logits(logits: torch.Tensor, y: torch.Tensor, rho: float, norms: Sequence[float],
                      order: int | None, across_ranks: bool = False) -> dict[str, Any]:
    """Margin statistics from logits over the training set and the parameter norms.

    Args:
        logits: (N, K) logits of the N training points (any float dtype).
        y: (N,) labels.
        rho: ‖θ‖₂ over all parameters.
        norms: Frobenius norm of each weight layer (layer 1's bias included).
        order: Homogeneity order L, or None for a non-homogeneous model; then the
            normalized margins use the nominal order len(norms) and are only indicative.
        across_ranks: ``logits`` and ``y`` are this rank's share of the set (every rank
            of the process group calls this with its own share; ``rho`` and ``norms``
            are the same on all): the statistics are those of the whole set, reduced
            exactly (:func:`reduce_shares`). Without a group of several processes this
            changes nothing.

    Returns:
        A dict with ``log10_loss`` (summed), ``log10_mean_loss``, ``accuracy``, ``q_min``,
        ``q_max``, ``rho``, ``layer_norms``, ``homogeneity_order``, ``homogeneous``
        (whether that order was measured), ``margin_order`` (the L the margins divide
        by: the measured order, or the nominal len(norms)), ``normalized_margin``
        (q_min/ρ^L), ``product_margin`` (q_min/∏‖W_i‖_F), ``smoothed_margin``
        (−log(expm1 𝓛)/ρ^L) and ``near_support`` (#{n: q_n < q_min + k·ln 10}, k = 1..7).
    """
    q = per_example_margins(logits, y)
    log_l = log_losses(logits, y)
    if across_ranks and distributed.is_initialized() and distributed.world_size() > 1:
        summary = reduce_shares(q, log_l)
    else:
        summary = _summary(q, log_l)
    return _stats(summary, rho, norms, order)


def _summary(q: torch.Tensor, log_l: torch.Tensor) -> dict[str, Any]:
    """The set-level numbers of one process's margins q_n and log-losses log ℓ_n."""
    q_min = float(q.min())
    return {"n": int(q.numel()), "log_loss": log_sum_loss(log_l),
            "accuracy": float((q > 0).double().mean()), "q_min": q_min,
            "q_max": float(q.max()),
            "near": [int((q < q_min + k * LN10).sum()) for k in NEAR_SUPPORT_DECADES]}


def reduce_shares(q: torch.Tensor, log_l: torch.Tensor) -> dict[str, Any]:
    """The numbers of :func:`_summary` over the union of every rank's share, on every rank.

    Each rank passes its share's q_n and log ℓ_n (a share may be empty). log 𝓛 is the
    float64 logsumexp of the ranks' log 𝓛 (in rank order), q_min and q_max the minimum
    and maximum over ranks, the counts (points, correct, near the support, which need the
    global q_min first) sums of integers; so all ranks get the same bits. They equal one
    process's numbers but for log 𝓛, which is summed in another order (float64 rounding,
    about 1e-16 relative).
    """
    log_loss = float(distributed.all_logsumexp(
        torch.logsumexp(log_l.to(torch.float64), dim=0).cpu()))
    q_min = float(distributed.all_min(float(q.min()) if q.numel() else math.inf))
    q_max = float(distributed.all_max(float(q.max()) if q.numel() else -math.inf))
    local = [int(q.numel()), int((q > 0).sum())]
    local += [int((q < q_min + k * LN10).sum()) for k in NEAR_SUPPORT_DECADES]
    counts = [int(v) for v in distributed.all_sum(torch.tensor(local, dtype=torch.int64))]
    n, correct = counts[0], counts[1]
    return {"n": n, "log_loss": log_loss, "accuracy": correct / n, "q_min": q_min,
            "q_max": q_max, "near": counts[2:]}


def _stats(summary: dict[str, Any], rho: float, norms: Sequence[float],
           order: int | None) -> dict[str, Any]:
    """The statistics dict of :func:`stats_from_logits` from the set-level numbers."""
    n, log_loss, q_min = summary["n"], summary["log_loss"], summary["q_min"]
    order_used = order if order is not None else len(norms)
    log_rho_l = order_used * math.log(rho)
    log_prod = sum(math.log(v) for v in norms)
    return {
        "log10_loss": log_loss / LN10,
        "log10_mean_loss": (log_loss - math.log(n)) / LN10,
        "accuracy": summary["accuracy"],
        "q_min": q_min,
        "q_max": summary["q_max"],
        "rho": rho,
        "layer_norms": [float(v) for v in norms],
        "homogeneity_order": order,
        "homogeneous": order is not None,
        "margin_order": order_used,
        "normalized_margin": q_min * math.exp(-log_rho_l),
        "product_margin": q_min * math.exp(-log_prod),
        "smoothed_margin": neg_log_expm1(log_loss) * math.exp(-log_rho_l),
        "near_support": summary["near"],
    }


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Logits of ``model`` on ``x`` in batches, without gradients, on the model's device."""
    device = next(model.parameters()).device
    if len(x) == 0:
        return model(x.to(device))  # an empty share of a set split over ranks
    outs = [model(x[i:i + batch_size].to(device)) for i in range(0, len(x), batch_size)]
    return torch.cat(outs)


def margin_stats(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 order: int | None | str = "auto",
                 batch_size: int = 1000, across_ranks: bool = False) -> dict[str, Any]:
    """Margin statistics of ``model`` on a training set (x, y).

    Args:
        model: A classifier returning logits; evaluated in its current mode.
        x: Inputs (N, ...), in [0, 1].
        y: Labels (N,).
        order: The homogeneity order L; ``"auto"`` measures it on the first 64 points
            (pass it in when calling repeatedly: it costs a few forward passes; with
            ``across_ranks``, pass it in: the ranks' shares would measure their own).
        batch_size: Forward-pass batch size.
        across_ranks: ``x`` and ``y`` are this rank's share of the set and every rank of
            the process group holds the same model: the statistics of the whole set
            (:func:`stats_from_logits`).
    """
    if order == "auto":
        order = homogeneity_order(model, x[:64])
    logits = predict_logits(model, x, batch_size)
    y = y.to(logits.device)
    return stats_from_logits(logits, y, param_norm(model), layer_norms(model), order,
                             across_ranks)


__all__ = ["log_losses", "log_sum_loss", "margin_stats", "neg_log_expm1", "param_norm",
           "per_example_margins", "predict_logits", "reduce_shares", "stats_from_logits"]
