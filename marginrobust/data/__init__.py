"""Data: what a dataset is (:mod:`.spec`), how one is loaded and subset
(:mod:`.loading`), and the built-in sources (:mod:`.sources`: digits, MNIST, Fashion-MNIST,
CIFAR-10, ``npz:PATH``, ``imagefolder:PATH``), registered on the first look-up."""

from __future__ import annotations

from .loading import (
    DATA_ENV,
    balanced_subset,
    default_data_dir,
    list_datasets,
    load_dataset,
    refuse_arg,
    require_path,
)
from .spec import ArraySplits, Dataset, DataSpec

__all__ = ["DATA_ENV", "ArraySplits", "DataSpec", "Dataset", "balanced_subset",
           "default_data_dir", "list_datasets", "load_dataset", "refuse_arg", "require_path"]
