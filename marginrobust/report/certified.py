"""Certified robustness per certifier: a long table, its margin link and its board section.

One row of :func:`certified_table` per run, checkpoint, split, norm, ε, evaluation points
(``n``, ``seed``) and certifier (``lipschitz``, ``ibp``, ``crown``, ``alpha-crown``,
``exact``, and ``any``: the points certified by any certifier that ran). Its figures:

* ``certified_acc``: the fraction of the ``n`` points certified at ε (misclassified points
  count as not certified), with its 95 % Wilson interval (``_lo``, ``_hi``);
* ``median_radius``: the certifier's median per-point radius in the norm (0 for
  misclassified points; for ``exact`` the proven lower bound);
* ``attack_robust_acc``: the fraction no attack broke at ε (the evaluator's ``worst``
  record; of several attack sets, the strongest, i.e. the lowest);
* ``undecided``: ``attack_robust_acc`` minus the ``any`` certified accuracy: the points no
  attack broke and no certificate proved. Where it is 0 the robust accuracy at ε is known
  exactly; elsewhere it lies between the two.
* ``skipped``: why a certifier did not run (e.g. CROWN or exact above their default size).

The records are read as the report's loader gives them; no column name is parsed.
:func:`certified_links` rank-correlates the normalized margin with each certifier's median
radius across a run's checkpoints (:func:`.stats.spearman_test`), the board's link of
margin to certified robustness per certifier.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from .columns import bounds, fitted, split_rank
from .correlations import margin_link
from .loader import RunData
from .render import Section, Table
from .stats import wilson_interval
from .tables import run_identity

CERTIFIER_ORDER = ("lipschitz", "ibp", "crown", "alpha-crown", "exact", "any")
_PREFIX = "certify-"
# The evaluator's record of the points certified by any certifier that ran.
_ANY = "certified"
_WORST = "worst"
KEY = ("run", "dataset", "model", "schedule", "checkpoint", "epoch", "log10_loss",
       "train_acc", "normalized_margin", "split", "norm", "eps", "n", "seed")
CERTIFIED_COLUMNS = (*KEY, "certifier", "certified_acc", *bounds("certified_acc"),
                     "median_radius", "attack_robust_acc", "undecided", "skipped")
LINK_COLUMNS = ("run", "dataset", "model", "split", "norm", "certifier", "n_checkpoints",
                "spearman", *bounds("spearman"), "spearman_p", "n_fitted", "spearman_fitted",
                *bounds("spearman_fitted"), "spearman_fitted_p")


def _certifier(method: str) -> str | None:
    if method == _ANY:
        return "any"
    if method.startswith(_PREFIX):
        return method[len(_PREFIX):]
    return None


def certified_table(runs: Sequence[RunData]) -> pd.DataFrame:
    """The long table of certified figures of loaded runs (module docstring).

    Args:
        runs: Runs from :func:`marginrobust.report.loader.load_runs`.

    Returns:
        Columns :data:`CERTIFIED_COLUMNS`, rows in run order, then epoch, split (test
        first), norm, ε and :data:`CERTIFIER_ORDER`. A later record of the same key and
        certifier (a rerun with other options) replaces an earlier one.
    """
    rows: list[dict[str, Any]] = []
    for run_index, run in enumerate(runs):
        ident = run_identity(run)
        cells: dict[tuple[Any, ...], dict[str, Any]] = {}
        worst: dict[tuple[Any, ...], float] = {}
        for rec in run.records:
            key = (rec["checkpoint"], rec["split"], rec["norm"], float(rec["eps"]), rec["n"],
                   rec["seed"])
            if rec["method"] == _WORST and rec["robust_acc"] is not None:
                worst[key] = min(worst.get(key, 1.0), rec["robust_acc"])
                continue
            name = _certifier(rec["method"])
            if name is None:
                continue
            cells[(*key, name)] = {
                "run": ident["run"], "dataset": ident["dataset"], "model": ident["model"],
                "schedule": ident["schedule"], "checkpoint": rec["checkpoint"],
                "epoch": rec.get("epoch"), "log10_loss": rec.get("log10_loss"),
                "train_acc": rec.get("train_acc"),
                "normalized_margin": rec.get("normalized_margin"), "split": rec["split"],
                "norm": rec["norm"], "eps": float(rec["eps"]), "n": rec["n"],
                "seed": rec["seed"], "certifier": name, "certified_acc": rec["robust_acc"],
                "median_radius": rec["median_distance"], "skipped": rec["skipped"] or "",
                "_order": run_index}
        for (*key, _name), row in cells.items():
            lo, hi = wilson_interval(row["certified_acc"], row["n"])
            row["certified_acc_lo"], row["certified_acc_hi"] = lo, hi
            attack = worst.get(tuple(key))
            row["attack_robust_acc"] = attack
            any_row = cells.get((*key, "any"))
            certified = None if any_row is None else any_row["certified_acc"]
            row["undecided"] = (None if attack is None or certified is None
                                else max(attack - certified, 0.0))
            rows.append(row)
    rows.sort(key=lambda r: (r["_order"], r["epoch"] if r["epoch"] is not None else -1,
                             r["checkpoint"], split_rank(r["split"]), r["norm"], r["eps"],
                             r["n"] or 0, r["seed"] if r["seed"] is not None else -1,
                             CERTIFIER_ORDER.index(r["certifier"])
                             if r["certifier"] in CERTIFIER_ORDER else len(CERTIFIER_ORDER),
                             r["certifier"]))
    out = pd.DataFrame(rows, columns=list(CERTIFIED_COLUMNS))
    for col in ("epoch", "n", "seed"):
        out[col] = pd.to_numeric(out[col]).astype("float64").astype("Int64")
    for col in ("log10_loss", "train_acc", "normalized_margin", "eps", "certified_acc",
                *bounds("certified_acc"), "median_radius", "attack_robust_acc", "undecided"):
        out[col] = pd.to_numeric(out[col]).astype("float64")
    return out


def certified_links(table: pd.DataFrame) -> pd.DataFrame:
    """Per run, split, norm, points and certifier: Spearman's ρ across checkpoints of the
    normalized margin with the median certified radius, over every checkpoint and over the
    fitted ones (training accuracy 1 or summed loss below log 2).

    Args:
        table: :func:`certified_table`.

    Returns:
        Columns :data:`LINK_COLUMNS`; ρ is NaN with fewer than 3 checkpoints or a constant
        side.
    """
    rows = []
    radii = table[table["skipped"] == ""].drop_duplicates(
        ["run", "checkpoint", "split", "norm", "n", "seed", "certifier"])
    radii = radii[(radii["certifier"] != "any") & radii["median_radius"].notna()]
    keys = ["run", "split", "norm", "n", "seed", "certifier"]
    for key, sub in radii.groupby(keys, sort=False, dropna=False):
        setting = dict(zip(keys, key))
        fit = sub[fitted(sub)]
        rows.append({**{k: setting[k] for k in ("run", "split", "norm", "certifier")},
                     "dataset": sub["dataset"].iloc[0], "model": sub["model"].iloc[0],
                     **margin_link(sub, fit, "median_radius")})
    out = pd.DataFrame(rows, columns=list(LINK_COLUMNS))
    for col in ("n_checkpoints", "n_fitted"):
        out[col] = pd.to_numeric(out[col]).astype("float64").astype("Int64")
    return out


def _last_checkpoints(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of each run's last evaluated checkpoint on the test points."""
    test = table[table["split"] == "test"]
    if test.empty:
        return test
    last = test.groupby("run", sort=False)["epoch"].transform("max")
    return test[test["epoch"] == last]


