"""The written readings quote the committed tables: every figure they cite is recomputed here.

``leaderboard/NOTES.md`` (the grid of schedules and seeds), ``leaderboard/trajectory/NOTES.md``
(the deep trajectory) and the README's Results section quote figures of the boards' CSV
files. Each quoted phrase is rebuilt below from those files, and must appear verbatim where
it is quoted: a reading cannot drift from its data. ``python tests/test_leaderboard_reading.py``
prints every phrase.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
BOARD = ROOT / "leaderboard"
TRAJECTORY = BOARD / "trajectory"
CIFAR = ("imagefolder:cifar10-jpeg.tar.xz", "cnn")
CONFIGS = {"digits CNN": ("digits", "cnn"), "digits MLP": ("digits", "mlp"),
           "Fashion-MNIST MLP": ("fashion-mnist", "mlp"), "CIFAR-10 (JPEG) CNN": CIFAR}
LOSS_BASED = "loss-based, lr=0.1"


def iv(value: float, lo: float, hi: float, digits: int = 3) -> str:
    """``0.512 [0.471, 0.553]``; significant digits for margins (``3.45e-06``)."""
    if abs(value) < 1e-2 and value != 0:
        return f"{value:.{digits}g} [{lo:.{digits}g}, {hi:.{digits}g}]"
    return f"{value:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def _csv(board: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(board / name)


def _schedule(config: str) -> str:
    return config.split("; ", 1)[1]


def _last_positions(seeds: pd.DataFrame, dataset: str, model: str) -> pd.DataFrame:
    rows = seeds[(seeds["dataset"] == dataset) & (seeds["model"] == model)]
    return rows.sort_values("position").groupby("config").tail(1)


def grid_claims() -> dict[str, str]:
    """Phrases of the grid's reading, by a name that says where they come from."""
    seeds, pooled, matched = (_csv(BOARD, n) for n in ("seeds.csv", "pooled.csv",
                                                       "matched.csv"))
    out: dict[str, str] = {}
    for label, (dataset, model) in CONFIGS.items():
        last = _last_positions(seeds, dataset, model)
        for row in last.to_dict("records"):
            key = f"{label} / {_schedule(row['config'])}"
            margin = iv(row["normalized_margin"], row["normalized_margin_lo"],
                        row["normalized_margin_hi"])
            out[f"{key} / margin"] = (
                f"γ̄ {margin} after {row['grad_evals_mean']:,.0f} gradient evaluations"
                f" ({row['n_seeds']} seeds)")
            for col in [c for c in row if re.match(r"^aa_(train|test)_L2_[0-9.]+$", c)]:
                if not pd.isna(row[col]):
                    out[f"{key} / {col}"] = (
                        f"{col} {iv(row[col], row[col + '_lo'], row[col + '_hi'], 2)}")
        mine = matched[(matched["dataset"] == dataset) & (matched["model"] == model)
                       & (matched["match"] == "grad_evals")
                       & (matched["quantity"] == "normalized_margin")
                       & (matched["schedule_a"] == LOSS_BASED)
                       & matched["schedule_b"].str.startswith("constant")]
        if not mine.empty:
            final = mine.sort_values("grad_evals_a").groupby(["run_a", "run_b"]).tail(1)
            out[f"{label} / matched margin ratio"] = (
                f"{final['ratio'].min():.2f} to {final['ratio'].max():.2f} times the constant "
                f"rates' γ̄ at equal gradient evaluations ({len(final)} pairs)")
        fits = pooled[(pooled["dataset"] == dataset) & (pooled["model"] == model)]
        for row in fits.to_dict("records"):
            if not re.match(r"^aa_(train|test)_", row["column"]):
                continue
            if math.isnan(row["b"]):
                text = f"`{row['column']}`: {row['conclusion']}"
            else:
                text = (f"`{row['column']}`: b = {iv(row['b'], row['b_lo'], row['b_hi'])}, "
                        f"c = {iv(row['c'], row['c_lo'], row['c_hi'])} "
                        f"({row['n_obs']} checkpoints of {row['n_runs']} runs)")
            out[f"{label} / pooled / {row['column']}"] = text
    board = _csv(BOARD, "leaderboard.csv")
    final = board.sort_values("epoch").groupby("run").tail(1)
    loss_based = final["schedule"].str.startswith("loss-based")
    for name, rows in (("digits loss-based depth", final[(final["dataset"] == "digits")
                                                        & loss_based]),
                       ("fashion loss-based depth", final[(final["dataset"] == "fashion-mnist")
                                                         & loss_based]),
                       ("fashion constant depth", final[(final["dataset"] == "fashion-mnist")
                                                       & ~loss_based])):
        out[name] = (f"10^{rows['log10_loss'].min():.2f} to "
                     f"10^{rows['log10_loss'].max():.2f}")
    collapsed = final[final["train_acc"] == 0.0]
    for row in collapsed.to_dict("records"):
        out[f"{row['run']} collapsed"] = f"stuck at 10^{row['log10_loss']:.2f}"
    return out


