"""Loading datasets: the registry's factories → seeded class-balanced subsets as tensors.

``load_dataset("digits")`` returns a :class:`~.spec.Dataset`: float32 NCHW images in
[0, 1], int64 labels and a :class:`~.spec.DataSpec` saying where the data came from. A name
may carry an argument after a colon (``imagefolder:PATH``, ``npz:PATH``).

Every dataset is a factory registered with :func:`~marginrobust.registry.register_dataset`.
A factory takes ``(arg, data_dir)`` — the text after the colon (or ``None``) and the data
directory — and returns an :class:`~.spec.ArraySplits`; the first line of its docstring is
the description :func:`list_datasets` shows. Plugins register theirs the same way. The
built-in factories live in :mod:`marginrobust.data.sources`, imported on the first look-up
in the registry.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from ..registry import DATASETS
from .spec import ArraySplits, Dataset, DataSpec

__all__ = ["balanced_subset", "default_data_dir",
           "list_datasets", "load_dataset"]

DATA_ENV = "MARGINROBUST_DATA"
# Bump when the layout of the decoded-image cache changes, so old cache files are ignored.


def default_data_dir() -> Path:
    """``$MARGINROBUST_DATA`` if set, else ``~/.cache/marginrobust``."""
    env = os.environ.get(DATA_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "marginrobust"


def list_datasets() -> list[tuple[str, str]]:
    """Registered dataset names with the first line of their factory's docstring."""
    out = []
    for name in DATASETS.names():
        doc = (DATASETS.get(name).__doc__ or "").strip()
        out.append((name, doc.splitlines()[0] if doc else ""))
    return out


def load_dataset(name: str, data_dir: str | Path | None = None, train_subset: int | None = None,
                 test_subset: int | None = None, seed: int = 0) -> Dataset:
    """Load a registered dataset, optionally as seeded class-balanced subsets.

    Args:
        name: A registered name, with an argument after a colon where the dataset takes one
            (``imagefolder:PATH``, ``npz:PATH``).
        data_dir: Where downloads, extractions and caches live (default:
            :func:`default_data_dir`).
        train_subset: Take this many training images, classes as balanced as possible.
        test_subset: Take this many test images, classes as balanced as possible.
        seed: Seed of the subset choice; the same name, sizes and seed give the same images.
    """
    key, _, arg = name.partition(":")
    factory = DATASETS.get(key)
    if seed < 0:
        raise UserError(f"the data seed must be non-negative, got {seed}")
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    splits = factory(arg or None, root)
    _check_splits(splits, name)
    k = len(splits.classes)
    # Separate streams so the test choice does not depend on the training subset size.
    train_idx = _subset(splits.y_train, k, train_subset, seed, 0, "train_subset", name)
    test_idx = _subset(splits.y_test, k, test_subset, seed, 1, "test_subset", name)
    x_train, y_train = _to_tensors(splits.x_train, splits.y_train, train_idx)
    x_test, y_test = _to_tensors(splits.x_test, splits.y_test, test_idx)
    c, h, w = splits.x_train.shape[1:]
    spec = DataSpec(name=name, source=splits.source, shape=(int(c), int(h), int(w)),
                    num_classes=k, classes=list(splits.classes), n_train=len(y_train),
                    n_test=len(y_test), train_subset=train_subset, test_subset=test_subset,
                    seed=seed)
    return Dataset(x_train, y_train, x_test, y_test, spec)


