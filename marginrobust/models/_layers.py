"""Shared building blocks: bias modes, widths, He-normal initialisation."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..errors import UserError

BIAS_MODES = ("none", "first", "all")
WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def check_bias(bias: str) -> str:
    """Validate a bias mode: ``none`` and ``first`` keep homogeneity, ``all`` breaks it."""
    if bias not in BIAS_MODES:
        raise UserError(f"bias must be one of {', '.join(BIAS_MODES)}, not {bias!r}")
    return bias


def layer_bias(bias: str, index: int) -> bool:
    """Whether weight layer number ``index`` (0-based) carries a bias under ``bias`` mode."""
    return bias == "all" or (bias == "first" and index == 0)


def check_width(width: Any) -> float:
    """Validate a width multiplier: a positive finite number."""
    if not (_is_real(width) and math.isfinite(width) and width > 0):
        raise UserError(f"width must be a positive number, not {width!r}")
    return float(width)


def check_widths(widths: Any) -> tuple[int, ...]:
    """Validate hidden widths: a list of positive integers (``widths=[128,128]``)."""
    ok = isinstance(widths, (list, tuple)) and all(
        isinstance(w, numbers.Integral) and not isinstance(w, bool) and w > 0 for w in widths)
    if not ok:
        raise UserError(f"widths must be a list of positive integers such as [128,128], "
                        f"not {widths!r}")
    return tuple(int(w) for w in widths)


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def scaled(channels: int, width: float) -> int:
    """Channel count after the width multiplier (at least one channel)."""
    return max(1, int(round(channels * check_width(width))))


def image_hw(img_size: int | Sequence[int]) -> tuple[int, int]:
    """(H, W) from an int or a pair."""
    if isinstance(img_size, int):
        return img_size, img_size
    h, w = tuple(img_size)[-2:]
    return int(h), int(w)


def he_normal_(model: nn.Module) -> nn.Module:
    """He-normal weights (fan-in, ReLU gain) and zero biases, as in the paper."""
    for m in model.modules():
        if isinstance(m, WEIGHT_LAYERS):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return model


def weight_layers(model: nn.Module) -> list[nn.Module]:
    """The conv and linear layers of ``model`` in forward (registration) order."""
    return [m for m in model.modules() if isinstance(m, WEIGHT_LAYERS)]


@torch.no_grad()
def layer_norms(model: nn.Module) -> list[float]:
    """Frobenius norm of each weight layer, its bias included (float64)."""
    norms = []
    for m in weight_layers(model):
        parts = [m.weight] + ([m.bias] if getattr(m, "bias", None) is not None else [])
        # vector_norm accumulates in float64 without a float64 copy of the weights.
        norms.append(torch.linalg.vector_norm(torch.stack(
            [torch.linalg.vector_norm(t.detach(), dtype=torch.float64) for t in parts])))
    return [float(v) for v in torch.stack(norms)] if norms else []