def cifar_claims() -> dict[str, str]:
    """Phrases of the CIFAR-10 (JPEG) reading: per schedule, the depth its runs reached;
    per run, how γ̄ and the AutoAttack accuracies moved from its first fitted checkpoint to
    its last; per schedule, the Lipschitz radius against FMN's distance at the runs' last
    checkpoints, and that CROWN and the exact verifier did not run."""
    board = _csv(BOARD, "leaderboard.csv")
    rows = board[(board["dataset"] == CIFAR[0]) & (board["model"] == CIFAR[1])
                 & board["settings"].notna()].sort_values("epoch")
    out: dict[str, str] = {}
    final = rows.groupby("run").tail(1)
    for schedule, sub in final.groupby("schedule"):
        out[f"cifar / {schedule} / depth"] = (
            f"log10 𝓛 {sub['log10_loss'].max():.2f} to {sub['log10_loss'].min():.2f} after "
            f"{sub['grad_evals'].min():,} to {sub['grad_evals'].max():,} gradient evaluations")
    out["cifar / clean test"] = (f"clean test accuracy {final['clean_test'].min():.2f} to "
                                 f"{final['clean_test'].max():.2f} at the last checkpoints")
    for run, sub in rows.groupby("run"):
        fit = sub[sub["train_acc"] == 1.0]
        if len(fit) < 2:
            continue
        a, b = fit.iloc[0], fit.iloc[-1]
        parts = [f"γ̄ grew {b['normalized_margin'] / a['normalized_margin']:.1f}-fold from "
                 f"epoch {int(a['epoch']):,} to {int(b['epoch']):,}"]
        for col in ("aa_train_L2_0.5", "aa_test_L2_0.5"):
            parts.append(f"{col} {iv(a[col], a[col + '_lo'], a[col + '_hi'], 2)} → "
                         f"{iv(b[col], b[col + '_lo'], b[col + '_hi'], 2)}")
        out[f"cifar / {run} / trajectory"] = "; ".join(parts)
    certified = _csv(BOARD, "certified.csv")
    ends = certified.merge(final[["run", "checkpoint"]], on=["run", "checkpoint"])
    lipschitz = ends[(ends["certifier"] == "lipschitz") & (ends["split"] == "train")
                     & (ends["norm"] == "L2")].merge(final[["run", "median_dist_train_L2"]],
                                                     on="run")
    for schedule, sub in lipschitz.groupby("schedule"):
        fmn = sub["median_dist_train_L2"]
        out[f"cifar / {schedule} / certified radius"] = (
            f"median Lipschitz-certified L2 radius {sub['median_radius'].min():.2g} to "
            f"{sub['median_radius'].max():.2g} against a median FMN distance of "
            f"{fmn.min():.2f} to {fmn.max():.2f}")
    looser = lipschitz["median_dist_train_L2"] / lipschitz["median_radius"]
    out["cifar / certified looseness"] = (f"{looser.min():.0f} to {looser.max():.0f} times "
                                          "below the median FMN distance of its run")
    skipped = ends[ends["certifier"].isin(["crown", "exact"]) & ends["skipped"].notna()]
    out["cifar / certifiers skipped"] = (
        f"CROWN and the exact verifier were skipped at all {len(final)} last checkpoints"
        if len(skipped["run"].unique()) == len(final) else "CROWN or exact ran somewhere")
    return out


def trajectory_claims() -> dict[str, str]:
    """Phrases of the deep trajectories' reading, per run (``digits-cnn-deep-s0 / depth``)."""
    depth_all = _csv(TRAJECTORY, "depth.csv")
    board_all = _csv(TRAJECTORY, "leaderboard.csv")
    out: dict[str, str] = {}
    for run, depth in depth_all.groupby("run"):
        out.update({f"{run} / {k}": v for k, v in
                    _run_claims(depth.sort_values("epoch"),
                                board_all[board_all["run"] == run]).items()})
    return out


def _robust_columns(board: pd.DataFrame) -> list[str]:
    """The AutoAttack accuracy and median-distance columns (not their interval bounds)."""
    return [c for c in board.columns if re.match(r"^(aa|median_dist)_(train|test)_", c)
            and not c.endswith(("_lo", "_hi"))]


