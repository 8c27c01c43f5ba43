"""``bench``: train, evaluate and update the leaderboard in one resumable command."""

from __future__ import annotations

from pathlib import Path

import click

from .app import main
from .build import build_evaluator
from .options import (
    apply_options,
    certify_choice,
    eval_options,
    model_options,
    parse_kwargs,
    train_options,
)
from .output import bench_summary, report_flags


def _bench_help() -> str:
    from ..presets import describe_presets

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
    from .. import distributed
    from ..io import parse_splits, resolve_device
    from ..presets import preset_for
    from .pipeline import bench, spec_from_preset

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
