"""Threat models: a norm and the perturbation budgets (epsilons) evaluated in it.

Inputs live in [0, 1]; every epsilon is measured in that scale.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

import torch

from ..errors import UserError

NORMS = ("L2", "Linf")

_NORM_ALIASES = {"l2": "L2", "2": "L2", "linf": "Linf", "inf": "Linf", "l_inf": "Linf"}

# Per-dataset default budgets, all for inputs in [0, 1].
# - cifar10 / imagefolder (32x32 RGB): the RobustBench budgets, Linf 8/255 and L2 0.5.
# - mnist / fashion-mnist: the usual Linf 0.1 / 0.3 and L2 1.0 / 2.0.
# - digits (sklearn 8x8, pixel values k/16, d = 64): the median L2 distance from a digit to
#   its nearest digit of another class is ~1.9 (10th percentile ~1.5), so L2 0.5 and 1.0
#   are about a quarter and a half of the way to another class; pixels are quantised in
#   steps of 1/16 = 0.0625, so Linf 0.05 stays below one grey level and 0.1 crosses it.
_DEFAULTS: dict[str, dict[str, tuple[float, ...]]] = {
    "cifar10": {"Linf": (8 / 255,), "L2": (0.5,)},
    "imagefolder": {"Linf": (8 / 255,), "L2": (0.5,)},
    "mnist": {"Linf": (0.1, 0.3), "L2": (1.0, 2.0)},
    "fashion-mnist": {"Linf": (0.1, 0.3), "L2": (1.0, 2.0)},
    "digits": {"Linf": (0.05, 0.1), "L2": (0.5, 1.0)},
}

_DATASET_ALIASES = {"fashion_mnist": "fashion-mnist", "fashionmnist": "fashion-mnist",
                    "cifar-10": "cifar10", "cifar_10": "cifar10"}


def normalize_norm(norm: str) -> str:
    """The canonical spelling (``"L2"`` or ``"Linf"``) of a norm name.

    Args:
        norm: ``L2``/``Linf`` in any case, or ``inf``/``2``.

    Raises:
        UserError: If the norm is not one of the supported ones.
    """
    key = str(norm).strip().lower()
    if key not in _NORM_ALIASES:
        raise UserError(f"unknown norm {norm!r}; use one of {', '.join(NORMS)}")
    return _NORM_ALIASES[key]


@dataclass(frozen=True)
class ThreatModel:
    """A norm and the budgets at which robustness is measured.

    Args:
        norm: ``L2`` or ``Linf`` (``l2``, ``linf``, ``inf`` accepted in any case).
        epsilons: One or more finite, non-negative budgets, kept in the given order; Linf
            budgets below 1. A budget of 0 is accepted here (robustness at 0 is the clean
            accuracy, a check every attack must pass), though the command line refuses it.
    """

    norm: str
    epsilons: tuple[float, ...]

    def __post_init__(self) -> None:
        # frozen dataclass: normalised values go in through object.__setattr__
        object.__setattr__(self, "norm", normalize_norm(self.norm))
        if isinstance(self.epsilons, (int, float)):
            raise UserError("epsilons must be a sequence of numbers, e.g. (0.1,)")
        try:
            if isinstance(self.epsilons, str) or any(isinstance(e, bool)
                                                     for e in self.epsilons):
                raise TypeError
            # + 0.0 turns -0.0 into 0.0, which would otherwise name another figure
            eps = tuple(float(e) + 0.0 for e in self.epsilons)
        except TypeError:
            raise UserError(f"the {self.norm} epsilons must be numbers, got "
                            f"{self.epsilons!r}") from None
        except (ValueError, OverflowError):
            raise UserError(f"an {self.norm} epsilon is too large or not a number: "
                            f"{self.epsilons!r}") from None
        if not eps:
            raise UserError(f"the {self.norm} threat model needs at least one epsilon")
        for e in eps:
            if not math.isfinite(e) or e < 0:
                raise UserError(f"epsilon must be finite and non-negative, got {e}")
            if self.norm == "Linf" and e >= 1:
                # Inputs lie in [0, 1]: a Linf ball of radius 1 around any input holds the
                # whole box, every image of every class.
                raise UserError(f"a Linf epsilon of {e:g} reaches every input in [0, 1] (the "
                                "whole box), so no point can be robust; use a budget below 1")
        _no_repeats(eps, f" in the {self.norm} threat model")
        object.__setattr__(self, "epsilons", eps)

    @property
    def p(self) -> float:
        """The norm's order for ``torch.linalg.vector_norm`` (2 or inf)."""
        return 2.0 if self.norm == "L2" else math.inf

    def distances(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Per-point perturbation norms, computed in float64 so rounding cannot hide a step.

        Args:
            x_adv: Perturbed inputs, shape (n, ...).
            x: Clean inputs of the same shape.

        Returns:
            A float64 tensor of shape (n,).
        """
        delta = (x_adv.double() - x.double()).flatten(1)
        return torch.linalg.vector_norm(delta, ord=self.p, dim=1)


def _parse_eps(item: str, where: str, allow_zero: bool) -> float:
    """One budget, a number or a fraction ``a/b``; every error is one sentence."""
    how = "write e.g. 0.1 or 8/255"
    parts = item.split("/")
    if not item or len(parts) > 2 or not all(parts):
        raise UserError(f"cannot read epsilon {item!r}{where}; {how}")
    try:
        # float() first: it reads 1e400 as inf and 1e-400 as 0 at once, where Fraction
        # would build the exact 10**400 (or hang on 1e99999999).
        approx = [float(p) for p in parts]
        exact_zero = [Decimal(p) == 0 for p in parts]
    except (ValueError, ArithmeticError):
        raise UserError(f"cannot read epsilon {item!r}{where}; {how}") from None
    if any(math.isnan(v) for v in approx):
        raise UserError(f"epsilon {item!r}{where} is not a number; {how}")
    if any(math.isinf(v) for v in approx):
        raise UserError(f"epsilon {item!r}{where} is too large: a budget must be finite")
    if any(v == 0 and not z for v, z in zip(approx, exact_zero)):
        raise UserError(f"epsilon {item!r}{where} is too small to represent")
    if len(parts) == 2 and approx[1] == 0:
        raise UserError(f"epsilon {item!r}{where} divides by zero")
    try:
        exact = Fraction(parts[0]) / Fraction(parts[1]) if len(parts) == 2 else Fraction(item)
        value = float(exact)
    except (ValueError, ZeroDivisionError):
        raise UserError(f"cannot read epsilon {item!r}{where}; {how}") from None
    except OverflowError:
        raise UserError(f"epsilon {item!r}{where} is too large: a budget must be "
                        "finite") from None
    if exact < 0:
        raise UserError(f"epsilon must be non-negative, got {item!r}{where}")
    if exact > 0 and value == 0:
        raise UserError(f"epsilon {item!r}{where} is too small to represent")
    if exact == 0 and not allow_zero:
        raise UserError(f"epsilon must be positive, got {item!r}{where} (at budget 0 "
                        "robustness is the clean accuracy, which every evaluation reports)")
    return value + 0.0      # no -0.0: it would name a figure differently from 0.0


def parse_eps_list(text: str, option: str | None = None,
                   allow_zero: bool = False) -> tuple[float, ...]:
    """Parse a comma-separated list of budgets such as ``"8/255,0.1"``.

    Args:
        text: Numbers or fractions ``a/b`` separated by commas.
        option: The option the text came from (e.g. ``--eps-l2``), named in errors.
        allow_zero: Whether a budget of 0 is accepted (by default not: attacking at 0
            costs a full attack run and tells only the clean accuracy).

    Returns:
        The budgets as floats, in the given order.

    Raises:
        UserError: In one sentence, if an entry is not a number or a fraction, is NaN,
            infinite, too large or too small for a float, negative (or zero where not
            allowed), divides by zero, or repeats another (a Linf budget of 1 or more is
            refused by :class:`ThreatModel`).
    """
    where = f" in {option}" if option else ""
    # spaces inside a fraction ("8 / 255") are not Fraction syntax; drop them all
    items = ["".join(t.split()) for t in str(text).split(",")]
    if not any(items):
        raise UserError(f"the epsilon list{where} is empty")
    out = [_parse_eps(item, where, allow_zero) for item in items]
    _no_repeats(out, where)
    return tuple(out)


def _no_repeats(eps: Sequence[float], where: str = "") -> None:
    # two equal budgets would give two figures with one key
    seen = set()
    for e in eps:
        if e in seen:
            raise UserError(f"epsilon {e:g} is given twice{where}")
        seen.add(e)


def default_threats(dataset_name: str) -> list[ThreatModel]:
    """The default Linf and L2 threat models for a dataset.

    Args:
        dataset_name: ``cifar10``, ``imagefolder`` (32x32 RGB), ``mnist``,
            ``fashion-mnist`` or ``digits`` (case-insensitive).

    Raises:
        UserError: For a dataset without defaults.
    """
    key = dataset_name.strip().lower()
    key = _DATASET_ALIASES.get(key, key)
    if key not in _DEFAULTS:
        raise UserError(f"no default threat models for dataset {dataset_name!r}; known: "
                        f"{', '.join(sorted(_DEFAULTS))} (or pass the norms and epsilons)")
    return [ThreatModel(norm, eps) for norm, eps in _DEFAULTS[key].items()]