def seed_claims() -> dict[str, str]:
    """Phrases comparing the deep seeds of each dataset at their last checkpoints (same
    points, same depth), keyed ``digits / final margins``; datasets with one run give none."""
    depth = _csv(TRAJECTORY, "depth.csv").sort_values("epoch")
    board = _csv(TRAJECTORY, "leaderboard.csv")
    datasets = board.drop_duplicates("run").set_index("run")["dataset"]
    out: dict[str, str] = {}
    for dataset, runs in datasets.groupby(datasets):
        last = depth[depth["run"].isin(runs.index)].groupby("run").tail(1).sort_values("run")
        if len(last) >= 2:
            out.update({f"{dataset} / {k}": v for k, v in _seed_claims(last, board).items()})
    return out


def _seed_claims(last: pd.DataFrame, board: pd.DataFrame) -> dict[str, str]:
    margins = last["normalized_margin"].to_numpy()
    out = {"seeds": f"{len(last)} seeds",
           "final margins": ("γ̄ = " + " and ".join(f"{m:.4g}" for m in margins)
                             + f" ({margins.max() / margins.min() - 1:.1%} apart)")}
    ends = board.merge(last[["run", "checkpoint"]], on=["run", "checkpoint"])
    gaps: dict[str, float] = {"aa": 0.0, "median_dist": 0.0}
    overlap = True
    for col in _robust_columns(board):
        rows = ends[ends[col].notna()]
        if len(rows) < 2:
            continue
        kind = "aa" if col.startswith("aa_") else "median_dist"
        spread = rows[col].max() - rows[col].min()
        gaps[kind] = max(gaps[kind], spread if kind == "aa" else
                         100 * (rows[col].max() / rows[col].min() - 1))
        overlap &= bool(rows[col + "_lo"].max() <= rows[col + "_hi"].min())
    out["final robustness"] = (f"the seeds' final robust accuracies differ by at most "
                               f"{gaps['aa']:.3f} and their median distances by at most "
                               f"{gaps['median_dist']:.1f} %")
    out["final overlap"] = ("every final figure's intervals overlap across the seeds"
                            if overlap else "some final figure's intervals do not overlap")
    return out


def _run_claims(depth: pd.DataFrame, board: pd.DataFrame) -> dict[str, str]:
    last = depth.iloc[-1]
    fitted = depth[depth["normalized_margin"] > 0]
    first = fitted.iloc[0]
    out = {
        "depth": (f"log10 𝓛 = {last['log10_loss']:.2f} at epoch {int(last['epoch']):,} "
                  f"({int(last['grad_evals']):,} gradient evaluations, "
                  f"{last['train_wall_s'] / 3600:.1f} h of training)"),
        "margin": (f"γ̄ grew from {first['normalized_margin']:.3g} at epoch "
                   f"{int(first['epoch']):,} to {last['normalized_margin']:.4g}"),
        "smoothed": f"γ̃ = {last['smoothed_margin']:.4g}",
        "growth": f"{last['normalized_margin'] / first['normalized_margin']:.0f}-fold",
        "decreases": (f"{int(depth['smoothed_decreases'].sum()):,} of "
                      f"{int(depth['fitted_epochs'].sum()):,} accepted epochs below log 2 "
                      "lowered γ̃"),
        "largest decrease": f"by at most {depth['largest_decrease'].max():.2g} of its value",
    }
    for decades in (d for d in (50, 400) if last["log10_loss"] <= -d):
        row = depth.iloc[(depth["log10_loss"] + decades).abs().argsort().iloc[0]]
        out[f"gap at {decades}"] = (f"{row['relative_gap']:.2%} at log10 𝓛 = "
                                    f"{row['log10_loss']:.0f}")
    out["gap at end"] = f"{last['relative_gap']:.2%} at the end"
    rises = fitted["normalized_margin"].diff().dropna()
    out["monotone"] = ("it rose at every evaluated checkpoint" if (rises > 0).all() else
                       f"it fell at {int((rises <= 0).sum())} of {len(rises)} evaluated "
                       "checkpoints")
    evaluated = board[board["train_acc"] == 1.0]
    changes: dict[str, list[float]] = {"aa": [], "median_dist": []}
    inside, overlap, outside = True, True, []
    for col in _robust_columns(board):
        rows = evaluated[evaluated[col].notna()].sort_values("epoch")
        if len(rows) < 2:
            continue
        a, b = rows.iloc[0], rows.iloc[-1]
        out[f"{col}"] = (f"{col} {iv(a[col], a[col + '_lo'], a[col + '_hi'])} at epoch "
                         f"{int(a['epoch']):,} and {iv(b[col], b[col + '_lo'], b[col + '_hi'])}"
                         f" at epoch {int(b['epoch']):,}")
        kind, change = _change(col, a[col], b[col])
        changes[kind].append(change)
        ends = bool(a[col + "_lo"] <= b[col] <= a[col + "_hi"]
                    and b[col + "_lo"] <= a[col] <= b[col + "_hi"])
        inside &= ends
        outside += [] if ends else [col]
        overlap &= bool(a[col + "_lo"] <= b[col + "_hi"] and b[col + "_lo"] <= a[col + "_hi"])
    out.update(_late_claims(evaluated))
    if changes["aa"] and changes["median_dist"]:
        out["changes"] = _changes_text(changes)
        out["inside"] = ("each end inside the other's interval" if inside else
                         "outside the other's interval: " + ", ".join(outside))
        out["overlap"] = ("the two intervals of every figure overlap" if overlap else
                          "the two intervals of some figure do not overlap")
    return out


