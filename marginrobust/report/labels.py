"""Titles of a (dataset, model) group that say what the data are.

A dataset read from a folder or an archive (``imagefolder:cifar10-jpeg.tar.xz``) says
little by its name alone: its title carries the file name, the numbers of training and
test images, the model's width, and ``(JPEG)`` where the name says the images were
re-encoded as JPEG (their numbers are then not those of the original set).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from .loader import RunData

FOLDER_KINDS = ("imagefolder",)


def _sizes(runs: Sequence[RunData]) -> str:
    found = []
    for run in runs:
        data = run.info.get("data") or {}
        spec = run.info.get("run") or {}
        n_train = data.get("n_train", spec.get("train_subset"))
        n_test = data.get("n_test", spec.get("test_subset"))
        if n_train is not None or n_test is not None:
            text = f"{n_train if n_train is not None else '?'} train / " \
                   f"{n_test if n_test is not None else '?'} test"
            found.append(text)
    return ", ".join(dict.fromkeys(found))


def _widths(rows: pd.DataFrame) -> str:
    widths = [w for w in dict.fromkeys(rows["width"].dropna().astype("float64"))]
    return ", ".join(f"{w:g}" for w in widths)


def dataset_text(dataset: str, runs: Sequence[RunData]) -> str:
    """A dataset as titles name it.

    Args:
        dataset: The leaderboard's ``dataset`` cell (``imagefolder:name.tar.xz``).
        runs: The runs of that dataset (their ``run.json`` gives the subset sizes).
    """
    kind, _, name = dataset.partition(":")
    text = dataset
    if "jpeg" in dataset.lower():
        text += " (JPEG)"
    sizes = _sizes(runs) if kind in FOLDER_KINDS or any(
        (r.info.get("run") or {}).get("train_subset") is not None for r in runs) else ""
    return f"{text}, {sizes}" if sizes else text


def group_titles(frame: pd.DataFrame, runs: Sequence[RunData]) -> dict[tuple[str, str], str]:
    """Per (dataset, model), its title: dataset (with sizes for folders), model, widths.

    Args:
        frame: A leaderboard frame.
        runs: The loaded runs behind it.
    """
    by_label = {run.label: run for run in runs}
    out = {}
    for (dataset, model), rows in frame.groupby(["dataset", "model"], sort=False):
        group_runs = [by_label[r] for r in dict.fromkeys(rows["run"]) if r in by_label]
        widths = _widths(rows)
        model_text = f"{model} (width {widths})" if widths else str(model)
        out[(str(dataset), str(model))] = f"{dataset_text(str(dataset), group_runs)} · {model_text}"
    return out
