"""A training run on disk: data + model + trainer + the callbacks that write the run folder.

Layout of ``RUN_DIR``::

    run.json             what was asked for (model, data, training config)
    metrics.jsonl/.csv   one row per accepted epoch
    checkpoints/         epoch-NNNNNN.pt along the trajectory
    resume.pt            the latest state, rewritten every epoch

Under a launcher (``torchrun --nproc_per_node N -m marginrobust train``) every rank calls
:func:`train_run` and trains data-parallel (:class:`~.trainer.Trainer`); rank 0 alone
writes the run folder, and ``run.json`` records the job's ``world_size``. Nothing of the
resume state depends on the number of processes, so a run resumes with any number.
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from .. import distributed, runlock, stopping
from ..errors import UserError
from ..io import RUN_FILE, read_run_json, resolve_device, write_json
from .callbacks import Callback, ProgressBar
from .checkpoints import RESUME_FILE, CheckpointCallback, read_checkpoint
from .config import TrainConfig
from .metrics_log import MetricsWriter
from .trainer import Trainer

__all__ = ["RESUME_MAY_CHANGE", "RUN_FILE", "RunSpec", "comparable", "environment",
           "fingerprint", "read_run", "train_run"]

# TrainConfig fields that a resumed run may change: how long and where it trains, not
# what it trains.
RESUME_MAY_CHANGE = ("epochs", "max_minutes", "target_log10_loss", "device")


@dataclass
class RunSpec:
    """What a run trains: model, data and training settings.

    Attributes:
        model: Registered model name or ``timm/<arch>``.
        model_kwargs: Family options (``bias``, ``width``, ``widths``...).
        dataset: Dataset name (``digits``, ``fashion-mnist``, ``imagefolder:PATH``...).
        data_dir: Where datasets are cached or downloaded (None: the default).
        train_subset: Seeded class-balanced training subset size (None: all).
        test_subset: Same for the test set.
        data_seed: Seed of the subsets.
        init_seed: Seed of the model's initialisation.
        train: The :class:`TrainConfig`.
        checkpoint_decades: Checkpoint spacing in decades of the summed loss.
        checkpoint_epochs: Extra epochs to checkpoint.
        init_from: Start from this checkpoint's weights instead of a fresh model.
        scale: Multiply every parameter by this factor before training (with
            ``init_from``: jump far down the loss of a homogeneous net).
    """

    model: str = "cnn"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    dataset: str = "digits"
    data_dir: str | None = None
    train_subset: int | None = None
    test_subset: int | None = None
    data_seed: int = 0
    init_seed: int = 0
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint_decades: float = 1.0
    checkpoint_epochs: list[int] = field(default_factory=list)
    init_from: str | None = None
    scale: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunSpec:
        d = dict(d)
        d["train"] = TrainConfig(**d["train"])
        return cls(**d)


def comparable(run: dict[str, Any]) -> dict[str, Any]:
    """A stored run spec without the fields that may change when it is resumed."""
    d = dict(run)
    train = dict(d.pop("train"))
    for key in RESUME_MAY_CHANGE:
        train.pop(key, None)
    d["train"] = train
    return d


def fingerprint(run: dict[str, Any]) -> str:
    """A short hash of what a run trains (:func:`comparable` of its spec), stored in
    ``run.json`` and every checkpoint so that a resume file can be matched to its run."""
    text = json.dumps(comparable(run), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def environment(device: str | torch.device = "cpu") -> dict[str, Any]:
    """What decides whether a rerun reproduces this one bit for bit.

    The same seeds give the same numbers only with the same torch build, thread count,
    kernels (the CPU's instruction set picks them), device and number of processes (the
    gradients of a batch are summed over the ranks' shares); these are recorded in
    ``run.json`` and every checkpoint.

    Args:
        device: The device the run trains on (this rank's, under a launcher).
    """
    dev = torch.device(device)
    env = {"torch": str(torch.__version__), "python": platform.python_version(),
           "threads": torch.get_num_threads(), "machine": platform.machine(),
           "torch_build": f"cuda {torch.version.cuda}" if torch.version.cuda else "cpu",
           "torch_git": getattr(torch.version, "git_version", None),
           "cpu": cpu_model(), "cpu_capability": _cpu_capability(), "device": str(dev),
           "world_size": _world_size()}
    if dev.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(dev)
        env["cudnn"] = torch.backends.cudnn.version()
    return env


def _world_size() -> int:
    """The processes training together: the group's size (1 without a group)."""
    return distributed.world_size() if distributed.is_initialized() else 1


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else what ``platform`` knows)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_capability() -> str | None:
    # The SIMD level (AVX2, AVX512...) decides which CPU kernels torch runs.
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):
        return None


