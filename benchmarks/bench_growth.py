"""Growth: Evaluator time vs number of points and vs number of checkpoints, and a profile.

* Points: ``Evaluator.evaluate`` with a cheap attack set (PGD 10 steps + FMN 20 steps +
  certificates) on the digits MLP, digits' default threat grid (Linf 0.05, 0.1; L2 0.5,
  1.0), N = 250, 500, 1000 training points, timed round-robin. Linear growth means equal
  time per point; the figure is the per-point time at the largest N over that at the
  smallest.
* Checkpoints: ``evaluate_run`` on a run directory holding 2, 4 or 8 copies of
  one checkpoint of a tiny digits run (MLP width 32, 300 training images), so every
  checkpoint costs the same work and any growth beyond linear comes from the run-level
  bookkeeping (results store, per-point arrays). The ``eval/`` folder is removed before
  every call (untimed), since a rerun would otherwise skip everything already done.
* A cProfile of one ``evaluate_run`` over 8 checkpoints: the top 10 entries by cumulative
  time (printed and saved in results.json).
* Bookkeeping alone: the ``ResultsStore`` calls ``evaluate_run`` makes per (checkpoint,
  split) — ``done()``, ``load_arrays``, ``save_arrays``, ``add`` — with synthetic records
  (24 per split, as PGD + FMN + certificates on 4 budgets give) for 8 and 64 checkpoints,
  no attacks. ``add`` appends the new records unless one replaces a stored figure, so
  the cost per checkpoint should stay flat as the store grows; this row checks it.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from marginrobust import (
    EvalRecord,
    Evaluator,
    ResultsStore,
    RunSpec,
    TrainConfig,
    evaluate_run,
    list_checkpoints,
    train_run,
)
from marginrobust.evaluate.store import ArrayKey

from .common import Row, fmt_s, interleave, reps_for, row, trained_digits_mlp

LINEAR_TARGET = 1.10
CHEAP_ATTACKS: dict[str, dict[str, Any]] = {"pgd": {"steps": 10}, "fmn": {"steps": 20}}


def _points_rows(quick: bool) -> list[Row]:
    model, data = trained_digits_mlp()
    sizes = (125, 250, 500) if quick else (250, 500, 1000)
    ev = Evaluator(attacks=("pgd", "fmn"), certify=True, n=max(sizes), seed=0, device="cpu",
                   attack_options=CHEAP_ATTACKS)
    threats = ev.threats_for("digits")
    fns = {}
    for n in sizes:
        x, y = data.x_train[:n], data.y_train[:n]
        fns[str(n)] = (lambda x=x, y=y: ev.evaluate(model, x, y, "train", threats=threats))
    # Largest first, so the reference of the ratios (the last) is the smallest N.
    t = interleave(dict(reversed(list(fns.items()))), reps=reps_for(quick, 5))
    small, big = sizes[0], sizes[-1]
    per_point = {n: t[str(n)] / n for n in sizes}
    ratio = t["ratios"][str(big)] * small / big
    detail = "; ".join(f"N={n}: {fmt_s(t[str(n)])} = {per_point[n] * 1e3:.2f} ms/point"
                       for n in sizes)
    mid = sizes[1]
    return [row(f"growth: Evaluator pgd+fmn+certify (mlp digits, N={small}..{big})",
                f"time per point N={big} / N={small}", ratio, f"<= {LINEAR_TARGET}",
                ratio <= LINEAR_TARGET,
                f"{detail}; N={mid}/N={small} per point "
                f"{t['ratios'][str(mid)] * small / mid:.3f}")]


def _make_runs(root: Path, counts: tuple[int, ...]) -> dict[int, Path]:
    """A tiny trained run, and one run directory per count holding that many checkpoint copies."""
    src = root / "src"
    torch.manual_seed(0)
    train_run(src, RunSpec(model="mlp", model_kwargs={"widths": [32]}, dataset="digits",
                           train_subset=300, checkpoint_decades=0.0,
                           train=TrainConfig(epochs=20, device="cpu")))
    last = list_checkpoints(src)[-1]
    runs = {}
    for k in counts:
        run = root / f"ckpt{k}"
        (run / "checkpoints").mkdir(parents=True)
        for i in range(k):
            shutil.copy(last, run / "checkpoints" / f"epoch-{i + 1:06d}.pt")
        runs[k] = run
    return runs


def _short(file: str) -> str:
    parts = Path(file).parts
    for anchor in ("marginrobust", "site-packages"):
        if anchor in parts:
            i = parts.index(anchor)
            return str(Path(*parts[i + (anchor == "site-packages"):]))
    return Path(file).name


def _profile(ev: Evaluator, run: Path) -> tuple[list[dict[str, Any]], str]:
    shutil.rmtree(run / "eval", ignore_errors=True)
    prof = cProfile.Profile()
    prof.runcall(evaluate_run, ev, run)
    stats = pstats.Stats(prof)
    stats.sort_stats("cumulative")
    entries = []
    # fcn_list is the sorted order; the stats table holds (calls, ncalls, tottime, cumtime).
    for func in stats.fcn_list[:10]:  # type: ignore[attr-defined]
        cc, nc, tt, ct, _ = stats.stats[func]  # type: ignore[attr-defined]
        file, line, name = func
        # Paths relative to the installed package's parent, so results name no machine folder.
        entries.append({"function": name, "where": f"{Path(file).name}:{line}",
                        "file": _short(file), "ncalls": nc, "tottime_s": tt, "cumtime_s": ct})
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(10)
    return entries, buf.getvalue()


def _checkpoint_rows(quick: bool) -> list[Row]:
    counts = (2, 4, 8)
    ev = Evaluator(attacks=("pgd", "fmn"), certify=True, n=50, seed=0, device="cpu",
                   attack_options=CHEAP_ATTACKS)
    with tempfile.TemporaryDirectory(prefix="marginrobust-bench-") as tmp:
        runs = _make_runs(Path(tmp), counts)

        def clear(name: str) -> None:
            shutil.rmtree(runs[int(name)] / "eval", ignore_errors=True)

        fns = {str(k): (lambda run=runs[k]: evaluate_run(ev, run)) for k in reversed(counts)}
        t = interleave(fns, reps=reps_for(quick, 5), setup=clear)
        profile, by_tottime = _profile(ev, runs[counts[-1]])
    lo, hi = counts[0], counts[-1]
    ratio = t["ratios"][str(hi)] * lo / hi
    per = {k: t[str(k)] / k for k in counts}
    slope = (t[str(hi)] - t[str(lo)]) / (hi - lo)
    detail = "; ".join(f"{k}: {fmt_s(t[str(k)])} = {fmt_s(per[k])}/ckpt" for k in counts)
    return [row("growth: evaluate_run vs checkpoints (mlp-32 digits, 2 splits x 50 pts)",
                f"time per checkpoint {hi} ckpts / {lo} ckpts", ratio, f"<= {LINEAR_TARGET}",
                ratio <= LINEAR_TARGET,
                f"{detail}; marginal {fmt_s(slope)}/ckpt",
                profile=profile, profile_tottime=by_tottime)]


def _store_session(root: Path, checkpoints: int, per_split: int = 24, points: int = 50) -> None:
    """What evaluate_run asks of the ResultsStore, without any attack."""
    shutil.rmtree(root / "eval", ignore_errors=True)
    store = ResultsStore(root)
    rng = np.random.default_rng(0)
    for c in range(checkpoints):
        name = f"epoch-{c:06d}"
        for split in ("test", "train"):
            store.done()
            arrays = store.load_arrays(name)
            arrays.update({ArrayKey(split, f"m{i}", None, None, "values", points, 0, "{}"):
                           rng.random(points) for i in range(per_split)})
            records = [EvalRecord(checkpoint=name, split=split, method=f"m{i % 6}",
                                  norm="L2" if i % 2 else "Linf", eps=0.1 * (i // 6 + 1),
                                  n=points, clean_acc=0.9, robust_acc=0.5, epoch=c,
                                  median_distance=0.3, min_distance=0.1, seed=0, config="{}")
                       for i in range(per_split)]
            store.save_arrays(name, arrays)
            store.add(records)


def _store_rows(quick: bool) -> list[Row]:
    small, big = (8, 32) if quick else (8, 64)
    with tempfile.TemporaryDirectory(prefix="marginrobust-bench-") as tmp:
        lib = Path(tmp) / "library"
        t = interleave({str(big): lambda: _store_session(lib, big),
                        str(small): lambda: _store_session(lib, small)},
                       reps=reps_for(quick, 3))
    ratio = t["ratios"][str(big)] * small / big
    label = f"growth: ResultsStore bookkeeping of evaluate_run ({small} vs {big} ckpts, no attacks)"
    figure = f"time per checkpoint {big} ckpts / {small} ckpts"
    return [row(label, figure, ratio, f"<= {LINEAR_TARGET}", ratio <= LINEAR_TARGET,
                f"{fmt_s(t[str(small)] / small)}/ckpt at {small}, "
                f"{fmt_s(t[str(big)] / big)}/ckpt at {big} (2 splits x 24 records each)")]


def run(quick: bool = False) -> list[Row]:
    """Rows: per-point, per-checkpoint and bookkeeping time ratios (profile attached)."""
    return _points_rows(quick) + _checkpoint_rows(quick) + _store_rows(quick)
