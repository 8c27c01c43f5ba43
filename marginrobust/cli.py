"""The ``marginrobust`` command line: each command is a thin caller of the Python API.

Only click and the package's torch-free modules are imported here; every command imports
torch, timm, foolbox, pandas or matplotlib once its arguments are parsed, so ``--help`` and
a one-line error answer at once. The option lists live in ``cli_options``.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

import click

from .cli_options import (
    POSITIVE,
    SCHEDULE_NAMES,
    CliGroup,
    apply_options,
    bench_summary,
    build_evaluator,
    certify_choice,
    eval_options,
    model_kwargs,
    model_options,
    parse_epoch_list,
    parse_kwargs,
    report_flags,
    summary_table,
    train_options,
)
from .cli_resume import resume_overrides

__all__ = ["SCHEDULE_NAMES", "build_evaluator", "main", "summary_table"]


@click.group(cls=CliGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="marginrobust")
def main() -> None:
    """Train homogeneous networks far past fitting and measure how their normalized
    margin and adversarial robustness move together (Lyu & Li, ICLR 2020)."""
    # A program, not a library: warnings read as one line, without file and source line.
    warnings.formatwarning = _one_line_warning


def _one_line_warning(message: Warning | str, category: type[Warning], filename: str,
                      lineno: int, line: str | None = None, **_: Any) -> str:
    return f"Warning: {message}\n"


@main.command("models")
@click.argument("pattern", default="*")
def models_cmd(pattern: str) -> None:
    """List registered models (any timm architecture is also accepted as timm/<name>)."""
    from .models import list_models
    from .registry import MODELS

    for name in list_models(pattern):
        doc = (MODELS.get(name).__doc__ or "").strip().splitlines()
        click.echo(f"{name:12s} {doc[0] if doc else ''}")


@main.command("datasets")
def datasets_cmd() -> None:
    """List registered datasets."""
    from .data import list_datasets

    for name, desc in list_datasets():
        click.echo(f"{name:14s} {desc}")


@main.command("train")
@apply_options(model_options())
@click.option("--out", type=click.Path(file_okay=False), required=True,
              help="Run directory (metrics, checkpoints, resume file).")
@apply_options(train_options())
@click.option("--checkpoint-epochs", default=None, metavar="E1,E2,...",
              help="Extra epochs to checkpoint.")
@click.option("--init-from", type=click.Path(dir_okay=False), default=None,
              help="Start from this checkpoint's weights.")
@click.option("--scale", type=POSITIVE, default=None,
              help="Multiply all parameters by this factor before training.")
@click.option("--resume", is_flag=True,
              help="Continue the run in --out where it stopped. It may change only --epochs, "
                   "--max-minutes, --target-log10-loss and --device; any other option that "
                   "contradicts the stored run is refused.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train_cmd(model: str, bias: str, width: float, model_opts: tuple[str, ...], dataset: str,
              data_dir: str | None, out: str, epochs: int | None, batch_size: int, schedule: str,
              lr: float | None, train_subset: int | None, test_subset: int | None, seed: int,
              data_seed: int | None, checkpoint_decades: float, max_minutes: float | None,
              target_log10_loss: float | None, explode_ratio: float, device: str,
              precision: str, deterministic: bool, checkpoint_epochs: str | None,
              init_from: str | None, scale: float | None,
              resume: bool, quiet: bool) -> None:
    """Train a model with the paper's procedure, checkpointing along the trajectory."""
    from .train.config import TrainConfig
    from .train.run import RunSpec, train_run

    if resume:
        overrides = resume_overrides(click.get_current_context(), out)
        trainer = train_run(out, resume=True, overrides=overrides, progress=not quiet)
    else:
        config = TrainConfig(epochs=100 if epochs is None else epochs, batch_size=batch_size,
                             schedule=schedule, lr=lr, explode_ratio=explode_ratio,
                             max_minutes=max_minutes, target_log10_loss=target_log10_loss,
                             seed=seed, device=device, precision=precision,
                             deterministic=deterministic)
        spec = RunSpec(model=model, model_kwargs=model_kwargs(model, bias, width, model_opts),
                       dataset=dataset, data_dir=data_dir, train_subset=train_subset,
                       test_subset=test_subset,
                       data_seed=seed if data_seed is None else data_seed, init_seed=seed,
                       train=config,
                       checkpoint_decades=checkpoint_decades,
                       checkpoint_epochs=parse_epoch_list(checkpoint_epochs),
                       init_from=init_from, scale=scale)
        trainer = train_run(out, spec, progress=not quiet)
    from . import distributed

    if not distributed.is_main_process():
        return  # under torchrun rank 0 speaks for all ranks
    r = trainer.record or {}
    nominal = "" if r.get("homogeneous", True) else " (nominal order: not homogeneous)"
    click.echo(f"stopped ({trainer.stop_reason}) at epoch {r.get('epoch')}: "
               f"log10 loss {r.get('log10_loss', float('nan')):.2f}, "
               f"train acc {r.get('train_acc', float('nan')):.4f}, "
               f"test acc {r.get('test_acc', float('nan')):.4f}, "
               f"normalized margin {r.get('normalized_margin', float('nan')):.4e}{nominal}; "
               f"run in {Path(out)}")


