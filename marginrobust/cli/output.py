"""What the commands print: result tables, the bench summary, consistency flags."""

from __future__ import annotations

from typing import Any

import click

__all__ = ["bench_summary", "report_flags", "summary_table"]


def summary_table(records: list[Any]) -> str:
    """Robust accuracy per checkpoint, split, method, norm and eps, as a text table."""
    from tabulate import tabulate

    def number(value: float | None, fmt: str) -> str:
        return "" if value is None else format(value, fmt)

    rows = [[r.checkpoint, r.split, r.method, r.norm, f"{r.eps:g}", f"{r.clean_acc:.3f}",
             "skipped" if getattr(r, "skipped", None) else number(r.robust_acc, ".3f"),
             number(r.median_distance, ".4g"), number(r.normalized_margin, ".3e")]
            for r in records if r.method in ("autoattack", "pgd", "fmn", "certified", "worst")]
    return tabulate(rows, headers=["checkpoint", "split", "method", "norm", "eps", "clean",
                                   "robust", "median dist", "norm. margin"])


def bench_summary(records: list[Any], board: Any = None) -> str:
    """One row per checkpoint of a bench: where it is on the trajectory, its margin, and
    its AutoAttack and certified accuracies per (norm, ε) on the test points: the figures
    the leaderboard leads with, not every record (those are in the run's records.jsonl).

    Args:
        records: The run's evaluation records.
        board: The leaderboard's README (said at the end), or None.
    """
    from tabulate import tabulate

    headline = ("autoattack", "certified")
    splits = [r.split for r in records if r.method in headline]
    split = "test" if "test" in splits else (splits[0] if splits else "test")
    keys = sorted({(r.norm, r.eps) for r in records
                   if r.method in headline and r.split == split})
    by_ckpt: dict[str, dict[str, Any]] = {}
    for r in records:
        row = by_ckpt.setdefault(r.checkpoint, {"epoch": r.epoch, "log10 loss": r.log10_loss,
                                               "norm. margin": r.normalized_margin})
        if r.method in headline and r.split == split and r.robust_acc is not None:
            tag = "AA" if r.method == "autoattack" else "cert"
            row[f"{tag} {r.norm} {r.eps:g}"] = r.robust_acc
    columns = ["epoch", "log10 loss", "norm. margin",
               *[f"{tag} {n} {e:g}" for n, e in keys for tag in ("AA", "cert")]]
    columns = [c for c in columns if any(c in row for row in by_ckpt.values())]

    def cell(column: str, value: Any) -> str:
        if value is None:
            return ""
        if column == "epoch":
            return str(value)
        return f"{value:.3e}" if column == "norm. margin" else f"{value:.3f}"

    rows = sorted(by_ckpt.values(), key=lambda row: row["epoch"] or 0)
    table = tabulate([[cell(c, row.get(c)) for c in columns] for row in rows],
                     headers=columns, disable_numparse=True)
    where = f"\nleaderboard: {board}" if board is not None else ""
    return (f"AutoAttack (AA) and certified (cert) accuracy on the {split} points:\n{table}\n"
            f"{len(records)} records (every split, attack, certificate and setting) in the "
            f"run's eval/records.jsonl{where}")


def report_flags(records: list[Any]) -> None:
    """Print consistency flags and skipped certificates on stderr, once each."""
    for flag in sorted({f for r in records for f in r.flags}):
        click.echo(f"FLAG: {flag}", err=True)
    for reason in sorted({r.skipped for r in records if getattr(r, "skipped", None)}):
        click.echo(f"skipped: {reason}", err=True)
