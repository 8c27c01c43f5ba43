"""``leaderboard`` and ``compare``: reading finished runs."""

from __future__ import annotations

from pathlib import Path

import click

from .app import main


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
    from ..report.publish import update_leaderboard

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
    from ..report.compare import compare, compare_plot, format_compare

    frame = compare(list(paths), settings)
    click.echo(format_compare(frame, fmt))
    if plot:
        written = compare_plot(list(paths), Path(plot))
        click.echo(f"plot: {written}", err=True)
