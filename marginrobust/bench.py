"""The main job in one call: train → evaluate every checkpoint → update the leaderboard.

Each stage resumes: a rerun of the same bench finishes a killed training from its resume
file, skips every finished (checkpoint, split, method, norm, ε) of the evaluation, and
rebuilds the leaderboard from what is on disk.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from .errors import UserError
from .results import ADVERSARIALS_DIR
from .train.run import RunSpec, read_run, train_run
from .train.trainer import TrainConfig


@dataclass(frozen=True)
class Preset:
    """Sizes of a bench that suit a dataset and a device.

    Attributes:
        model, width, bias: The model.
        epochs, batch_size, schedule: Training (paper: loss-based, batch 100).
        train_subset, test_subset: Seeded class-balanced subsets (None: all).
        checkpoint_decades: Checkpoint spacing in decades of the summed loss.
        n: Evaluation points per split.
        attacks: Attacks run at every checkpoint.
        aa_attacks: A custom AutoAttack set, or ``standard`` for the full version.
    """

    model: str = "cnn"
    width: float = 1.0
    bias: str = "none"
    epochs: int = 100
    batch_size: int = 100
    schedule: str = "loss-based"
    train_subset: int | None = None
    test_subset: int | None = None
    checkpoint_decades: float = 2.0
    n: int = 100
    attacks: str = "autoattack,pgd,fmn"
    aa_attacks: str = "apgd-ce,apgd-t"


_CPU_SMALL = Preset(width=0.5, epochs=40, train_subset=2000, test_subset=500)
# CPU presets fit a 2-core machine in minutes; GPU presets follow the paper more closely
# (full data and width, AutoAttack standard) and take hours.
PRESETS: dict[tuple[str, str], Preset] = {
    ("digits", "cpu"): Preset(width=0.5, epochs=120),
    ("fashion-mnist", "cpu"): _CPU_SMALL,
    ("mnist", "cpu"): _CPU_SMALL,
    ("cifar10", "cpu"): _CPU_SMALL,
    ("imagefolder", "cpu"): _CPU_SMALL,
    ("digits", "cuda"): Preset(epochs=2000, n=450, aa_attacks="standard", checkpoint_decades=5),
    ("fashion-mnist", "cuda"): Preset(epochs=1000, n=1000, aa_attacks="standard",
                                      checkpoint_decades=5),
    ("mnist", "cuda"): Preset(epochs=1000, n=1000, aa_attacks="standard", checkpoint_decades=5),
    ("cifar10", "cuda"): Preset(model="vgg16", bias="first", epochs=500, n=1000,
                                aa_attacks="standard", checkpoint_decades=5),
    ("imagefolder", "cuda"): Preset(model="vgg16", bias="first", epochs=500, n=1000,
                                    aa_attacks="standard", checkpoint_decades=5),
}


def preset_for(dataset: str, device: str) -> Preset:
    """The preset of a dataset on a device kind (``cpu`` or ``cuda``); a generic one otherwise."""
    kind = "cuda" if device.startswith("cuda") else "cpu"
    return PRESETS.get((dataset.split(":")[0], kind), Preset())


def describe_presets() -> str:
    """The preset table, for ``--help``."""
    lines = []
    for (name, kind), p in PRESETS.items():
        subset = f"{p.train_subset or 'all'}/{p.test_subset or 'all'}"
        aa = p.aa_attacks
        lines.append(f"{name} [{kind}]: {p.model} width {p.width:g}, {p.epochs} epochs, "
                     f"subsets {subset}, n={p.n}, AutoAttack {aa}")
    return "\n".join(lines)


def default_out(spec: RunSpec) -> Path:
    """``runs/<dataset>-<model>-<schedule>-<bias>`` with path-safe characters."""
    dataset = spec.dataset
    if ":" in dataset:
        kind, _, arg = dataset.partition(":")
        stem = Path(arg).name.split(".")[0]
        dataset = f"{kind}-{stem}"
    name = f"{dataset}-{spec.model}-{spec.train.schedule}-{spec.model_kwargs.get('bias', 'na')}"
    return Path("runs") / re.sub(r"[^A-Za-z0-9_.-]+", "-", name)


def _comparable(d: dict[str, Any]) -> dict[str, Any]:
    """A run spec without the fields that may change between reruns of one bench."""
    d = dict(d)
    train = dict(d.pop("train"))
    for key in ("epochs", "max_minutes", "device", "target_log10_loss"):
        train.pop(key, None)
    d["train"] = train
    return d


def train_stage(out: Path, spec: RunSpec, progress: bool = False) -> str:
    """Train, resume, or skip a finished run; returns what was done."""
    spec.train.validate()  # fills in the default rate, as the stored spec has it
    stored = read_run(out)
    if stored is None:
        train_run(out, spec, progress=progress)
        return "trained"
    if _comparable(stored["run"]) != _comparable(spec.to_dict()):
        raise UserError(f"{out} holds a different run; choose another --out or remove it")
    want = {"epochs": spec.train.epochs, "max_minutes": spec.train.max_minutes,
            "target_log10_loss": spec.train.target_log10_loss}
    if stored.get("stopped") and stored["run"]["train"]["epochs"] >= spec.train.epochs:
        return "already trained"
    train_run(out, resume=True, overrides=want, progress=progress)
    return "resumed"


def publish(out: Path, leaderboard_dir: Path) -> Path:
    """Copy a run's results (no checkpoints) to ``leaderboard_dir/runs/<name>``."""
    dest = leaderboard_dir / "runs" / out.name
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in ("run.json", "metrics.jsonl", "metrics.csv"):
        if (out / name).exists():
            shutil.copy2(out / name, tmp / name)
    if (out / "eval").exists():
        # Adversarial points are inputs for warm starts, not results.
        shutil.copytree(out / "eval", tmp / "eval",
                        ignore=shutil.ignore_patterns(ADVERSARIALS_DIR))
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


