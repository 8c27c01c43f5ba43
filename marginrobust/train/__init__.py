"""Training: the loop, the schedules, checkpoints and metric logs."""

from .callbacks import Callback, ProgressBar, state_keys
from .checkpoints import (
                          CheckpointCallback,
                          atomic_write,
                          list_checkpoints,
                          load_checkpoint,
                          read_checkpoint,
                          save_checkpoint,
)
from .config import TrainConfig
from .metrics_log import MetricsWriter, read_metrics
from .schedules import ConstantSchedule, LossBasedSchedule, Schedule, make_schedule
from .trainer import NonHomogeneousWarning, Trainer, resolve_device

# atomic_write and resolve_device live in marginrobust.io; they stay here for older callers.
__all__ = ["Callback", "CheckpointCallback", "ConstantSchedule", "LossBasedSchedule",
           "MetricsWriter", "NonHomogeneousWarning", "ProgressBar", "Schedule", "TrainConfig",
           "Trainer", "atomic_write", "list_checkpoints", "load_checkpoint", "make_schedule",
           "read_checkpoint", "read_metrics", "resolve_device", "save_checkpoint",
           "state_keys"]
