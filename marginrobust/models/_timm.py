"""The registered families under timm's names: ``timm.create_model("marginrobust_cnn")``.

timm's ``register_model`` appends every name it registers to the ``__all__`` of the module
the factory says it comes from. The factories therefore live here, as attributes of this
private module, so that list names things that exist (``from marginrobust.models import *``
stays unaffected) and ``marginrobust.models.__all__`` stays ours.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from ..errors import UserError

FAMILIES = ("mlp", "cnn", "vgg16")
PREFIX = "marginrobust_"

__all__: list[str] = []


def _make(family: str, create: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """A timm entry point building ``family`` through ``create`` (marginrobust's factory)."""

    def factory(pretrained: bool = False, pretrained_cfg: Any = None,
                pretrained_cfg_overlay: Any = None, cache_dir: Any = None,
                **kwargs: Any) -> nn.Module:
        # timm passes its pretrained-weight arguments to every entry point; ours have no
        # weights to fetch, so only ``pretrained=True`` means anything (and is refused).
        if pretrained:
            raise UserError("marginrobust models have no pretrained weights")
        return create(family, **kwargs)

    factory.__name__ = factory.__qualname__ = f"{PREFIX}{family}"
    factory.__doc__ = f"marginrobust's {family!r} family (homogeneous without biases)."
    factory.__module__ = __name__
    return factory


def register(create: Callable[..., nn.Module]) -> None:
    """Register every family with timm (once; timm warns when a name is registered twice)."""
    from timm.models import is_model, register_model

    for family in FAMILIES:
        fn = _make(family, create)
        globals()[fn.__name__] = fn
        if not is_model(fn.__name__):
            register_model(fn)