def _late_claims(evaluated: pd.DataFrame) -> dict[str, str]:
    """From the first evaluated checkpoint 25 decades or more below 1 to the last: how much
    γ̄ grew and how the robustness figures moved (the late part of the trajectory)."""
    late = evaluated[evaluated["log10_loss"] <= -25].sort_values("epoch")
    if late["epoch"].nunique() < 2:
        return {}
    first, last = late.iloc[0], late.iloc[-1]
    changes: dict[str, list[float]] = {"aa": [], "median_dist": []}
    for col in _robust_columns(late):
        rows = late[late[col].notna()]
        if rows["epoch"].nunique() < 2:
            continue
        kind, change = _change(col, rows.iloc[0][col], rows.iloc[-1][col])
        changes[kind].append(change)
    growth = last["normalized_margin"] / first["normalized_margin"]
    return {"late": (f"from log10 𝓛 = {first['log10_loss']:.0f} (epoch {int(first['epoch']):,}) "
                     f"to the end, γ̄ grew {growth:.1f}-fold while {_changes_text(changes)}")}


def _change(col: str, a: float, b: float) -> tuple[str, float]:
    """How a robustness figure moved from ``a`` to ``b``: ``("aa", b - a)`` for an accuracy,
    ``("median_dist", per cent)`` for a median distance."""
    return ("aa", b - a) if col.startswith("aa_") else ("median_dist", 100 * (b / a - 1))


def _changes_text(changes: dict[str, list[float]]) -> str:
    aa, dist = sorted(changes["aa"]), sorted(changes["median_dist"])
    return (f"the robust accuracies changed by {aa[0]:+.3f} to {aa[-1]:+.3f} and "
            f"the median distances by {dist[0]:+.1f} % to {dist[-1]:+.1f} %")


# Which claims each document must quote: (claim maker, name pattern) per document.
QUOTED = {
    BOARD / "NOTES.md": [(grid_claims, r".*"), (cifar_claims, r".*")],
    TRAJECTORY / "NOTES.md": [(trajectory_claims, r".*"), (seed_claims, r".*")],
    ROOT / "README.md": [
        (trajectory_claims, r"^digits-cnn-deep-s[01] / (depth|margin|growth|decreases"
                            r"|largest decrease|gap at end|aa_.*L2.*)$"),
        (trajectory_claims, r"^fashion-cnn-deep-s[01] / (depth|margin|growth|late"
                            r"|aa_test_L2_1)$"),
        (seed_claims, r"^digits / final (margins|robustness)$"),
        (seed_claims, r"^fashion-mnist / final (margins|robustness|overlap)$"),
        (grid_claims, r"^.* / matched margin ratio$"),
        (grid_claims, r"^CIFAR-10 \(JPEG\) CNN / pooled / aa_t(rain|est)_L2_0.5$"),
        (cifar_claims, r"^cifar / (cifar-cnn-fast-s[0-2] / trajectory|clean test"
                       r"|certifiers skipped)$")],
}


@pytest.mark.parametrize("document", list(QUOTED), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_reading_quotes_the_tables(document: Path) -> None:
    text = document.read_text(encoding="utf-8")
    claims = {k: v for make, pattern in QUOTED[document] for k, v in make().items()
              if re.match(pattern, k)}
    assert claims, f"no figures to check for {document.name}"
    missing = {k: v for k, v in claims.items() if v not in text}
    assert not missing, f"{document.name} does not quote, as the tables give them: {missing}"


if __name__ == "__main__":
    for make in (grid_claims, cifar_claims, trajectory_claims, seed_claims):
        print(f"# {make.__name__}")
        for name, text in make().items():
            print(f"{name}: {text}")
