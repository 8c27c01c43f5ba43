"""Training: the loop, the schedules, checkpoints and metric logs."""

from .callbacks import Callback, ProgressBar
from .checkpoints import (
                          CheckpointCallback,
                          atomic_write,
                          list_checkpoints,
                          load_checkpoint,
                          read_checkpoint,
                          save_checkpoint,
)
from .metrics_log import MetricsWriter, read_metrics
from .schedules import ConstantSchedule, LossBasedSchedule, make_schedule
from .trainer import TrainConfig, Trainer, resolve_device

__all__ = ["Callback", "CheckpointCallback", "ConstantSchedule", "LossBasedSchedule",
           "MetricsWriter", "ProgressBar", "TrainConfig", "Trainer", "atomic_write",
           "list_checkpoints", "load_checkpoint", "make_schedule", "read_checkpoint",
           "read_metrics", "resolve_device", "save_checkpoint"]
