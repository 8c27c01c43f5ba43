"""The bench pipeline: train → evaluate every checkpoint → update the leaderboard, in one call.

Each stage resumes: a rerun of the same bench finishes a killed training from its resume
file, skips every finished (checkpoint, split, method, norm, ε) of the evaluation, and
rebuilds the leaderboard from what is on disk.
"""

from __future__ import annotations

import re
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from .. import runlock
from ..errors import UserError
from ..io import resolve_device
from ..presets import Preset
from ..train.run import RunSpec, comparable, read_run, train_run
from .build import build_run_spec


def default_out(spec: RunSpec) -> Path:
    """``runs/<dataset>-<model>-<schedule>-<bias>`` with path-safe characters."""
    dataset = spec.dataset
    if ":" in dataset:
        kind, _, arg = dataset.partition(":")
        stem = Path(arg).name.split(".")[0]
        dataset = f"{kind}-{stem}"
    name = f"{dataset}-{spec.model}-{spec.train.schedule}-{spec.model_kwargs.get('bias', 'na')}"
    return Path("runs") / re.sub(r"[^A-Za-z0-9_.-]+", "-", name)


def train_stage(out: Path, spec: RunSpec, progress: bool = False) -> str:
    """Train, resume, or skip a finished run; returns what was done.

    Under a launcher every rank calls it and trains data-parallel: rank 0 reads the run
    folder and decides, and every rank follows (or raises) the same decision, before
    rank 0 writes anything the others could read.
    """
    from .. import distributed

    spec.train.validate()  # fills in the default rate, as the stored spec has it
    decision = _train_decision(out, spec) if distributed.is_main_process() else None
    decision = distributed.broadcast_object(decision)
    if decision.startswith("error: "):
        raise UserError(decision[len("error: "):])
    if decision == "trained":
        train_run(out, spec, progress=progress)
    elif decision == "resumed":
        want = {"epochs": spec.train.epochs, "max_minutes": spec.train.max_minutes,
                "target_log10_loss": spec.train.target_log10_loss}
        train_run(out, resume=True, overrides=want, progress=progress)
    return decision


def _train_decision(out: Path, spec: RunSpec) -> str:
    """``trained``, ``resumed``, ``already trained`` or ``error: <sentence>``."""
    try:
        stored = read_run(out)
    except UserError as exc:
        return f"error: {exc}"
    if stored is None:
        return "trained"
    if comparable(stored["run"]) != comparable(spec.to_dict()):
        return f"error: {out} holds a different run; choose another --out or remove it"
    if stored.get("stopped") and stored["run"]["train"]["epochs"] >= spec.train.epochs:
        return "already trained"
    return "resumed"


def bench(spec: RunSpec, evaluator: Any, out: Path | None = None,
          leaderboard_dir: Path | None = None, splits: tuple[str, ...] = ("test", "train"),
          progress: bool = False, log: Any = print, force: bool = False) -> dict[str, Any]:
    """Train a run, evaluate all its checkpoints, and rebuild the leaderboard.

    Args:
        spec: What to train.
        evaluator: A configured :class:`~marginrobust.Evaluator`.
        out: The run directory (default :func:`default_out`).
        leaderboard_dir: Where the leaderboard lives (None: no leaderboard update).
        splits: Evaluation splits.
        progress: Progress bars.
        log: Where stage messages go.
        force: Let the leaderboard write into a folder it did not write.

    Returns:
        ``{"out": run dir, "train": stage outcome, "records": eval records,
        "leaderboard": written files or None}``.
    """
    out = Path(out) if out is not None else default_out(spec)
    # One lock over the three stages, so no other writer slips in between them.
    with runlock.hold(out):
        return _bench_locked(spec, evaluator, out, leaderboard_dir, splits, progress, log,
                             force)


def _bench_locked(spec: RunSpec, evaluator: Any, out: Path, leaderboard_dir: Path | None,
                  splits: tuple[str, ...], progress: bool, log: Any,
                  force: bool) -> dict[str, Any]:
    """:func:`bench` while holding the run folder's lock."""
    from .. import distributed
    from ..evaluate.run import evaluate_run
    from ..report.publish import update_leaderboard

    main = distributed.is_main_process()
    say = log if main else (lambda *_: None)
    say(f"[bench] run directory {out}")
    if distributed.launched():
        # Under torchrun every rank trains (data-parallel, rank 0 writing the run) and
        # then takes its share of the evaluation; the group follows the training device.
        distributed.init(distributed.rank_device(resolve_device(spec.train.device)))
    # Every rank returns once rank 0 has written the whole run folder.
    outcome = train_stage(out, spec, progress and main)
    say(f"[bench] training: {outcome}")
    store = evaluate_run(evaluator, out, splits=splits, progress=progress and main)
    say(f"[bench] evaluation: {len(store.records)} records in {store.path}")
    files = None
    if leaderboard_dir is not None and main:
        files = update_leaderboard([out], leaderboard_dir, force=force)
        say(f"[bench] leaderboard: {files['README.md']}")
    return {"out": out, "train": outcome, "records": store.records, "leaderboard": files}


def spec_from_preset(preset: Preset, dataset: str, overrides: dict[str, Any]) -> tuple[
        RunSpec, Preset]:
    """A :class:`RunSpec` from a preset with the options a user gave (None = keep preset)."""
    given = {k: v for k, v in overrides.items() if v is not None and k in asdict(preset)}
    p = replace(preset, **given)
    kwargs = {} if p.model.startswith("timm/") else {"bias": p.bias, "width": p.width}
    kwargs.update(overrides.get("model_kwargs") or {})
    seed = overrides.get("seed") or 0
    spec = build_run_spec(
        model=p.model, model_kwargs=kwargs, dataset=dataset,
        data_dir=overrides.get("data_dir"), train_subset=p.train_subset,
        test_subset=p.test_subset, seed=seed, data_seed=overrides.get("data_seed"),
        epochs=p.epochs, batch_size=p.batch_size, schedule=p.schedule, lr=overrides.get("lr"),
        explode_ratio=overrides.get("explode_ratio") or 500.0,
        max_minutes=overrides.get("max_minutes"),
        target_log10_loss=overrides.get("target_log10_loss"),
        device=overrides.get("device") or "auto",
        precision=overrides.get("precision") or "fp32",
        deterministic=overrides.get("deterministic", True),
        checkpoint_decades=p.checkpoint_decades)
    return spec, p
