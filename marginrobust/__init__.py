"""marginrobust: how the margin and the adversarial robustness of homogeneous networks
move together as gradient descent keeps training (Lyu & Li, ICLR 2020).

The public API::

    from marginrobust import load_dataset, create_model, homogeneity_order, margin_stats
    from marginrobust import Trainer, TrainConfig, load_checkpoint
    from marginrobust import Evaluator, ThreatModel, MarginTracker, certified_radii

Names are imported on first use (PEP 562), so ``import marginrobust`` and the command
line's ``--help`` do not pay for torch, timm, foolbox, pandas or matplotlib.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .errors import UserError

__version__ = "0.1.0"

# Public name → the module that defines it.
_EXPORTS: dict[str, str] = {
    "Dataset": ".data", "DataSpec": ".data", "load_dataset": ".data",
    "Evaluator": ".evaluate.engine", "ThreatModel": ".evaluate.threats",
    "certified_radii": ".evaluate.certify.radius",
    "evaluate_run": ".evaluate.run",
    "margin_stats": ".margins",
    "check_homogeneity": ".models", "create_model": ".models",
    "homogeneity_order": ".models", "list_models": ".models",
    "register_attack": ".registry", "register_dataset": ".registry",
    "register_model": ".registry",
    "EvalRecord": ".evaluate.store", "ResultsStore": ".evaluate.store",
    "MarginTracker": ".tracker",
    "Callback": ".train", "TrainConfig": ".train", "Trainer": ".train",
    "list_checkpoints": ".train", "load_checkpoint": ".train", "read_metrics": ".train",
    "RunSpec": ".train.run", "train_run": ".train.run",
}

__all__ = ["Callback", "DataSpec", "Dataset", "EvalRecord", "Evaluator", "MarginTracker",
           "ResultsStore", "RunSpec", "ThreatModel", "TrainConfig", "Trainer", "UserError",
           "certified_radii", "check_homogeneity", "create_model", "evaluate_run",
           "homogeneity_order", "list_checkpoints", "list_models", "load_checkpoint",
           "load_dataset",
           "margin_stats", "read_metrics", "register_attack", "register_dataset",
           "register_model", "train_run"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'marginrobust' has no attribute {name!r}")
    value = getattr(import_module(module, __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


if TYPE_CHECKING:
    from .data import Dataset, DataSpec, load_dataset
    from .evaluate.certify.radius import certified_radii
    from .evaluate.engine import Evaluator
    from .evaluate.run import evaluate_run
    from .evaluate.store import EvalRecord, ResultsStore
    from .evaluate.threats import ThreatModel
    from .margins import margin_stats
    from .models import check_homogeneity, create_model, homogeneity_order, list_models
    from .registry import register_attack, register_dataset, register_model
    from .tracker import MarginTracker
    from .train import (
        Callback,
        TrainConfig,
        Trainer,
        list_checkpoints,
        load_checkpoint,
        read_metrics,
    )
    from .train.run import RunSpec, train_run