def update_leaderboard(run_dirs: list[Path], leaderboard_dir: Path) -> dict[str, Path]:
    """Publish runs into ``leaderboard_dir/runs`` and rebuild the leaderboard from all of them."""
    from .leaderboard import write_leaderboard

    published = leaderboard_dir / "runs"
    for run in run_dirs:
        if not (run / "run.json").exists():
            raise UserError(f"{run} is not a run directory (no run.json)")
        if run.resolve().parent != published.resolve():
            publish(run, leaderboard_dir)
    if not published.is_dir():
        raise UserError(f"{leaderboard_dir} holds no runs yet; give run directories to add")
    # Relative paths, so the written tables name no machine-specific folder.
    runs = sorted(p for p in published.iterdir() if p.is_dir() and not p.name.startswith("."))
    return write_leaderboard(runs, leaderboard_dir)


def bench(spec: RunSpec, evaluator: Any, out: Path | None = None,
          leaderboard_dir: Path | None = None, splits: tuple[str, ...] = ("test", "train"),
          progress: bool = False, log: Any = print) -> dict[str, Any]:
    """Train a run, evaluate all its checkpoints, and rebuild the leaderboard.

    Args:
        spec: What to train.
        evaluator: A configured :class:`~marginrobust.Evaluator`.
        out: The run directory (default :func:`default_out`).
        leaderboard_dir: Where the leaderboard lives (None: no leaderboard update).
        splits: Evaluation splits.
        progress: Progress bars.
        log: Where stage messages go.

    Returns:
        ``{"out": run dir, "train": stage outcome, "records": eval records,
        "leaderboard": written files or None}``.
    """
    out = Path(out) if out is not None else default_out(spec)
    log(f"[bench] run directory {out}")
    outcome = train_stage(out, spec, progress)
    log(f"[bench] training: {outcome}")
    store = evaluator.evaluate_run(out, splits=splits, progress=progress)
    log(f"[bench] evaluation: {len(store.records)} records in {store.path}")
    files = None
    if leaderboard_dir is not None:
        files = update_leaderboard([out], leaderboard_dir)
        log(f"[bench] leaderboard: {files['README.md']}")
    return {"out": out, "train": outcome, "records": store.records, "leaderboard": files}


def spec_from_preset(preset: Preset, dataset: str, overrides: dict[str, Any]) -> tuple[
        RunSpec, Preset]:
    """A :class:`RunSpec` from a preset with the options a user gave (None = keep preset)."""
    given = {k: v for k, v in overrides.items() if v is not None and k in asdict(preset)}
    p = replace(preset, **given)
    kwargs = {} if p.model.startswith("timm/") else {"bias": p.bias, "width": p.width}
    kwargs.update(overrides.get("model_kwargs") or {})
    train = TrainConfig(epochs=p.epochs, batch_size=p.batch_size, schedule=p.schedule,
                        lr=overrides.get("lr"), max_minutes=overrides.get("max_minutes"),
                        target_log10_loss=overrides.get("target_log10_loss"),
                        seed=overrides.get("seed") or 0,
                        device=overrides.get("device") or "auto")
    seed = overrides.get("seed") or 0
    spec = RunSpec(model=p.model, model_kwargs=kwargs, dataset=dataset,
                   data_dir=overrides.get("data_dir"), train_subset=p.train_subset,
                   test_subset=p.test_subset, data_seed=seed, init_seed=seed, train=train,
                   checkpoint_decades=p.checkpoint_decades)
    return spec, p
