"""Callback hooks: how the trainer talks to checkpoints, logs and progress bars.

The trainer does no file I/O; everything that writes or prints is a callback.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..errors import UserError

if TYPE_CHECKING:
    from .trainer import Trainer


class Callback:
    """Base class with no-op hooks (like Lightning's ``Callback``).

    A callback's resume state is stored under its :attr:`state_key`: the class name
    unless set. Several callbacks of one class are told apart by their order (the
    second is ``Name#2``), so give them explicit keys when that order may change.
    """

    _state_key: str | None = None

    @property
    def state_key(self) -> str:
        """The key of this callback's state in a resume checkpoint."""
        return self._state_key or type(self).__name__

    @state_key.setter
    def state_key(self, key: str) -> None:
        self._state_key = key

    @property
    def has_explicit_key(self) -> bool:
        """Whether :attr:`state_key` was set (else it is the class name)."""
        return self._state_key is not None

    def on_train_start(self, trainer: Trainer) -> None:
        """Before anything is measured: on a fresh run ``trainer.record`` is still None
        (the initial model's epoch-0 record follows through :meth:`on_epoch_end`); on a
        resumed run it holds the last accepted epoch's record."""

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        """After an accepted epoch (and once for the initial model), with its record."""

    def on_rollback(self, trainer: Trainer, epoch: int, reason: str) -> None:
        """After a rejected epoch attempt was undone."""

    def on_train_end(self, trainer: Trainer, reason: str) -> None:
        """Once, when training stops (``epochs``, ``time``, ``target``, ``alpha``, ``diverged``)."""

    def state_dict(self) -> dict[str, Any]:
        """State to carry in a resume checkpoint."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""


def state_keys(callbacks: Sequence[Callback]) -> list[str]:
    """The resume key of each callback, unique within ``callbacks``.

    A callback without an explicit key takes its class name, numbered from the second
    one of its class on (``Name#2``, ``Name#3``), so existing single callbacks keep the
    keys older checkpoints hold.

    Raises:
        UserError: two callbacks were given the same explicit key.
    """
    keys: list[str] = []
    for cb in callbacks:
        key = cb.state_key
        if key in keys:
            if cb.has_explicit_key:
                raise UserError(f"two callbacks share the state key {key!r}; give each "
                                "its own state_key")
            n = 2
            while f"{key}#{n}" in keys:
                n += 1
            key = f"{key}#{n}"
        keys.append(key)
    return keys


class ProgressBar(Callback):
    """A tqdm bar over epochs showing log10 loss and the normalized margin.

    For a model that is not homogeneous the margin shows as ``nominal_margin``: it
    divides by a nominal order and means little.
    """

    def __init__(self, total: int, initial: int = 0) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, initial=initial, unit="epoch", dynamic_ncols=True)

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self.bar.update(record["epoch"] - self.bar.n)
        label = "margin" if record.get("homogeneous", True) else "nominal_margin"
        self.bar.set_postfix({"log10_loss": f"{record['log10_loss']:.1f}",
                              label: f"{record['normalized_margin']:.3e}",
                              "acc": f"{record['train_acc']:.3f}"}, refresh=False)

    def on_rollback(self, trainer: Trainer, epoch: int, reason: str) -> None:
        self.bar.set_description(f"rollback ({reason})", refresh=False)

    def on_train_end(self, trainer: Trainer, reason: str) -> None:
        self.bar.set_description(f"stopped: {reason}")
        self.bar.close()
