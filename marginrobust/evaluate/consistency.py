"""Consistency between the figures of one (split, norm, ε), checked rather than assumed.

    certified ≤ AutoAttack ≤ PGD ≤ clean accuracy, and no attack finds an adversarial
    point inside a certified radius.

A violation is a flag on the records and a warning, never hidden: it means an attack or a
certificate is wrong, or a numerical limit was hit.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

# Order of the robustness chain: each accuracy ≤ the next one.
CHAIN = ("certified", "autoattack", "pgd")


def certified_mask(radius: np.ndarray, eps: float, clean: np.ndarray) -> np.ndarray:
    """Points certified at ε: correct, with a certified radius above ε."""
    return (radius > eps) & clean


def consistency_flags(eps: float, clean: np.ndarray, robust: Mapping[str, np.ndarray],
                      certified: np.ndarray | None,
                      distances: Mapping[str, np.ndarray],
                      radius: np.ndarray | None) -> list[str]:
    """The violations among the figures of one (split, norm, ε).

    Args:
        eps: The budget.
        clean: bool [n], clean point correct.
        robust: Per attack name, bool [n] still correct under that attack at ε.
        certified: bool [n] certified at ε (None: no certificates).
        distances: Per minimal-norm attack name, its per-point distances.
        radius: Per point, the largest certified radius in this norm over the certifiers
            (None: no certificates).
    """
    flags = []
    acc = {name: float(r.mean()) for name, r in robust.items()}
    if certified is not None:
        acc["certified"] = float(certified.mean())
    chain = [(name, acc[name]) for name in CHAIN if name in acc] + [("clean", clean.mean())]
    for (lo, a), (hi, b) in zip(chain, chain[1:]):
        if a > b + 1e-12:
            flags.append(f"{lo} accuracy {a:.4f} > {hi} accuracy {b:.4f}")
    if certified is not None:
        for name, r in robust.items():
            broken = int((certified & ~r).sum())
            if broken:
                flags.append(f"{name} broke {broken} points certified at eps={eps:g}")
    if radius is not None:
        for name, dist in distances.items():
            inside = int((dist < radius * (1 - 1e-6)).sum())
            if inside:
                flags.append(f"{name} found {inside} adversarial points inside "
                             "their certified radius")
    return flags
