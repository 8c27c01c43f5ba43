"""The one point selector: seeded, class-balanced evaluation points, keyed by split name.

The :class:`~marginrobust.evaluate.engine.Evaluator`, the run evaluator
(:func:`~marginrobust.evaluate.run.evaluate_run`) and
:class:`~marginrobust.tracker.MarginTracker` all choose their points here, so the same
(labels, n, seed, split) gives the same points wherever they are chosen, whichever other
splits are evaluated alongside.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..errors import UserError
from ..io import SPLITS

if TYPE_CHECKING:
    import torch

    from ..data import Dataset

# The stream of each split is fixed by its name. The numbers are the positions these
# splits had in the default "test,train" evaluation before streams were keyed by name,
# so the points of runs evaluated that way are unchanged.
_SPLIT_STREAM = {"test": 0, "train": 1}


def select_indices(labels: np.ndarray | Sequence[int], n: int, seed: int, split: str,
                   ) -> list[int]:
    """Sorted indices of ``min(n, len(labels))`` class-balanced points of one split.

    Args:
        labels: The split's integer labels.
        n: Points wanted (a smaller split gives all its points).
        seed: Seed of the choice.
        split: ``test`` or ``train``; each split has its own random stream, so adding or
            dropping the other split changes nothing.

    Raises:
        UserError: For an unknown split or ``n < 1``.
    """
    from ..data import balanced_subset

    if split not in _SPLIT_STREAM:
        raise UserError(f"split must be test or train, not {split!r}")
    if n < 1:
        raise UserError(f"the number of points must be positive, not {n}")
    labels = np.asarray(labels)
    k = min(int(n), len(labels))
    # Classes absent from the labels are never given points, so the count of classes
    # only needs to cover the largest label.
    classes = int(labels.max()) + 1 if len(labels) else 1
    rng = np.random.default_rng([int(seed), 7, _SPLIT_STREAM[split]])
    return sorted(int(v) for v in balanced_subset(labels, k, classes, rng))


@dataclass
class PointSet:
    """The fixed evaluation points of one split.

    Attributes:
        split: ``test`` or ``train``.
        x, y: The inputs and labels.
        indices: Their positions in the split.
    """

    split: str
    x: torch.Tensor
    y: torch.Tensor
    indices: list[int] = field(default_factory=list)


def split_tensors(data: Dataset, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The (inputs, labels) of one split of a dataset."""
    if split not in SPLITS:
        raise UserError(f"split must be test or train, not {split!r}")
    return (data.x_train, data.y_train) if split == "train" else (data.x_test, data.y_test)


def select_points(data: Dataset, n: int, seed: int, splits: Sequence[str] = SPLITS,
                  saved: Mapping[str, Sequence[int]] | None = None) -> dict[str, PointSet]:
    """Seeded, class-balanced evaluation points per split (``saved`` indices win).

    The same (data, n, seed) always gives the same points of a split, so every checkpoint
    of a run is evaluated on the same inputs, and ``--split train`` picks the training
    points of ``--split test,train``.

    An ``n`` above the size of an evaluated split means "as many as possible": every
    split gets as many points as the smallest of them has (with a warning saying so), so
    that the splits' records share one n, which the results are stored and tabled under.
    With different counts one evaluation would fall into one leaderboard row per split.

    Args:
        data: The dataset.
        n: Points per split.
        seed: Seed of the choice.
        splits: Split names.
        saved: Indices stored earlier for these (n, seed), used as they are: a run keeps
            its points even if the selection rule changes.
    """
    sizes = {split: len(split_tensors(data, split)[1]) for split in splits}
    smallest = min(sizes, key=lambda s: sizes[s], default=None)
    if smallest is not None and n > sizes[smallest]:
        k = sizes[smallest]
        warnings.warn(f"n={n} (--n) is more than the {k} {smallest} points of "
                      f"{data.spec.name}; evaluating {k} points per split, stored as n={k}",
                      stacklevel=2)
        n = k
    out = {}
    for split in splits:
        x, y = split_tensors(data, split)
        if saved and split in saved:
            idx = [int(i) for i in saved[split]]
        else:
            idx = select_indices(y.numpy(), n, seed, split)
        out[split] = PointSet(split, x[idx], y[idx], idx)
    return out
