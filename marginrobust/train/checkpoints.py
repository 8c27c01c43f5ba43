"""Checkpoints along the trajectory: policy, atomic save, safe load.

Every checkpoint is self-describing and resumable: the model's name and kwargs, the
data spec, the run config, epoch/step/wall time, its metrics, the scheduler state and
the data-order RNG state. Files hold only tensors and plain Python values, so they load
with ``torch.load(weights_only=True)``; anything else is refused.
"""

from __future__ import annotations

import io
import math
import re
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .. import distributed
from ..errors import UserError
from ..io import atomic_write
from .callbacks import Callback

if TYPE_CHECKING:
    from .trainer import Trainer

FORMAT = "marginrobust.checkpoint"
VERSION = 1
CHECKPOINT_DIR = "checkpoints"
RESUME_FILE = "resume.pt"


def save_checkpoint(payload: dict[str, Any], path: str | Path) -> None:
    """Atomically ``torch.save`` a checkpoint payload.

    The payload is serialised in memory first and written as plain bytes, so that a full
    disk surfaces as the ``OSError`` it is (torch's own file writer reports it as a
    ``RuntimeError`` about positions).
    """
    buf = io.BytesIO()
    torch.save(payload, buf)
    data = buf.getbuffer()
    atomic_write(path, lambda fh: fh.write(data))


def read_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    """The raw payload of a checkpoint, loaded with ``weights_only=True``.

    Raises:
        UserError: missing file, a file that carries code or objects, a truncated or
            foreign file, or a torch file of another format; each said in one sentence.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no checkpoint file at {path}")
    try:
        # torch warns about pickle protocols of foreign files; our sentence says it all.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # noqa: BLE001  (garbage bytes make the unpickler raise anything)
        raise UserError(_refusal(path, exc)) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UserError(f"{path} is not a marginrobust checkpoint")
    return payload


_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def _refusal(path: Path, exc: Exception) -> str:
    """Why ``torch.load(weights_only=True)`` refused ``path``, in our words, not torch's."""
    found = _GLOBAL.search(str(exc))
    if found:
        return (f"{path} carries Python objects or code ({found.group(1)}), which "
                "weights_only loading refuses; only checkpoints written by marginrobust load")
    return f"{path} is not a marginrobust checkpoint: it is truncated or not a torch file"


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu",
                    model: nn.Module | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a checkpoint's model and return it with its metadata.

    Args:
        path: A checkpoint file.
        device: Where to put the model.
        model: An architecture to load the weights into, for models built outside the
            registry; by default the model is rebuilt from the name and kwargs stored
            in the checkpoint.

    Returns:
        (model in eval mode, metadata dict without the weights).
    """
    from ..models import create_model

    payload = read_checkpoint(path, device)
    if model is None:
        info = payload["model_info"]
        if not info.get("name"):
            raise UserError(f"{path} holds a model built outside the registry; pass model=")
        model = create_model(info["name"], **info["kwargs"])
    model.load_state_dict(payload["state"]["model"])
    meta = {k: v for k, v in payload.items() if k != "state"}
    meta.update({k: v for k, v in payload["state"].items() if k not in ("model", "generator")})
    return model.to(device).eval(), meta


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """The trajectory checkpoints of a run, by epoch."""
    return sorted((Path(run_dir) / CHECKPOINT_DIR).glob("epoch-*.pt"))


class CheckpointCallback(Callback):
    """Saves the trajectory checkpoints and a rolling resume file.

    Checkpoints: the initial model, every time log10 𝓛 reaches a new multiple of
    ``decades`` (paper: 5 for long runs, 1 for short ones), the chosen ``epochs``, and
    the last epoch. ``resume.pt`` is rewritten after every accepted epoch.

    Under a process group it decides on every rank (so that the ranks' resume states
    agree) and writes on rank 0 only.

    Args:
        run_dir: The run directory.
        model_info: ``{"name": ..., "kwargs": {...}}`` to rebuild the model.
        data_spec: The dataset's spec as a dict.
        decades: Spacing k in decades of the summed loss (0 disables).
        epochs: Extra epochs to checkpoint.
        extra: More metadata stored in every checkpoint (seeds, command line, ...).
    """

    def __init__(self, run_dir: str | Path, model_info: dict[str, Any], data_spec: dict[str, Any],
                 decades: float = 1.0, epochs: Iterable[int] = (),
                 extra: dict[str, Any] | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.model_info = model_info
        self.data_spec = data_spec
        self.decades = decades
        self.epochs = set(epochs)
        self.extra = extra or {}
        self.next_threshold = math.inf
        self.saved: list[int] = []
        # The epoch of the last record: an accepted attempt of loss-based-fast may span
        # several epochs, and an asked-for epoch inside it is saved at its end.
        self.last_epoch: int | None = None

    def _payload(self, trainer: Trainer, kind: str) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, "kind": kind,
                "model_info": self.model_info, "data": self.data_spec,
                "homogeneity_order": trainer.order, "epoch": trainer.epoch,
                "step": trainer.step, "wall_s": trainer.wall_s, "metrics": trainer.record,
                **self.extra, "state": trainer.state_dict()}

    def _next(self, log10_loss: float) -> float:
        # The next multiple of k strictly below the current log10 loss.
        return self.decades * math.ceil(log10_loss / self.decades) - self.decades

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        epoch, log10_loss = record["epoch"], record["log10_loss"]
        prev = epoch - 1 if self.last_epoch is None else self.last_epoch
        self.last_epoch = epoch
        kind = None
        if epoch == 0:
            kind = "initial"
        elif self.decades > 0 and log10_loss <= self.next_threshold:
            kind = "decades"
        elif any(prev < e <= epoch for e in self.epochs):
            kind = "epoch"
        if self.decades > 0 and (kind is not None or self.next_threshold == math.inf):
            self.next_threshold = self._next(log10_loss)
        if kind is not None:
            self._save(trainer, kind)
        if distributed.is_main_process():
            save_checkpoint(self._payload(trainer, "resume"), self.run_dir / RESUME_FILE)

    def on_train_end(self, trainer: Trainer, reason: str) -> None:
        if trainer.epoch not in self.saved:
            self._save(trainer, "last")

    def _save(self, trainer: Trainer, kind: str) -> None:
        self.saved.append(trainer.epoch)
        if distributed.is_main_process():
            path = self.run_dir / CHECKPOINT_DIR / f"epoch-{trainer.epoch:06d}.pt"
            save_checkpoint(self._payload(trainer, kind), path)

    def state_dict(self) -> dict[str, Any]:
        return {"next_threshold": self.next_threshold, "saved": list(self.saved),
                "last_epoch": self.last_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.next_threshold = state.get("next_threshold", math.inf)
        self.saved = list(state.get("saved", []))
        self.last_epoch = state.get("last_epoch")
