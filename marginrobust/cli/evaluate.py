"""``eval``: attack and certify every checkpoint of a run."""

from __future__ import annotations

import click

from .app import main
from .build import build_evaluator
from .options import apply_options, certify_choice, eval_options
from .output import report_flags, summary_table


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
    from .. import distributed
    from ..evaluate.run import evaluate_run
    from ..io import parse_splits

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