def certified_section(table: pd.DataFrame, links: pd.DataFrame) -> Section | None:
    """The board's section on certified robustness per certifier (None without rows).

    Args:
        table: :func:`certified_table`.
        links: :func:`certified_links`.
    """
    if table.empty:
        return None
    shown = _last_checkpoints(table)
    shown = shown[shown["skipped"] == ""]
    wide = shown.pivot_table(index=["run", "epoch", "norm", "eps", "n"], columns="certifier",
                             values="certified_acc", aggfunc="last", sort=False)
    wide = wide[[c for c in CERTIFIER_ORDER if c in wide.columns]]
    extra = shown.drop_duplicates(["run", "epoch", "norm", "eps", "n"]).set_index(
        ["run", "epoch", "norm", "eps", "n"])[["attack_robust_acc", "undecided"]]
    summary = wide.join(extra).reset_index()
    ran = sorted(set(shown["certifier"]) - {"any"}, key=CERTIFIER_ORDER.index)
    skipped = table.loc[table["skipped"] != "", ["certifier", "skipped"]].drop_duplicates()
    why = "; ".join(f"{r.certifier}: {r.skipped}" for r in skipped.itertuples())
    note = (
        "Certified accuracy per certifier at each run's last evaluated checkpoint, on the "
        "test points (`n`), beside the accuracy no attack broke (`attack_robust_acc`, the "
        "evaluator's worst case over its attacks) and the fraction of points neither broken "
        "nor certified (`undecided`; where it is 0, the robust accuracy at ε is known "
        "exactly). `any`: certified by any certifier that ran. Certifiers that ran here: "
        f"{', '.join(ran) or 'none'}. Every checkpoint, split and certifier, with 95 % "
        "Wilson intervals and median radii, is in `certified.csv`; the second table is "
        "Spearman's ρ across checkpoints of the normalized margin with each certifier's "
        "median radius (`certified_links.csv`; `_fitted`: over the fitted checkpoints). The "
        "Lipschitz radius is γ̄ over a Lipschitz bound for these homogeneous nets, so its "
        "link follows the margin by construction; the bound-propagation and exact radii "
        "do not.")
    if why:
        note += f" Not run: {why}."
    shown_links = links[links["split"] == "test"].drop(columns=["dataset", "model", "split"])
    return Section("Certified robustness by certifier",
                   [Table("", summary, "certified"),
                    Table("Margin and certified radius", shown_links, "certified_links")],
                   note=note)