@main.command("attacks")
def attacks_cmd() -> None:
    """List registered attacks, the norms each supports, and what each does."""
    from . import evaluate  # noqa: F401  (registers the built-in attacks)
    from .registry import ATTACKS

    for name in ATTACKS.names():
        factory = ATTACKS.get(name)
        text = getattr(factory, "description", None)
        if not text:
            # A plugin without a description: its docstring's first paragraph, whole.
            text = " ".join((factory.__doc__ or "").strip().split("\n\n")[0].split())
        norms = ",".join(getattr(factory, "norms", ()))
        click.echo(f"{name:12s} {norms:8s} {text}")


@main.command("eval")
@click.argument("path", type=click.Path())
@apply_options(eval_options())
@click.option("--device", default="auto", show_default=True,
              help="auto (cuda when present), cpu, cuda or cuda:N.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def eval_cmd(path: str, attacks: str, norms: str, eps_l2: str | None, eps_linf: str | None,
             n_points: int, splits: str, aa_version: str, aa_attacks: str | None,
             warm_start: bool, certify_names: str | None, no_certify: bool, eval_seed: int,
             device: str,
             quiet: bool) -> None:
    """Attack and certify every checkpoint of a run (or one checkpoint file).

    Results go to RUN_DIR/eval/records.jsonl (one record per checkpoint, split, method,
    norm, eps and settings: points, seed, attack options) and RUN_DIR/eval/ (per-point
    distances and radii). Rerunning with the same settings skips finished work; new
    settings are evaluated and stored beside the old figures.
    """
    from . import distributed
    from .evaluate.run import evaluate_run
    from .io import parse_splits

    chosen = parse_splits(splits)
    evaluator = build_evaluator(attacks=attacks, norms=norms, eps_l2=eps_l2, eps_linf=eps_linf,
                                n=n_points, seed=eval_seed, device=device,
                                certify=certify_choice(certify_names, no_certify),
                                aa_version=aa_version, aa_attacks=aa_attacks,
                                warm_start=warm_start)
    store = evaluate_run(evaluator, path, chosen, progress=not quiet)
    if not distributed.is_main_process():
        return  # under torchrun every rank holds the merged results; rank 0 prints them
    records = store.records
    click.echo(summary_table(records))
    report_flags(records)
    click.echo(f"{len(records)} records in {store.path}")


def _bench_help() -> str:
    from .presets import describe_presets

    return ("Train, evaluate every checkpoint, and update the leaderboard, in one resumable "
            "command.\n\nWith no options it runs on the embedded digits set. Options marked "
            "[preset] take the dataset's preset when left out (CPU presets when no GPU is "
            "used):\n\n\b\n" + describe_presets() + "\n\nRerunning the same command finishes "
            "a killed bench without redoing finished work.")


@main.command("bench", help=_bench_help())
@apply_options(model_options(preset=True))
@apply_options(train_options(preset=True))
@apply_options(eval_options(preset=True))
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Run directory [runs/<dataset>-<model>-<schedule>-<bias>].")
@click.option("--leaderboard", "leaderboard_dir", type=click.Path(file_okay=False),
              default="runs/leaderboard", show_default=True,
              help="Leaderboard folder to update.")