def train_run(out: str | Path, spec: RunSpec | None = None, resume: bool = False,
              overrides: dict[str, Any] | None = None, progress: bool = False,
              callbacks: Sequence[Callback] = ()) -> Trainer:
    """Train (or resume) a run whose files live in ``out``.

    Args:
        out: The run directory.
        spec: What to train; ignored when resuming (the stored spec is used).
        resume: Continue from ``out/resume.pt`` exactly where the run stopped.
        overrides: TrainConfig fields to change on resume (``epochs``, ``max_minutes``,
            ``target_log10_loss``).
        progress: Show a progress bar.
        callbacks: More callbacks (after the metrics and checkpoint writers).

    Returns:
        The trainer after it stopped (``trainer.stop_reason``, ``trainer.record``); under
        a launcher on every rank, once rank 0 has written every file of the run.
    """
    out = Path(out)
    with runlock.hold(out):
        return _train_locked(out, spec, resume, overrides, progress, callbacks)


def _resume_spec(out: Path, overrides: dict[str, Any] | None) -> tuple[RunSpec, dict[str, Any]]:
    """The spec and state to resume ``out`` with, once the resume file is shown to belong
    to the run its ``run.json`` describes."""
    if not (out / RESUME_FILE).exists():
        raise UserError(f"nothing to resume: {out / RESUME_FILE} does not exist")
    payload = read_checkpoint(out / RESUME_FILE)
    stored = read_run_json(out)
    resumed = payload.get("run")
    if stored is None or not isinstance(resumed, dict):
        raise UserError(f"{out / RESUME_FILE} cannot be matched to a run: "
                        f"{'run.json is missing' if stored is None else 'it names no run'}; "
                        "start a new run with another --out")
    if comparable(resumed) != comparable(stored["run"]):
        differ = sorted(k for k in set(resumed) | set(stored["run"])
                        if k != "train" and resumed.get(k) != stored["run"].get(k))
        differ += sorted(f"train.{k}" for k in set(resumed["train"]) | set(stored["run"]["train"])
                         if k not in RESUME_MAY_CHANGE
                         and resumed["train"].get(k) != stored["run"]["train"].get(k))
        raise UserError(f"{out / RESUME_FILE} belongs to another run than {out / RUN_FILE} "
                        f"(they differ in {', '.join(differ)}); refusing to resume it")
    spec = RunSpec.from_dict(resumed)
    unknown = sorted(set(overrides or {}) - set(RESUME_MAY_CHANGE))
    if unknown:
        raise UserError(f"a resumed run may change only {', '.join(RESUME_MAY_CHANGE)}, not "
                        f"{', '.join(unknown)}")
    for key, value in (overrides or {}).items():
        setattr(spec.train, key, value)
    return spec, payload["state"]


