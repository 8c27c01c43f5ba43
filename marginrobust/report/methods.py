"""Which evaluation methods are minimal-norm attacks, asked of the attack registry.

Minimal-norm attacks report per point the smallest adversarial distance they found; their
medians make the ``median_dist_*`` columns and their per-point distances the robust-vs-ε
curves. The answer comes from the attack classes themselves, by the evaluator's own rule
(:func:`marginrobust.evaluate.attacks.base.minimal_norm_kind`), so an attack added by a
plugin counts as soon as it is registered.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import Any

from ..registry import ATTACKS

# Methods the Evaluator writes itself (certificates and the per-point worst case): never
# attacks, whatever their records carry (certificates report radii as distances). Every
# certifier's records are ``certify-<name>`` (lipschitz, ibp, crown, alpha-crown, exact...).
EVALUATOR_METHODS = frozenset({"worst", "certified"})
CERTIFIER_PREFIX = "certify-"


def is_evaluator_method(method: str) -> bool:
    """Whether ``method`` is the Evaluator's own (a certifier, ``certified`` or ``worst``)."""
    return method in EVALUATOR_METHODS or method.startswith(CERTIFIER_PREFIX)


@functools.cache
def _register_builtins() -> None:
    # Importing the evaluation package registers the built-in attacks (torch, foolbox: slow,
    # so only when a question is asked).
    from .. import evaluate  # noqa: F401


def registered_minimal_norm(method: str) -> bool | None:
    """Whether the registered attack ``method`` is minimal-norm; None if it is not registered.

    Args:
        method: A record's method name.
    """
    if is_evaluator_method(method):
        return False
    _register_builtins()
    if method not in ATTACKS:
        return None
    from ..evaluate.attacks.base import minimal_norm_kind

    return minimal_norm_kind(ATTACKS.get(method))


def minimal_norm_methods(records: Iterable[Mapping[str, Any]]) -> frozenset[str]:
    """The methods among ``records`` that are minimal-norm attacks.

    A method the registry does not know (a plugin not installed where the board is rebuilt)
    counts as minimal-norm when its records carry median distances: among the methods that
    are not the Evaluator's own, only minimal-norm attacks report them.

    Args:
        records: Evaluation records as dicts (``method`` and ``median_distance`` are read).
    """
    with_distance: dict[str, bool] = {}
    for rec in records:
        method = str(rec.get("method"))
        has = rec.get("median_distance") is not None
        with_distance[method] = with_distance.get(method, False) or has
    found = set()
    for method, has_distance in with_distance.items():
        answer = registered_minimal_norm(method)
        if answer or (answer is None and has_distance and not is_evaluator_method(method)):
            found.add(method)
    return frozenset(found)
