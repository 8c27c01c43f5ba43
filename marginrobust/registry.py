"""One small registry for models, datasets and attacks, with entry-point plugins.

Factories register under a name with a decorator (like timm's ``register_model``);
other packages add theirs through the entry-point groups ``marginrobust.models``,
``marginrobust.datasets`` and ``marginrobust.attacks``. An entry point may name a
factory (registered under the entry point's name) or a module whose import registers
its own factories.

A registry may also name built-in modules that register its own factories; they are
imported on first lookup, like plugins, so that importing a light module (the results
store, say) never pulls in the heavy libraries the attacks need.
"""

from __future__ import annotations

import fnmatch
import warnings
from collections.abc import Callable, Iterator, Sequence
from importlib import import_module
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

from .errors import UserError

F = TypeVar("F", bound=Callable[..., Any])


class Registry(Generic[F]):
    """Name → factory table for one kind of component.

    Args:
        kind: What is registered ("model", "dataset", "attack"); used in messages.
        group: The entry-point group scanned for plugins on first lookup.
        builtins: Modules of this package whose import registers the built-in factories,
            imported on first lookup.
    """

    def __init__(self, kind: str, group: str, builtins: Sequence[str] = ()) -> None:
        self.kind = kind
        self.group = group
        self.builtins = tuple(builtins)
        self._items: dict[str, F] = {}
        self._plugins_loaded = False

    def register(self, name: str | None = None) -> Callable[[F], F]:
        """Decorator storing a factory under ``name`` (default: its function name)."""

        def deco(fn: F) -> F:
            key = name or fn.__name__
            if key in self._items and self._items[key] is not fn:
                warnings.warn(f"{self.kind} {key!r} is registered twice; the last one wins",
                              stacklevel=2)
            self._items[key] = fn
            return fn

        return deco

    def load_plugins(self) -> None:
        """Import every entry point of this registry's group once."""
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for module in self.builtins:
            import_module(module)
        for ep in entry_points(group=self.group):
            try:
                obj = ep.load()
            except Exception as exc:  # a broken plugin must not break the tool
                warnings.warn(f"could not load {self.kind} plugin {ep.name!r}: {exc}",
                              stacklevel=2)
                continue
            if callable(obj) and ep.name not in self._items:
                self._items[ep.name] = obj

    def names(self, pattern: str = "*") -> list[str]:
        """Sorted registered names matching an fnmatch ``pattern``."""
        self.load_plugins()
        return sorted(n for n in self._items if fnmatch.fnmatch(n, pattern))

    def get(self, name: str) -> F:
        """The factory registered as ``name``; a :class:`UserError` if there is none."""
        self.load_plugins()
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(self.names())
            raise UserError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def __contains__(self, name: object) -> bool:
        self.load_plugins()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


MODELS: Registry[Callable[..., Any]] = Registry("model", "marginrobust.models")
DATASETS: Registry[Callable[..., Any]] = Registry(
    "dataset", "marginrobust.datasets", builtins=("marginrobust.data.sources",))
ATTACKS: Registry[Callable[..., Any]] = Registry(
    "attack", "marginrobust.attacks",
    builtins=("marginrobust.evaluate.attacks", "marginrobust.evaluate.attacks.autoattack"))

register_model = MODELS.register
register_dataset = DATASETS.register
register_attack = ATTACKS.register
