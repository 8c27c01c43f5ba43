"""The paper's CIFAR-10 VGG-16 without batch norm or dropout, one linear head."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from ..registry import register_model
from ._layers import check_bias, check_width, he_normal_, image_hw, layer_bias, scaled

# Channels per 3x3 SAME conv; "M" is a 2x2 max-pool.
VGG16_CFG: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
                                    512, 512, 512, "M", 512, 512, 512, "M")


class VGG(nn.Sequential):
    """VGG feature stack from a config, then flatten → linear classifier.

    A pool that would shrink the map below 1x1 is skipped, so small inputs
    (8x8 digits) still build; on 32x32 inputs this is exactly the paper's net.

    Args:
        cfg: Conv widths and "M" pools.
        in_chans: Input channels.
        img_size: Input height and width.
        num_classes: Number of logits.
        bias: ``none`` | ``first`` | ``all``.
        width: Multiplier on every conv width.
    """

    def __init__(self, cfg: Sequence[int | str] = VGG16_CFG, in_chans: int = 3,
                 img_size: int | Sequence[int] = 32, num_classes: int = 10,
                 bias: str = "none", width: float = 1.0) -> None:
        check_bias(bias)
        width = check_width(width)
        h, w = image_hw(img_size)
        layers: list[nn.Module] = []
        c, i = in_chans, 0
        for v in cfg:
            if v == "M":
                if h >= 2 and w >= 2:
                    layers.append(nn.MaxPool2d(2))
                    h, w = h // 2, w // 2
                continue
            out = scaled(int(v), width)
            layers += [nn.Conv2d(c, out, 3, padding=1, bias=layer_bias(bias, i)), nn.ReLU()]
            c, i = out, i + 1
        layers += [nn.Flatten(), nn.Linear(c * h * w, num_classes, bias=layer_bias(bias, i))]
        super().__init__(*layers)
        he_normal_(self)


@register_model()
def vgg16(num_classes: int = 10, in_chans: int = 3, img_size: int | Sequence[int] = 32,
          bias: str = "none", width: float = 1.0) -> VGG:
    """The paper's bias-free CIFAR-10 VGG-16 (13 convs + 1 linear, no BN, no dropout)."""
    return VGG(VGG16_CFG, in_chans, img_size, num_classes, bias, width)
