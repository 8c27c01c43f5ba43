"""The lines of a figure: one per run, or per run and evaluation setting.

A run evaluated with several settings (``n``, ``seed``, ``settings``) draws one line per
setting, labelled with it, so that a line never joins figures of two settings; the
per-point distances behind a row are those of its checkpoint and its (n, seed).
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from .loader import DistanceKey, Distances, pick_distances

# {(run, checkpoint): {(split, norm, n, seed): distances}}, as loader.load_all_distances
# gives it.
DistanceTable = Mapping[tuple[str, str], Mapping[DistanceKey, Distances]]


def known(value: object) -> int | None:
    """A count of a frame cell as an int, or None where it is missing.

    Args:
        value: A cell (int, float, NaN or NA).
    """
    return None if value is None or pd.isna(value) else int(value)  # type: ignore[arg-type]


def row_distances(distances: DistanceTable, run: str, row: Mapping[str, object], split: str,
                  norm: str) -> Distances | None:
    """The per-point distances behind one leaderboard row (its checkpoint and setting).

    Args:
        distances: Per (run, checkpoint), the per-point distances.
        run: The row's run.
        row: The row (``checkpoint``, ``n``, ``seed`` are read).
        split, norm: The figure.
    """
    found = distances.get((run, str(row["checkpoint"])), {})
    return pick_distances(found, split, norm, known(row.get("n")), known(row.get("seed")))


def setting_text(row: Mapping[str, object]) -> str:
    """``n=100, seed=0, settings A`` of a row (parts it lacks left out).

    Args:
        row: A leaderboard row.
    """
    parts = [f"n={row['n']}" if not pd.isna(row.get("n")) else "",
             f"seed={row['seed']}" if not pd.isna(row.get("seed")) else "",
             f"settings {row['settings']}" if not pd.isna(row.get("settings")) else ""]
    return ", ".join(p for p in parts if p)


def series(frame: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(label, rows by epoch) per run and evaluation setting: the lines of a figure.

    A run with one setting is labelled by its name; with several, each line also names its
    setting. Checkpoints not evaluated ride along with every line of their run.

    Args:
        frame: Leaderboard rows.
    """
    out = []
    keys = [c for c in ("n", "seed", "settings") if c in frame]
    for run, rows in frame.groupby("run", sort=False):
        rows = rows.assign(epoch=rows["epoch"].astype("float64"))
        bare = rows["settings"].isna() if "settings" in rows else pd.Series(True, rows.index)
        evaluated = rows[~bare]
        if evaluated.empty:
            out.append((str(run), rows.sort_values("epoch")))
            continue
        settings = list(evaluated.groupby(keys, sort=False, dropna=False))
        for _, sub in settings:
            label = str(run) if len(settings) == 1 else f"{run} ({setting_text(sub.iloc[0])})"
            out.append((label, pd.concat([sub, rows[bare]]).sort_values("epoch")))
    return out