@click.option("--no-leaderboard", is_flag=True, help="Do not touch the leaderboard.")
@click.option("--force", is_flag=True,
              help="Let the leaderboard write into a folder it did not write.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def bench_cmd(model: str | None, bias: str | None, width: float | None,
              model_opts: tuple[str, ...], dataset: str, data_dir: str | None,
              epochs: int | None, batch_size: int | None, schedule: str | None,
              lr: float | None, train_subset: int | None, test_subset: int | None, seed: int,
              data_seed: int | None, checkpoint_decades: float | None, max_minutes: float | None,
              target_log10_loss: float | None, explode_ratio: float, device: str,
              precision: str, deterministic: bool, attacks: str | None, norms: str,
              eps_l2: str | None, eps_linf: str | None,
              n_points: int | None, splits: str, aa_version: str, aa_attacks: str | None,
              warm_start: bool, certify_names: str | None, no_certify: bool, eval_seed: int,
              out: str | None,
              leaderboard_dir: str, no_leaderboard: bool, force: bool, quiet: bool) -> None:
    from . import distributed
    from .io import parse_splits, resolve_device
    from .pipeline import bench, spec_from_preset
    from .presets import preset_for

    chosen = parse_splits(splits)
    dev = str(resolve_device(device))
    overrides = {"model": model, "bias": bias, "width": width, "epochs": epochs,
                 "batch_size": batch_size, "schedule": schedule, "train_subset": train_subset,
                 "test_subset": test_subset, "checkpoint_decades": checkpoint_decades,
                 "n": n_points, "attacks": attacks, "aa_attacks": aa_attacks, "lr": lr,
                 "max_minutes": max_minutes, "target_log10_loss": target_log10_loss,
                 "explode_ratio": explode_ratio, "seed": seed, "data_seed": data_seed,
                 "device": device,
                 "precision": precision, "deterministic": deterministic,
                 "data_dir": data_dir, "model_kwargs": parse_kwargs(model_opts)}
    spec, preset = spec_from_preset(preset_for(dataset, dev), dataset, overrides)
    if distributed.is_main_process():
        click.echo(f"[bench] preset for {dataset} on {dev}: {preset}")
    evaluator = build_evaluator(attacks=preset.attacks, norms=norms, eps_l2=eps_l2,
                                eps_linf=eps_linf, n=preset.n, seed=eval_seed, device=device,
                                certify=certify_choice(certify_names, no_certify),
                                aa_version=aa_version, aa_attacks=preset.aa_attacks,
                                warm_start=warm_start)
    result = bench(spec, evaluator, Path(out) if out else None,
                   None if no_leaderboard else Path(leaderboard_dir), chosen,
                   progress=not quiet, log=click.echo, force=force)
    if not distributed.is_main_process():
        return
    board = result["leaderboard"]["README.md"] if result["leaderboard"] else None
    click.echo(bench_summary(result["records"], board))
    report_flags(result["records"])


@main.command("leaderboard")
@click.argument("runs", nargs=-1, type=click.Path(file_okay=False))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="runs/leaderboard",
              show_default=True, help="Leaderboard folder (the same default as bench).")
@click.option("--force", is_flag=True,
              help="Write into a folder the leaderboard did not write (e.g. to regenerate a "
                   "committed board).")
def leaderboard_cmd(runs: tuple[str, ...], out_dir: str, force: bool) -> None:
    """Publish runs (results only, no checkpoints) into OUT/runs and rebuild the leaderboard.

    Writes leaderboard.csv, leaderboard.json, links.csv, settings.csv, seeds.csv,
    matched.csv, pooled.csv, depth.csv, README.md, index.html and plots/ from every run under
    OUT/runs. With no RUNS it just rebuilds.
    """
    from .report.publish import update_leaderboard

    files = update_leaderboard([Path(r) for r in runs], Path(out_dir), force=force)
    for name, path in files.items():
        click.echo(f"{name}: {path}")


@main.command("compare")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table",
              show_default=True, help="Output format.")
@click.option("--plot", type=click.Path(dir_okay=False), default=None,
              help="Also write robust-accuracy-vs-eps curves to this PNG.")
@click.option("--settings", default=None, metavar="ID",
              help="Compare only figures of these evaluation settings (A, B... as the table "
                   "of items names them), so that differences compare like with like.")
def compare_cmd(paths: tuple[str, ...], fmt: str, plot: str | None,
                settings: str | None) -> None:
    """Compare runs (their last checkpoint) or checkpoints side by side, with differences.

    A difference between figures of different evaluation settings (points, seed, attack
    set) is marked [other settings] in its column's name: it need not come from the models.
    """
    from .report.compare import compare, compare_plot, format_compare

    frame = compare(list(paths), settings)
    click.echo(format_compare(frame, fmt))
    if plot:
        written = compare_plot(list(paths), Path(plot))
        click.echo(f"plot: {written}", err=True)


@main.command("check-homogeneity")
@apply_options(model_options())
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None,
              help="Check a checkpoint's model instead of a fresh one.")
@click.option("--n", "n_points", type=click.IntRange(min=1), default=32, show_default=True,
              help="Training points to evaluate on.")
def check_homogeneity_cmd(model: str, bias: str, width: float, model_opts: tuple[str, ...],
                          dataset: str, data_dir: str | None, checkpoint: str | None,
                          n_points: int) -> None:
    """Measure a model's homogeneity order L, or say why it is not homogeneous.

    Exits 0 when homogeneous, 1 when not (so scripts can test it).
    """
    from .data import load_dataset
    from .models import check_homogeneity, create_model
    from .train.checkpoints import load_checkpoint

    data = load_dataset(dataset, data_dir, train_subset=None, test_subset=None, seed=0)
    if checkpoint:
        net, _ = load_checkpoint(checkpoint)
    else:
        c, h, w = data.spec.shape
        net = create_model(model, num_classes=data.spec.num_classes, in_chans=c, img_size=(h, w),
                           **model_kwargs(model, bias, width, model_opts))
    report = check_homogeneity(net, data.x_train[:n_points])
    click.echo(report.describe())
    sys.exit(0 if report.homogeneous else 1)


if __name__ == "__main__":
    main()
