"""Warm starts of minimal-norm attacks from an earlier checkpoint's adversarial points.

:class:`~.base.MinimalNormAttack` hands the previous checkpoint's points to an
attack's ``run_warm`` once they are adversarial for the current model: as given, or
stretched away from the clean point when the boundary has moved outward.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ...errors import UserError
from ...margins import per_example_margins

# Extrapolations tried on an earlier adversarial point that the model now classifies
# correctly: margins grow during training, so the boundary moves outward along roughly
# the same direction.
_START_STRETCH = (1.0, 1.25, 1.5, 2.0, 3.0, 5.0)
# Earlier minimal-norm points lie on the boundary, where a re-evaluation in another batch
# can round them back to the true class (and foolbox asserts they are adversarial). A start
# must beat the true logit by this much (the attacked logits are rescaled to O(1)); foolbox
# bisects it back onto the boundary anyway.
_START_MARGIN = 1e-3


@torch.no_grad()
def _wrong_by(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
              batch_size: int) -> torch.Tensor:
    """Best other logit minus the true logit, per point (> 0: misclassified)."""
    return -torch.cat([per_example_margins(model(xb), yb)
                       for xb, yb in zip(x.split(batch_size), y.split(batch_size))])


def check_starts(starting_points: Any, x: torch.Tensor) -> torch.Tensor | None:
    """Starting points as a float32 tensor on x's device (None stays None)."""
    if starting_points is None:
        return None
    sp = torch.as_tensor(starting_points, dtype=torch.float32, device=x.device)
    if sp.shape != x.shape:
        raise UserError(f"starting points must have the inputs' shape {tuple(x.shape)}, "
                        f"got {tuple(sp.shape)}")
    return sp


def usable_starts(model: nn.Module, x: torch.Tensor, y: torch.Tensor, starts: torch.Tensor,
                   batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Adversarial starting points for ``model``: the given ones, stretched away from x
    where they no longer cross the boundary with a clear margin; (points, usable mask)."""
    given = torch.isfinite(starts).flatten(1).all(1) & (starts != x).flatten(1).any(1)
    out = torch.where(given.view(-1, *[1] * (x.ndim - 1)), starts, x)
    usable = torch.zeros_like(given)
    for c in _START_STRETCH:
        todo = given & ~usable
        if not todo.any():
            break
        cand = (x[todo] + c * (out[todo] - x[todo])).clamp(0, 1)
        ok = _wrong_by(model, cand, y[todo], batch_size) > _START_MARGIN
        rows = torch.nonzero(todo).flatten()[ok]
        out[rows] = cand[ok]
        usable[rows] = True
    return out, usable

