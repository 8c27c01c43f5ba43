"""Model families, the model factory and the homogeneity check.

``create_model("cnn", ...)`` builds a registered family; ``create_model("timm/<name>")``
builds any timm architecture. The families are also registered with timm as
``marginrobust_<name>`` so ``timm.create_model("marginrobust_cnn")`` works.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from ..errors import UserError
from ..registry import MODELS
from . import _timm, cnn, mlp, vgg  # noqa: F401  (registers the families)
from ._layers import BIAS_MODES, layer_norms, weight_layers
from .homogeneity import HomogeneityReport, check_homogeneity, homogeneity_order

TIMM_PREFIX = "timm/"
# Set by create_model from the data, so not listed among a family's options.
DATA_ARGS = ("num_classes", "in_chans", "img_size")

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
    check_options(name, factory, kwargs)
    try:
        return factory(num_classes=num_classes, in_chans=in_chans, img_size=img_size, **kwargs)
    except UserError:
        raise  # already one sentence
    except (TypeError, ValueError, RuntimeError) as exc:
        raise UserError(f"cannot build model {name!r} with {kwargs or 'defaults'}: {exc}") from exc


def check_options(name: str, factory: Callable[..., Any], options: dict[str, Any]) -> None:
    """Refuse options ``factory`` does not take, in one sentence naming the ones it does.

    A factory taking ``**kwargs`` accepts anything and is not checked.

    Raises:
        UserError: an unknown option, such as the typo ``widht=0.25``.
    """
    accepted = _named_parameters(factory)
    if accepted is None:
        return
    unknown = [k for k in options if k not in accepted]
    if not unknown:
        return
    shown = [k for k in accepted if k not in DATA_ARGS]
    close = difflib.get_close_matches(unknown[0], shown, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    what = "option" if len(unknown) == 1 else "options"
    raise UserError(f"model {name!r} has no {what} {', '.join(map(repr, unknown))}{hint}; "
                    f"its options are {', '.join(shown) or 'none'}")


def _named_parameters(factory: Callable[..., Any]) -> list[str] | None:
    """The keyword names ``factory`` takes, or None if it takes any (``**kwargs``)."""
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # no signature to read: let the call decide
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def _create_timm(arch: str, num_classes: int, in_chans: int, img_size: int | Sequence[int],
                 kwargs: dict[str, Any]) -> nn.Module:
    import timm

    if not timm.is_model(arch):
        raise UserError(f"timm has no architecture {arch!r}")
    try:
        return timm.create_model(arch, pretrained=False, num_classes=num_classes,
                                 in_chans=in_chans, img_size=img_size, **kwargs)
    except TypeError:
        pass  # most convolutional timm models take no img_size
    try:
        return timm.create_model(arch, pretrained=False, num_classes=num_classes,
                                 in_chans=in_chans, **kwargs)
    except (TypeError, ValueError) as exc:
        raise UserError(f"cannot build timm model {arch!r} with "
                        f"{kwargs or 'defaults'}: {exc}") from None


_timm.register(create_model)
