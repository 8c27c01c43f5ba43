"""The board's sections on uncertainty: seeds, schedules at equal compute, the pooled fit
and how every interval is computed.

Each function receives a finished table and returns a :class:`~.render.Section`; the
words of each note are generated from the numbers where they state a finding.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from .attack_sets import column_notes
from .columns import SETTINGS
from .figures import MEDIAN, FigureIndex
from .matched import matched_summary
from .pooled import COLLINEAR, MIN_POINTS
from .render import Section, Table, view
from .seeds import KEYS as SEED_KEYS
from .stats import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, EXACT_SPEARMAN_MAX_N


def seeds_section(seeds: pd.DataFrame, figures: FigureIndex,
                  texts: Mapping[str, Mapping[str, str]] | None = None) -> Section:
    """Mean and t-interval across seeds per configuration and checkpoint position.

    Args:
        seeds: :func:`marginrobust.report.seeds.seed_table`.
        figures: The key of each robustness column of the leaderboard frame.
        texts: Per settings id, what produced each measure (column notes on the page).
    """
    shown = view(seeds, [*SEED_KEYS, "position", "n_seeds", "aligned_by", "grad_evals_mean",
                         "epoch_mean", "normalized_margin",
                         *figures.select(seeds.columns, ["aa", MEDIAN])])
    most = int(seeds["n_seeds"].max()) if len(seeds) else 0
    notes = column_notes(shown.columns, seeds["settings"], dict(texts or {}), figures)
    return Section("Across seeds", [Table("", shown, "seeds", notes)], note=(
        "Runs that differ only in their seed (same dataset, model and options, schedule, "
        "rate, data subsets and precision) form a configuration (`config`). Per "
        "configuration, evaluation setting and checkpoint position: the mean over the seeds "
        "and its 95 % Student-t interval, with `n_seeds` (no interval with one seed). "
        "Checkpoints are aligned by nearest gradient-evaluation count to those of the seed "
        "with the most checkpoints (`aligned_by` says `epoch` where a run has no counts); "
        "`grad_evals_mean` is the mean count of the aligned checkpoints (the spread is in "
        f"`seeds.csv`). The most seeds of any configuration here: {most}. Every metric "
        "and figure is in `seeds.csv`."))


def matched_section(matched: pd.DataFrame, figures: FigureIndex) -> Section:
    """Schedules compared at equal gradient evaluations and at equal epochs.

    Args:
        matched: :func:`marginrobust.report.matched.matched_table`.
        figures: The key of each robustness column of the leaderboard frame.
    """
    summary = matched_summary(matched, figures.headline(matched["quantity"].unique()))
    note = ("For each pair of runs that differ only in their schedule (same dataset, model, "
            "options and seed), each run in turn is the anchor `run_a`: at its evaluated "
            "checkpoints the other run's γ̄ (interpolated in log γ̄ between its logged "
            "epochs) and robustness (interpolated linearly between its evaluated "
            "checkpoints) are read at the same gradient-evaluation count (`match` = "
            "`grad_evals`) and at the same epoch (`match` = `epoch`); nothing is "
            "extrapolated. Shown: the anchor's last matched checkpoint (`at`), the margin "
            "ratio `gamma_ratio` = γ̄(a) / γ̄(b) and the differences a − b of the AutoAttack "
            "accuracies; every checkpoint and figure is in `matched.csv`.")
    if summary.empty:
        note += " No two runs here differ only in their schedule."
    return Section("Schedules at equal compute", [Table("", summary, "matched")], note=note)


def _sentences(pooled: pd.DataFrame, figures: FigureIndex) -> str:
    rows = pooled[pooled["column"].isin(figures.select(pooled["column"], ["aa"]))]
    out = []
    for row in rows.to_dict("records"):
        setting = ", ".join(f"{k}={row[k]}" for k in SETTINGS if not pd.isna(row[k]))
        out.append(f"{row['dataset']} · {row['model']} `{row['column']}` ({setting}; "
                   f"{row['n_obs']} fitted checkpoints of {row['n_runs']} run(s)): "
                   f"{row['conclusion']}.")
    return " ".join(out)


def pooled_section(pooled: pd.DataFrame, figures: FigureIndex) -> Section:
    """The pooled fit robustness ~ a + b·log10 γ̄ + c·log10(grad_evals), with its words.

    Args:
        pooled: :func:`marginrobust.report.pooled.pooled_table`.
        figures: The key of each robustness column of the leaderboard frame.
    """
    shown = view(pooled.drop(columns=["a"]), [c for c in pooled.columns if c != "a"])
    note = ("Per dataset, model and evaluation setting, over every fitted checkpoint (training "
            "accuracy 1 or summed loss below log 2) of every run: robustness = a + b · "
            "log10 γ̄ + c · log10(grad_evals), ordinary least squares. `b` is the change per "
            "decade of margin at equal compute, `c` per decade of gradient evaluations at "
            "equal margin; brackets are 95 % intervals from standard errors clustered by run "
            "(CR1) and t(`n_runs` − 1): checkpoints of one run share a trajectory, so the "
            "runs are the independent units (with a dozen runs such intervals still cover a "
            "little under 95 %, about 89 % in a simulation in the tests). `r_regressors` is "
            "the "
            "correlation of log10 γ̄ with log10 grad_evals: above "
            f"{COLLINEAR} in absolute value the two are collinear and no fit is reported; "
            f"fewer than {MIN_POINTS} checkpoints are not fitted. The certified-radius rows "
            "are near-tautological (the Lipschitz radius is γ̄ over a Lipschitz bound).")
    sentences = _sentences(pooled, figures)
    if sentences:
        note += " " + sentences
    elif pooled.empty:
        note += " No fitted checkpoint with a positive margin and gradient-evaluation count."
    return Section("Margin or training time: the pooled fit", [Table("", shown, "pooled")],
                   note=note)


def statistics_section() -> Section:
    """How every interval, p-value and fit of the board is computed."""
    return Section("Statistics", [], note=(
        "All intervals are 95 %. Accuracies (`clean`, `aa`, `worst`, `cert`): Wilson score "
        "intervals from the row's `n` points (exact, no sampling). Median distances and the "
        "certified-radius figures: percentile bootstrap over the evaluated points, "
        f"{BOOTSTRAP_RESAMPLES:,} resamples, numpy `default_rng({BOOTSTRAP_SEED})` drawn "
        "afresh for each figure (so the board regenerates byte for byte); a median distance "
        "is the smallest median among the minimal-norm attacks, and each resample applies "
        "the same points to every attack. Spearman: two-sided p exact over every pairing up "
        f"to {EXACT_SPEARMAN_MAX_N} checkpoints, else the t approximation of "
        "`scipy.stats.spearmanr`; interval by Fisher's z with the Bonett–Wright standard "
        "error sqrt((1 + ρ²/2)/(n − 3)) (none for n ≤ 3; at |ρ| = 1 the far end is that of "
        "the nearest attainable ρ). Seeds: Student-t interval of the mean. Pooled fit: OLS "
        "with standard errors clustered by run (CR1) and t(runs − 1)."))


def figure_sections(seeds: pd.DataFrame, matched: pd.DataFrame, pooled: pd.DataFrame,
                    figures: FigureIndex,
                    texts: Mapping[str, Mapping[str, str]] | None = None) -> Sequence[Section]:
    """The seeds, matched-compute and pooled-fit sections, in the board's order.

    Args:
        seeds: :func:`~.seeds.seed_table`.
        matched: :func:`~.matched.matched_table`.
        pooled: :func:`~.pooled.pooled_table`.
        figures: The key of each robustness column of the leaderboard frame.
        texts: Per settings id, what produced each measure.
    """
    return [seeds_section(seeds, figures, texts), matched_section(matched, figures),
            pooled_section(pooled, figures)]