def balanced_subset(labels: np.ndarray, n: int, num_classes: int,
                    rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of ``n`` points with classes as balanced as the counts allow.

    Each class gets ``n // K`` points; the remainder goes one each to the lowest-numbered
    classes. A class with too few points gives all it has and the others share its
    shortfall the same way. Within a class the points are drawn by ``rng``.

    Args:
        labels: Integer labels (N,).
        n: How many points to take, 1..N.
        num_classes: K; labels lie in ``range(K)``.
        rng: The generator that picks the points within each class.
    """
    labels = np.asarray(labels)
    counts = np.bincount(labels, minlength=num_classes)
    if not 0 < n <= counts.sum():
        raise UserError(f"a subset needs between 1 and {counts.sum()} points, got {n}")
    quota = np.zeros(num_classes, dtype=np.int64)
    remaining = n
    while remaining:
        open_classes = np.flatnonzero(quota < counts)
        share = remaining // len(open_classes)
        if share == 0:
            quota[open_classes[:remaining]] += 1
            break
        grant = np.minimum(share, counts[open_classes] - quota[open_classes])
        quota[open_classes] += grant
        remaining -= int(grant.sum())
    picks = [rng.choice(np.flatnonzero(labels == c), size=int(q), replace=False)
             for c, q in enumerate(quota) if q]
    return np.sort(np.concatenate(picks))


def _subset(labels: np.ndarray, num_classes: int, n: int | None, seed: int, stream: int,
            what: str, name: str) -> np.ndarray | None:
    if n is None:
        return None
    if n <= 0:
        raise UserError(f"{what} must be positive, got {n}")
    if n > len(labels):
        raise UserError(f"{what}={n} is larger than the {len(labels)} images {name} has")
    return balanced_subset(labels, n, num_classes, np.random.default_rng([seed, stream]))


def _to_tensors(x: np.ndarray, y: np.ndarray,
                idx: np.ndarray | None) -> tuple[torch.Tensor, torch.Tensor]:
    if idx is not None:
        x, y = x[idx], y[idx]
    xf = x.astype(np.float32)
    if x.dtype == np.uint8:
        xf /= 255.0  # in place: a full CIFAR-sized split is 600 MB as float32
    return torch.from_numpy(np.ascontiguousarray(xf)), torch.from_numpy(y.astype(np.int64))


def _check_splits(s: ArraySplits, name: str) -> None:
    """Turn a factory's malformed arrays into one clear sentence instead of a later crash."""
    for split in ("train", "test"):
        x, y = getattr(s, f"x_{split}"), getattr(s, f"y_{split}")
        if x.ndim != 4:
            raise UserError(f"{name}: x_{split} must be (N, C, H, W), got shape {x.shape}")
        if len(x) == 0:
            # Empty splits only fail much later (a min() over nothing, a bogus homogeneity
            # check), after the run folder exists.
            raise UserError(f"{name}: the {split} split holds no images; training and testing "
                            "need at least one each")
        if y.ndim != 1 or len(y) != len(x):
            raise UserError(f"{name}: y_{split} must hold one label per image, "
                            f"got shape {y.shape} for {len(x)} images")
        if not np.issubdtype(y.dtype, np.integer):
            raise UserError(f"{name}: y_{split} must hold integer labels, got {y.dtype}")
        if y.min() < 0:
            raise UserError(f"{name}: y_{split} holds the negative label {y.min()}; labels "
                            "must be class numbers 0, 1, 2, ...")
        bad = y[y >= len(s.classes)]
        if len(bad):
            raise UserError(f"{name}: y_{split} holds the label {bad[0]}, but labels must lie "
                            f"in 0..{len(s.classes) - 1} ({len(s.classes)} classes)")
        if x.dtype != np.uint8:
            if not np.issubdtype(x.dtype, np.floating):
                raise UserError(f"{name}: x_{split} must be uint8 or float, got {x.dtype}")
            if x.size and not (np.isfinite(x).all() and x.min() >= 0.0 and x.max() <= 1.0):
                raise UserError(f"{name}: float x_{split} values must lie in [0, 1]")
    if s.x_train.shape[1:] != s.x_test.shape[1:]:
        raise UserError(f"{name}: train images are {s.x_train.shape[1:]} but test images are "
                        f"{s.x_test.shape[1:]}")


def refuse_arg(arg: str | None, key: str) -> None:
    """A dataset that takes no ``:ARG`` refuses one in one sentence."""
    if arg is not None:
        raise UserError(f"dataset {key!r} takes no argument after ':', got {arg!r}")


def require_path(arg: str | None, key: str) -> Path:
    """The existing path after ``key:``, or one sentence saying what is missing."""
    if not arg:
        raise UserError(f"dataset {key!r} needs a path: {key}:PATH")
    path = Path(arg).expanduser()
    if not path.exists():
        raise UserError(f"{key}: {path} does not exist")
    return path.resolve()


# --------------------------------------------------------------------------- digits
