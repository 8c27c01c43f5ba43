"""Callback hooks: how the trainer talks to checkpoints, logs and progress bars.

The trainer does no file I/O; everything that writes or prints is a callback.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .trainer import Trainer


class Callback:
    """Base class with no-op hooks (like Lightning's ``Callback``)."""

    def on_train_start(self, trainer: Trainer) -> None:
        """After the initial model is measured (epoch 0 record available) or resumed."""

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        """After an accepted epoch, with its metrics record."""

    def on_rollback(self, trainer: Trainer, epoch: int, reason: str) -> None:
        """After a rejected epoch attempt was undone."""

    def on_train_end(self, trainer: Trainer, reason: str) -> None:
        """Once, when training stops (``epochs``, ``time``, ``target``, ``alpha``, ``diverged``)."""

    def state_dict(self) -> dict[str, Any]:
        """State to carry in a resume checkpoint."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""


class ProgressBar(Callback):
    """A tqdm bar over epochs showing log10 loss and the normalized margin."""

    def __init__(self, total: int, initial: int = 0) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, initial=initial, unit="epoch", dynamic_ncols=True)

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self.bar.update(record["epoch"] - self.bar.n)
        self.bar.set_postfix(log10_loss=f"{record['log10_loss']:.1f}",
                             margin=f"{record['normalized_margin']:.3e}",
                             acc=f"{record['train_acc']:.3f}", refresh=False)

    def on_rollback(self, trainer: Trainer, epoch: int, reason: str) -> None:
        self.bar.set_description(f"rollback ({reason})", refresh=False)

    def on_train_end(self, trainer: Trainer, reason: str) -> None:
        self.bar.set_description(f"stopped: {reason}")
        self.bar.close()
