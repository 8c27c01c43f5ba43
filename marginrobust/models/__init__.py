"""Model families, the model factory and the homogeneity check.

``create_model("cnn", ...)`` builds a registered family; ``create_model("timm/<name>")``
builds any timm architecture. The families are also registered with timm as
``marginrobust_<name>`` so ``timm.create_model("marginrobust_cnn")`` works.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from ..errors import UserError
from ..registry import MODELS
from . import cnn, mlp, vgg  # noqa: F401  (registers the families)
from ._layers import BIAS_MODES, layer_norms, weight_layers
from .homogeneity import HomogeneityReport, check_homogeneity, homogeneity_order

TIMM_PREFIX = "timm/"

__all__ = ["BIAS_MODES", "HomogeneityReport", "check_homogeneity", "create_model",
           "homogeneity_order", "layer_norms", "list_models", "weight_layers"]


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching ``pattern`` (``timm/<name>`` is always accepted too)."""
    return MODELS.names(pattern)


def create_model(name: str, num_classes: int = 10, in_chans: int = 1,
                 img_size: int | Sequence[int] = 28, **kwargs: Any) -> nn.Module:
    """Build a classifier returning logits for inputs of shape (in_chans, *img_size).

    Args:
        name: A registered family (``mlp``, ``cnn``, ``vgg16``, plugins) or ``timm/<arch>``.
        num_classes: Number of logits.
        in_chans: Input channels.
        img_size: Input height and width (int or pair).
        **kwargs: Family options, e.g. ``bias="first"``, ``width=0.25``, ``widths=(128,)``.
    """
    if name.startswith(TIMM_PREFIX):
        return _create_timm(name[len(TIMM_PREFIX):], num_classes, in_chans, img_size, kwargs)
    factory = MODELS.get(name)
    try:
        return factory(num_classes=num_classes, in_chans=in_chans, img_size=img_size, **kwargs)
    except (TypeError, RuntimeError) as exc:
        raise UserError(f"cannot build model {name!r} with {kwargs or 'defaults'}: {exc}") from exc


def _create_timm(arch: str, num_classes: int, in_chans: int, img_size: int | Sequence[int],
                 kwargs: dict[str, Any]) -> nn.Module:
    import timm

    if not timm.is_model(arch):
        raise UserError(f"timm has no architecture {arch!r}")
    try:
        return timm.create_model(arch, pretrained=False, num_classes=num_classes,
                                 in_chans=in_chans, img_size=img_size, **kwargs)
    except TypeError:
        # Most convolutional timm models take no img_size.
        return timm.create_model(arch, pretrained=False, num_classes=num_classes,
                                 in_chans=in_chans, **kwargs)


def _register_with_timm() -> None:
    """Expose the families to ``timm.create_model`` as ``marginrobust_<name>``."""
    from timm.models import register_model as timm_register

    def make(family: str) -> Any:
        def factory(pretrained: bool = False, **kwargs: Any) -> nn.Module:
            if pretrained:
                raise UserError("marginrobust models have no pretrained weights")
            return create_model(family, **kwargs)

        factory.__name__ = f"marginrobust_{family}"
        factory.__doc__ = f"marginrobust's {family!r} family (homogeneous without biases)."
        factory.__module__ = __name__
        return factory

    for family in ("mlp", "cnn", "vgg16"):
        timm_register(make(family))


_register_with_timm()
