"""What decides a figure: the options of an attack, as the ``config`` of its records.

Two evaluations whose records have equal :class:`~.store.RecordKey` measured the same
thing; the options below go into the key so that a changed option (an AutoAttack version,
PGD's steps, a warm start) gives new figures beside the old ones instead of the old ones.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .store import canonical_json

if TYPE_CHECKING:
    from .attacks import Attack

# Attributes that trade memory or time for nothing in the figure's definition. The batch
# size is one: changing it on a larger machine must not throw away finished work.
_NOT_DECIDING = frozenset({"batch_size"})


def is_minimal_norm(attack: Attack) -> bool:
    """Whether ``attack`` returns per-point minimal distances (answering every ε at once),
    by :func:`.attacks.base.minimal_norm_kind` of its class."""
    from .attacks.base import minimal_norm_kind

    return minimal_norm_kind(type(attack))


def attack_options(attack: Attack, norm: str, warm_start: bool) -> dict[str, Any]:
    """The options that decide ``attack``'s figures under ``norm``.

    An attack may say itself with a ``figure_options()`` method; otherwise they are its
    public instance attributes (e.g. AutoAttack's ``version`` and ``attacks_to_run``, the
    foolbox ``options`` of PGD and FMN) but the batch size. Under the norms it
    warm-starts, whether it was warm-started is one of them.
    """
    own = getattr(attack, "figure_options", None)
    if callable(own):
        options = dict(own())
    else:
        options = {k: v for k, v in vars(attack).items()
                   if not k.startswith("_") and k not in _NOT_DECIDING}
    if norm in getattr(attack, "warm_start_norms", ()):
        options["warm_start"] = bool(warm_start)
    return options


def attack_config(attack: Attack, norm: str, warm_start: bool) -> str:
    """:func:`attack_options` as canonical JSON (the ``config`` of the attack's records)."""
    return canonical_json(attack_options(attack, norm, warm_start))


def worst_config(attacks: list[Attack], norm: str, warm_start: bool) -> str:
    """The ``config`` of a ``worst`` record: the attacks it takes the worst over, each
    with its options."""
    return canonical_json({"attacks": {a.name: attack_options(a, norm, warm_start)
                                       for a in attacks}})