def _train_locked(out: Path, spec: RunSpec | None, resume: bool,
                  overrides: dict[str, Any] | None, progress: bool,
                  callbacks: Sequence[Callback]) -> Trainer:
    """:func:`train_run` while holding the run folder's lock."""
    from ..models import create_model

    state = None
    if resume:
        spec, state = _resume_spec(out, overrides)
    else:
        if (out / RESUME_FILE).exists():
            raise UserError(f"{out} already holds a run; pass --resume to continue it "
                            "or choose another --out")
        spec = spec or RunSpec()
    spec.train.validate()
    _check_spec(spec)
    if spec.train.deterministic:
        # cuBLAS reads its workspace setting once, when it starts: set it before any CUDA work.
        from ..precision import set_cublas_workspace_config

        set_cublas_workspace_config()
    device = distributed.rank_device(resolve_device(spec.train.device))
    if distributed.init(device):
        # Every rank has read the run folder and checked it before rank 0 writes to it.
        distributed.barrier()
    data = _load_data(spec)
    c, h, w = data.spec.shape
    kwargs = {"num_classes": data.spec.num_classes, "in_chans": c, "img_size": [h, w],
              **spec.model_kwargs}
    torch.manual_seed(spec.init_seed)
    model = create_model(spec.model, **kwargs)
    if spec.init_from and state is None:
        src = read_checkpoint(spec.init_from)
        try:
            model.load_state_dict(src["state"]["model"])
        except RuntimeError:
            raise UserError(f"{spec.init_from} does not fit model {spec.model} on "
                            f"{spec.dataset}") from None
    if spec.scale is not None and state is None:
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(spec.scale)

    model_info = {"name": spec.model, "kwargs": kwargs}
    env = environment(device)
    # On every rank, so that their resume states agree; they write on rank 0 only.
    cbs: list[Callback] = [MetricsWriter(out),
                           CheckpointCallback(out, model_info, data.spec.to_dict(),
                                              spec.checkpoint_decades, spec.checkpoint_epochs,
                                              extra={"run": spec.to_dict(),
                                                     "environment": env})]
    cbs += [_WhereNote(), *callbacks]
    trainer = Trainer(model, data.x_train, data.y_train, data.x_test, data.y_test, spec.train,
                      cbs)
    if state is not None:
        trainer.load_state_dict(state)
    main = distributed.is_main_process()
    if progress and main:
        trainer.callbacks.append(ProgressBar(spec.train.epochs, trainer.epoch))
    info = {"run": spec.to_dict(), "fingerprint": fingerprint(spec.to_dict()),
            "data": data.spec.to_dict(), "environment": env, "world_size": env["world_size"]}
    if main:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / RUN_FILE, info)
    reason = trainer.fit()
    # Recorded so a bench rerun knows training is complete and goes straight to evaluation.
    info["stopped"] = {"reason": reason, "epoch": trainer.epoch, "wall_s": trainer.wall_s}
    if main:
        write_json(out / RUN_FILE, info)
    # No rank returns before the run folder is complete (a bench evaluates it next).
    distributed.barrier()
    return trainer


class _WhereNote(Callback):
    """Keeps :mod:`marginrobust.stopping` told which epoch the run has saved, for the line
    printed when a signal stops it."""

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        stopping.note(f"at epoch {trainer.epoch} (saved)")


def _load_data(spec: RunSpec) -> Any:
    """The run's dataset; under a launcher rank 0 loads it first, so that a dataset is
    downloaded and cached once, and the other ranks read the cache."""
    from ..data import load_dataset

    def load() -> Any:
        return load_dataset(spec.dataset, spec.data_dir, spec.train_subset, spec.test_subset,
                            spec.data_seed)

    if distributed.world_size() == 1 or not distributed.is_initialized():
        return load()
    data = load() if distributed.is_main_process() else None
    distributed.barrier()
    return data if data is not None else load()


def _check_spec(spec: RunSpec) -> None:
    """The run-level numbers: one sentence each, named as the CLI names them."""
    if spec.scale is not None and not (math.isfinite(spec.scale) and spec.scale > 0):
        raise UserError(f"--scale must be a positive number, not {spec.scale}")
    if not (math.isfinite(spec.checkpoint_decades) and spec.checkpoint_decades >= 0):
        raise UserError("--checkpoint-decades must be 0 (off) or a positive number, "
                        f"not {spec.checkpoint_decades}")


def read_run(out: str | Path) -> dict[str, Any] | None:
    """The ``run.json`` of a run directory (None if absent); ``stopped`` is set once it ended.

    Raises:
        UserError: the file exists but is damaged.
    """
    return read_run_json(out)
