"""Write a leaderboard: tables, link statistics, figures and pages, into a board folder.

The one function that composes the report's layers: read the runs (loader), build the
tables of each topic (seeds, matched compute, pooled fit, links, depth, certified), draw
the figures, put the topics' sections in the board's order (with the statistics section,
which belongs to no one topic), render the pages and write every file atomically with the
umask's permissions. It writes only into a folder it may write into
(:mod:`marginrobust.report.guard`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from ..io import atomic_write_text
from .attack_sets import setting_texts
from .certified import certified_links, certified_section, certified_table
from .columns import slug
from .correlations import link_statistics, links_section
from .depth import deep_runs, depth_plot, depth_section, depth_seeds_plot, depth_table
from .figures import FigureIndex
from .formatting import json_records
from .guard import PLOTS_DIR, check_board_folder, finish_board
from .intervals import with_intervals
from .labels import group_titles
from .loader import load_all_distances, load_all_radii, load_runs
from .matched import matched_section, matched_table
from .methods import minimal_norm_methods
from .plots import write_plots
from .pooled import pooled_section, pooled_table
from .render import Section, group_sections, html_page, markdown, settings_section
from .run_groups import RunConfig, run_configs
from .seeds import seed_table, seeds_section
from .stats import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, EXACT_SPEARMAN_MAX_N
from .tables import build_tables

NOTES = "NOTES.md"


def portable_run_dir(run_dir: str | Path, out_dir: str | Path) -> str:
    """A run folder as the board names it: relative to the board, never a machine path.

    Args:
        run_dir: The run folder.
        out_dir: The board folder.

    Returns:
        ``runs/<name>`` for a published run, ``../…`` for one elsewhere, or the folder's name
        where no relative path exists (another drive).
    """
    try:
        rel = os.path.relpath(Path(run_dir).resolve(), Path(out_dir).resolve())
    except ValueError:
        return Path(run_dir).resolve().name
    return Path(rel).as_posix()


def _present(section: Section | None) -> list[Section]:
    return [] if section is None else [section]


def _depth_plots(frame: pd.DataFrame, figures: FigureIndex, metrics: dict[str, pd.DataFrame],
                 plots_dir: Path,
                 titles: dict[tuple[str, str], str],
                 configs: Mapping[str, RunConfig]) -> list[Path]:
    # One figure per deep run (marginrobust.report.depth), named after the run; then one
    # per configuration with several deep seeds, named after its first run.
    def group(rows: pd.DataFrame) -> str:
        key = (str(rows["dataset"].iloc[0]), str(rows["model"].iloc[0]))
        return titles.get(key, " · ".join(key))

    out = []
    seeds: dict[str, list[str]] = {}
    for run in deep_runs(frame):
        rows = frame[frame["run"] == run]
        path = depth_plot(rows, figures, metrics[run], plots_dir / f"{slug(run)}_depth.png",
                          f"{group(rows)} — {run}")
        if path is not None:
            out.append(path)
        if run in configs:
            seeds.setdefault(configs[run].config, []).append(run)
    for runs in seeds.values():
        if len(runs) < 2:
            continue
        rows = frame[frame["run"].isin(runs)]
        path = depth_seeds_plot(rows, figures, metrics, runs,
                                plots_dir / f"{slug(runs[0])}_depth_seeds.png",
                                f"{group(rows)} — {configs[runs[0]].description}")
        if path is not None:
            out.append(path)
    return out


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


def write_leaderboard(run_dirs: Sequence[Path | str], out_dir: Path | str, force: bool = False,
                      on_corrupt: str = "error") -> dict[str, Path]:
    """Write the leaderboard of some runs: tables, link statistics, figures and pages.

    Files in ``out_dir``: ``leaderboard.csv`` (every column; inf kept as ``inf``; counts as
    integers; ``run_dir`` relative to ``out_dir``; 95 % intervals in ``_lo`` / ``_hi``
    columns, :mod:`~marginrobust.report.intervals`), ``leaderboard.json`` (records, strict
    JSON: missing and infinite numbers are null), ``links.csv``
    (:func:`~marginrobust.report.correlations.link_statistics`), ``seeds.csv`` (means across seeds,
    :mod:`~marginrobust.report.seeds`), ``matched.csv`` (schedules at equal compute,
    :mod:`~marginrobust.report.matched`), ``pooled.csv`` (margin against training time,
    :mod:`~marginrobust.report.pooled`), ``depth.csv`` (runs trained below 10^-100, per
    checkpoint against the depth of the loss, :mod:`~marginrobust.report.depth`; a figure
    each), ``certified.csv`` and ``certified_links.csv`` (certified accuracy and radius per
    certifier, long format, and their rank link with the margin,
    :mod:`~marginrobust.report.certified`), ``settings.csv`` (the attack
    options behind each ``settings`` id), ``README.md`` (per (dataset, model) compact tables
    and figures, then the seeds, matched-compute, pooled-fit, settings and link tables and
    how the statistics are computed; the text of a hand-written ``NOTES.md``
    in ``out_dir``, if any, goes after its introduction), ``index.html`` (the same, notes
    included, each robustness header naming its attack set, self-contained, sortable by
    clicking a header or with ``#sort=COLUMN:desc``),
    ``plots/*.png`` and the marker ``.marginrobust-board.json`` listing them. Files a
    previous write left that this one does not produce are removed.

    Args:
        run_dirs: Run folders.
        out_dir: The board folder (created).
        force: Write even into a non-empty folder the leaderboard did not write.
        on_corrupt: ``error`` or ``warn``: what a corrupt line in the middle of a run's
            ``metrics.jsonl`` or ``records.jsonl`` does.

    Returns:
        ``{path relative to out_dir: path}`` of every file written.

    Raises:
        UserError: The folder may not be written into, a run folder is missing or damaged.
    """
    out = Path(out_dir)
    check_board_folder(out, force)
    runs = load_runs(run_dirs, on_corrupt)
    minimal = minimal_norm_methods(r for run in runs for r in run.records)
    tables = build_tables(runs, minimal)
    distances = load_all_distances(runs, minimal)
    figures = tables.figures
    frame = with_intervals(tables.frame, figures, distances, load_all_radii(runs))
    links = link_statistics(frame, figures)
    certified = certified_table(runs)
    certified_rank = certified_links(certified)
    metrics = {run.label: pd.DataFrame(run.metrics) for run in runs}
    configs = run_configs(runs)
    seeds, pooled = seed_table(frame, figures, configs), pooled_table(frame, figures)
    matched = matched_table(frame, figures, metrics, configs)
    titles = group_titles(frame, runs)
    out.mkdir(parents=True, exist_ok=True)
    plots = write_plots(frame, figures, metrics, distances, out / PLOTS_DIR, titles, seeds)
    depth = depth_table(frame, metrics)
    depth_pngs = _depth_plots(frame, figures, metrics, out / PLOTS_DIR, titles, configs)
    words = setting_texts(tables.settings, minimal)
    sections = [*group_sections(frame, figures, plots, out, words, titles),
                *figure_sections(seeds, matched, pooled, figures, words),
                *_present(depth_section(depth, [p.relative_to(out).as_posix()
                                                for p in depth_pngs])),
                settings_section(tables.settings),
                links_section(links),
                *_present(certified_section(certified, certified_rank)),
                statistics_section()]
    notes = (out / NOTES).read_text(encoding="utf-8") if (out / NOTES).exists() else ""
    published = frame.assign(run_dir=[portable_run_dir(p, out) for p in frame["run_dir"]])
    texts = {"leaderboard.csv": published.to_csv(index=False),
             "leaderboard.json": json.dumps(json_records(published), indent=1, allow_nan=False,
                                            ensure_ascii=False) + "\n",
             "links.csv": links.to_csv(index=False),
             "seeds.csv": seeds.to_csv(index=False),
             "matched.csv": matched.to_csv(index=False),
             "pooled.csv": pooled.to_csv(index=False),
             "depth.csv": depth.to_csv(index=False),
             "settings.csv": tables.settings.to_csv(index=False),
             "certified.csv": certified.to_csv(index=False),
             "certified_links.csv": certified_rank.to_csv(index=False),
             "README.md": markdown(sections, len(runs), notes),
             "index.html": html_page(sections, len(runs), notes)}
    written = {}
    for name, text in texts.items():
        atomic_write_text(out / name, text)
        written[name] = out / name
    for paths in [*plots.values(), depth_pngs]:
        written.update({p.relative_to(out).as_posix(): p for p in paths})
    finish_board(out, written)
    return written
