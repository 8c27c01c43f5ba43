"""marginrobust: how the margin and the adversarial robustness of homogeneous networks
move together as gradient descent keeps training (Lyu & Li, ICLR 2020).

The public API::

    from marginrobust import load_dataset, create_model, homogeneity_order, margin_stats
    from marginrobust import Trainer, TrainConfig, load_checkpoint
    from marginrobust import Evaluator, ThreatModel, MarginTracker
"""

from .data import Dataset, DataSpec, load_dataset
from .errors import UserError
from .evaluate.evaluator import Evaluator
from .evaluate.threats import ThreatModel
from .margins import margin_stats
from .models import check_homogeneity, create_model, homogeneity_order, list_models
from .registry import register_attack, register_dataset, register_model
from .results import EvalRecord, ResultsStore
from .tracker import MarginTracker
from .train import Callback, TrainConfig, Trainer, list_checkpoints, load_checkpoint, read_metrics
from .train.run import RunSpec, train_run

__version__ = "0.1.0"

__all__ = ["Callback", "DataSpec", "Dataset", "EvalRecord", "Evaluator", "MarginTracker",
           "ResultsStore", "RunSpec", "ThreatModel", "TrainConfig", "Trainer", "UserError",
           "check_homogeneity", "create_model", "homogeneity_order", "list_checkpoints",
           "list_models", "load_checkpoint", "load_dataset", "margin_stats", "read_metrics",
           "register_attack", "register_dataset", "register_model", "train_run"]
