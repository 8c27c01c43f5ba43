"""Logit rescaling: the attacked logits at a fixed spread, whatever the model's scale.

Dividing the logits by a positive constant changes no decision, so robust accuracies and
minimal adversarial distances are those of the model itself; choosing the constant from
the logits' own spread makes every attack invariant to the scale a long-trained
homogeneous net reaches (:mod:`.base`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ...errors import UserError

__all__ = ["LogitScaled", "logit_scale"]


class LogitScaled(nn.Module):
    """A model whose logits are divided by a constant; its decisions are unchanged.

    Args:
        model: A classifier returning logits.
        scale: Positive, finite divisor.
    """

    def __init__(self, model: nn.Module, scale: float) -> None:
        super().__init__()
        scale = float(scale)
        if not (np.isfinite(scale) and scale > 0):
            raise UserError(f"the logit scale must be positive and finite, got {scale}")
        self.model = model
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The wrapped model's logits divided by ``scale``."""
        return self.model(x) / self.scale

    def extra_repr(self) -> str:
        return f"scale={self.scale:.6g}"


@torch.no_grad()
def logit_scale(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> float:
    """A per-checkpoint logit scale: the median over points of the logits' spread.

    The spread of a point is the standard deviation of its logits across classes; it grows
    exactly like the logits under weight scaling and, unlike the top-2 gap, it is not near
    zero for points close to the boundary. Points whose logits are all equal (dead units)
    are left out; if every point is such, the scale is 1.

    Args:
        model: Classifier (put it in eval mode first).
        x: Evaluation inputs, shape (n, ...).
        batch_size: Points per forward pass.

    Returns:
        The scale, so that ``model(x) / scale`` has a per-point spread around 1.

    Raises:
        UserError: If the model has fewer than two logits or its logits are not finite.
    """
    stds = []
    for xb in x.split(batch_size):
        logits = model(xb)
        if logits.ndim != 2 or logits.shape[1] < 2:
            raise UserError(f"the model must return (n, classes>=2) logits, "
                            f"got shape {tuple(logits.shape)}")
        stds.append(logits.double().std(dim=1, correction=0))
    spread = torch.cat(stds)
    if not torch.isfinite(spread).all():
        raise UserError("the model's logits are not finite (float32 overflow?); "
                        "cannot attack this checkpoint")
    positive = spread[spread > 0]
    return float(positive.median()) if positive.numel() else 1.0
