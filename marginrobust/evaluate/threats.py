"""Threat models: a norm and the perturbation budgets (epsilons) evaluated in it.

Inputs live in [0, 1]; every epsilon is measured in that scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
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
        epsilons: One or more finite, non-negative budgets, kept in the given order.
    """

    norm: str
    epsilons: tuple[float, ...]

    def __post_init__(self) -> None:
        # frozen dataclass: normalised values go in through object.__setattr__
        object.__setattr__(self, "norm", normalize_norm(self.norm))
        if isinstance(self.epsilons, (int, float)):
            raise UserError("epsilons must be a sequence of numbers, e.g. (0.1,)")
        eps = tuple(float(e) for e in self.epsilons)
        if not eps:
            raise UserError(f"the {self.norm} threat model needs at least one epsilon")
        for e in eps:
            if not math.isfinite(e) or e < 0:
                raise UserError(f"epsilon must be finite and non-negative, got {e}")
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


def parse_eps_list(text: str) -> tuple[float, ...]:
    """Parse a comma-separated list of budgets such as ``"8/255,0.1"``.

    Args:
        text: Numbers or fractions ``a/b`` separated by commas.

    Returns:
        The budgets as floats, in the given order.

    Raises:
        UserError: If an entry is not a number, is negative or is not finite.
    """
    # spaces inside a fraction ("8 / 255") are not Fraction syntax; drop them all
    items = ["".join(t.split()) for t in str(text).split(",")]
    if not any(items):
        raise UserError("the epsilon list is empty")
    out = []
    for item in items:
        try:
            value = float(Fraction(item))
        except (ValueError, ZeroDivisionError):
            raise UserError(f"cannot read epsilon {item!r}; write e.g. 0.1 or 8/255") from None
        if value < 0:
            raise UserError(f"epsilon must be non-negative, got {item!r}")
        out.append(value)
    return tuple(out)


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
