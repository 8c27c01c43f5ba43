"""What a dataset is: its tensors, the arrays a factory returns, and its provenance spec."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import UserError

__all__ = ["ArraySplits", "DataSpec", "Dataset"]


@dataclass
class DataSpec:
    """Where a dataset came from and what was taken from it.

    Args:
        name: The name it was loaded under, e.g. ``digits`` or ``imagefolder:/path``.
        source: Where the data came from (a loader or a path).
        shape: Image shape (C, H, W).
        num_classes: Number of classes.
        classes: Class names, indexed by label.
        n_train: Training images after subsetting.
        n_test: Test images after subsetting.
        train_subset: Requested training subset size (``None``: all).
        test_subset: Requested test subset size (``None``: all).
        seed: Seed of the subset choice.
        bounds: Range of the pixel values.
    """

    name: str
    source: str
    shape: tuple[int, int, int]
    num_classes: int
    classes: list[str]
    n_train: int
    n_test: int
    train_subset: int | None = None
    test_subset: int | None = None
    seed: int = 0
    bounds: tuple[float, float] = (0.0, 1.0)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (tuples become lists)."""
        d = asdict(self)
        d["shape"] = list(self.shape)
        d["bounds"] = list(self.bounds)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataSpec:
        """Rebuild a spec written by :meth:`to_dict`.

        Args:
            d: The dict; unknown keys are ignored so older tools can read newer specs.
        """
        required = ("name", "source", "shape", "num_classes", "classes", "n_train", "n_test")
        missing = [k for k in required if k not in d]
        if missing:
            raise UserError(f"dataset spec lacks {', '.join(missing)}")
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        known["shape"] = tuple(int(s) for s in d["shape"])
        known["classes"] = [str(c) for c in d["classes"]]
        if "bounds" in d:
            known["bounds"] = tuple(float(b) for b in d["bounds"])
        return cls(**known)


@dataclass
class Dataset:
    """Train and test tensors with their spec.

    Args:
        x_train: Training images, float32 (N, C, H, W) in [0, 1].
        y_train: Training labels, int64 (N,).
        x_test: Test images, float32 (M, C, H, W) in [0, 1].
        y_test: Test labels, int64 (M,).
        spec: Provenance and shape.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    spec: DataSpec


@dataclass
class ArraySplits:
    """What a dataset factory returns: full train and test splits as numpy arrays.

    Args:
        x_train: Images (N, C, H, W), uint8 (0..255) or float in [0, 1].
        y_train: Integer labels (N,) in ``range(len(classes))``.
        x_test: Images (M, C, H, W), same dtype rules and (C, H, W) as ``x_train``.
        y_test: Integer labels (M,).
        classes: Class names, indexed by label.
        source: Where the arrays came from (a loader name or a path).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: list[str] = field(default_factory=list)
    source: str = ""
