"""The paper's MNIST CNN, adapted to any input channels and size.

conv32 5x5 → maxpool 2 → conv64 3x3 → maxpool 2 → fc1024 → fc(classes), ReLU, SAME padding.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from ..registry import register_model
from ._layers import check_bias, check_width, he_normal_, image_hw, layer_bias, scaled


class PaperCNN(nn.Sequential):
    """Lyu & Li's MNIST CNN (four weight layers, homogeneous of order 4 without biases).

    Args:
        in_chans: Input channels.
        img_size: Input height and width.
        num_classes: Number of logits.
        bias: ``none`` | ``first`` | ``all``.
        width: Multiplier on the channel and hidden widths (32, 64, 1024).
    """

    def __init__(self, in_chans: int = 1, img_size: int | Sequence[int] = 28,
                 num_classes: int = 10, bias: str = "none", width: float = 1.0) -> None:
        check_bias(bias)
        width = check_width(width)
        h, w = image_hw(img_size)
        c1, c2, hidden = scaled(32, width), scaled(64, width), scaled(1024, width)
        # SAME padding keeps the size; each 2x2 max-pool floors it.
        h, w = (h // 2) // 2, (w // 2) // 2
        super().__init__(
            nn.Conv2d(in_chans, c1, 5, padding=2, bias=layer_bias(bias, 0)), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1, bias=layer_bias(bias, 1)), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(c2 * h * w, hidden, bias=layer_bias(bias, 2)), nn.ReLU(),
            nn.Linear(hidden, num_classes, bias=layer_bias(bias, 3)),
        )
        he_normal_(self)


@register_model()
def cnn(num_classes: int = 10, in_chans: int = 1, img_size: int | Sequence[int] = 28,
        bias: str = "none", width: float = 1.0) -> PaperCNN:
    """The paper's MNIST CNN (conv32-pool-conv64-pool-fc1024-fc)."""
    return PaperCNN(in_chans, img_size, num_classes, bias, width)
