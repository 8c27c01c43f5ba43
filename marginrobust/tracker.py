"""MarginTracker: the margin metrics, and robustness at chosen epochs, for any training loop."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from .evaluate.engine import Evaluator
from .evaluate.points import select_indices
from .evaluate.store import EvalRecord, records_frame
from .margins import margin_stats
from .models import homogeneity_order
from .train.callbacks import Callback


class MarginTracker(Callback):
    """Tracks normalized/smoothed margins every epoch and evaluates robustness at chosen ones.

    Use it from a plain PyTorch loop (``tracker.update(model, epoch)``) or as a
    :class:`~marginrobust.Callback` of :class:`~marginrobust.Trainer`.

    Args:
        x_train, y_train: The training set (margins are about training points).
        x_test, y_test: Optional test set, for test accuracy and test-point robustness.
        evaluator: Runs attacks and certificates at ``eval_epochs`` (None: margins only).
        eval_epochs: Epochs at which to evaluate robustness.
        n: Evaluation points per split (seeded, class-balanced, the same at every epoch).
        seed: Seed of the point selection: the points of
            :func:`~marginrobust.evaluate.points.select_indices`, the same as an
            :class:`Evaluator` with this seed picks from these splits.
    """

    def __init__(self, x_train: torch.Tensor, y_train: torch.Tensor,
                 x_test: torch.Tensor | None = None, y_test: torch.Tensor | None = None,
                 evaluator: Evaluator | None = None, eval_epochs: Iterable[int] = (),
                 n: int = 200, seed: int = 0) -> None:
        self.x_train, self.y_train = x_train, y_train
        self.x_test, self.y_test = x_test, y_test
        self.evaluator = evaluator
        self.eval_epochs = set(eval_epochs)
        self.history: list[dict[str, Any]] = []
        self.records: list[EvalRecord] = []
        self.order: int | None | str = "auto"
        splits = {"train": (x_train, y_train)}
        if x_test is not None and y_test is not None:
            splits["test"] = (x_test, y_test)
        self.points: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.indices: dict[str, list[int]] = {}
        for split, (x, y) in splits.items():
            idx = select_indices(y.cpu().numpy(), n, seed, split)
            self.indices[split] = idx
            self.points[split] = (x[idx], y[idx])

    def update(self, model: nn.Module, epoch: int) -> dict[str, Any]:
        """Measure ``model`` after ``epoch``; returns the margin metrics of this epoch."""
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        x, y = self.x_train.to(device), self.y_train.to(device)
        if self.order == "auto":
            self.order = homogeneity_order(model, x[:64])
        row = {"epoch": epoch, **margin_stats(model, x, y, self.order)}
        if self.x_test is not None and self.y_test is not None:
            test = margin_stats(model, self.x_test.to(device), self.y_test.to(device), self.order)
            row["test_acc"] = test["accuracy"]
        self.history.append(row)
        if self.evaluator is not None and epoch in self.eval_epochs:
            context = {"epoch": epoch, "train_acc": row["accuracy"],
                       "test_acc": row.get("test_acc"), "log10_loss": row["log10_loss"],
                       "normalized_margin": row["normalized_margin"],
                       "product_margin": row["product_margin"],
                       "smoothed_margin": row["smoothed_margin"]}
            for split, (px, py) in self.points.items():
                result = self.evaluator.evaluate(model, px, py, split, f"epoch-{epoch}",
                                                 context)
                self.records.extend(result.records)
        model.train(was_training)
        return row

    def on_epoch_end(self, trainer: Any, record: dict[str, Any]) -> None:
        self.update(trainer.model, record["epoch"])

    def frame(self) -> Any:
        """Margin metrics per epoch as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.history)

    def eval_frame(self) -> Any:
        """Robustness records as a pandas DataFrame."""
        return records_frame(self.records)
