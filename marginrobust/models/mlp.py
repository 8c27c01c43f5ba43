"""Fully connected ReLU network; bias-free (homogeneous) unless asked otherwise."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from ..registry import register_model
from ._layers import check_bias, check_width, check_widths, he_normal_, image_hw, layer_bias, scaled

DEFAULT_WIDTHS = (512, 512)


class MLP(nn.Sequential):
    """Flatten → [Linear → ReLU] × len(widths) → Linear.

    Args:
        in_features: Flattened input size.
        num_classes: Number of logits.
        widths: Hidden layer widths (before the width multiplier).
        bias: ``none`` | ``first`` | ``all``.
        width: Multiplier applied to every hidden width.
    """

    def __init__(self, in_features: int, num_classes: int, widths: Sequence[int] = DEFAULT_WIDTHS,
                 bias: str = "none", width: float = 1.0) -> None:
        check_bias(bias)
        width = check_width(width)
        layers: list[nn.Module] = [nn.Flatten()]
        fan_in = in_features
        for i, w in enumerate(widths):
            out = scaled(w, width)
            layers += [nn.Linear(fan_in, out, bias=layer_bias(bias, i)), nn.ReLU()]
            fan_in = out
        layers.append(nn.Linear(fan_in, num_classes, bias=layer_bias(bias, len(widths))))
        super().__init__(*layers)
        he_normal_(self)


@register_model()
def mlp(num_classes: int = 10, in_chans: int = 1, img_size: int | Sequence[int] = 28,
        widths: Sequence[int] = DEFAULT_WIDTHS, bias: str = "none",
        width: float = 1.0) -> MLP:
    """ReLU MLP, hidden widths ``widths`` (default 512, 512)."""
    h, w = image_hw(img_size)
    return MLP(in_chans * h * w, num_classes, check_widths(widths), bias, width)

