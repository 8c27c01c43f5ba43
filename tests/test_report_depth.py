"""Deep trajectories (marginrobust.report.depth): which runs are deep, the depth table's
margins, gap and counts of γ̃ decreases, and the figure."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from marginrobust.report.depth import (
    DEEP_LOG10_LOSS,
    deep_runs,
    depth_plot,
    depth_section,
    depth_seeds_plot,
    depth_table,
)
from marginrobust.report.figures import MEDIAN, Figure, FigureIndex


def _metrics() -> pd.DataFrame:
    # 41 accepted epochs: unfitted for the first 5 (log10 𝓛 ≥ log10 log 2), then 20 decades
    # deeper per epoch; γ̃ rises except at epochs 12, 13 and 30, γ̄ stays above it.
    epochs = np.arange(41)
    log10_loss = np.where(epochs < 5, 1.0 - epochs * 0.2, -20.0 * (epochs - 4))
    smooth = 1e-4 * (1 - np.exp(-epochs / 10.0))
    for dip in (12, 13, 30):
        smooth[dip] = smooth[dip - 1] * 0.99
    normal = smooth * (1 + 0.5 / (1 + epochs))
    return pd.DataFrame({"epoch": epochs, "log10_loss": log10_loss,
                         "normalized_margin": normal, "smoothed_margin": smooth,
                         "grad_evals": epochs * 10, "wall_s": epochs * 1.5})


# The keys of the robustness columns _frame writes.
INDEX = FigureIndex.of([Figure("aa", "test", "L2", 0.5), Figure(MEDIAN, "test", "L2")],
                       {0.5: "0.5"})


def _frame(metrics: pd.DataFrame, run: str, checkpoints: list[int]) -> pd.DataFrame:
    rows = metrics.set_index("epoch").loc[checkpoints].reset_index()
    p = np.linspace(0.2, 0.6, len(rows))
    return pd.DataFrame({
        "run": run, "dataset": "digits", "model": "cnn", "checkpoint":
            [f"epoch-{e:06d}" for e in rows["epoch"]],
        "n": 100, "seed": 0, "settings": "s1", "epoch": rows["epoch"],
        "grad_evals": rows["grad_evals"], "train_wall_s": rows["wall_s"],
        "log10_loss": rows["log10_loss"], "train_acc": 1.0,
        "normalized_margin": rows["normalized_margin"],
        "smoothed_margin": rows["smoothed_margin"],
        "aa_test_L2_0.5": p, "aa_test_L2_0.5_lo": p - 0.1, "aa_test_L2_0.5_hi": p + 0.1,
        "median_dist_test_L2": p * 2, "median_dist_test_L2_lo": p * 2 - 0.1,
        "median_dist_test_L2_hi": p * 2 + 0.1})


def test_only_runs_at_the_depth_threshold_are_deep() -> None:
    metrics = _metrics()
    deep = _frame(metrics, "deep", [0, 10, 40])
    shallow = _frame(metrics, "shallow", [0, 5]).assign(log10_loss=[1.0, DEEP_LOG10_LOSS + 1])
    edge = _frame(metrics, "edge", [0, 5]).assign(log10_loss=[1.0, DEEP_LOG10_LOSS])
    assert deep_runs(pd.concat([deep, shallow, edge])) == ["deep", "edge"]
    assert deep_runs(deep.iloc[:0]) == []


def test_depth_table_counts_decreases_between_checkpoints() -> None:
    metrics = _metrics()
    frame = _frame(metrics, "deep", [0, 10, 20, 40])
    table = depth_table(frame, {"deep": metrics})
    assert list(table["epoch"]) == [0, 10, 20, 40]
    # Fitted epochs are 5..40; per interval (previous checkpoint, this one].
    assert list(table["fitted_epochs"]) == [0, 6, 10, 20]
    # Epoch 5 is the first fitted one: it has no predecessor to fall from.
    assert list(table["smoothed_decreases"]) == [0, 0, 2, 1]
    # Each dip is 1 % of the epoch before's γ̃.
    np.testing.assert_allclose(table["largest_decrease"].iloc[1:], [0.0, 0.01, 0.01])
    g = metrics.set_index("epoch").loc[[10, 20, 40], "normalized_margin"].to_numpy()
    s = metrics.set_index("epoch").loc[[10, 20, 40], "smoothed_margin"].to_numpy()
    np.testing.assert_allclose(table["relative_gap"].iloc[1:], (g - s) / g, rtol=1e-12)
    assert np.isnan(table["relative_gap"].iloc[0])  # γ̄ = 0 at epoch 0
    section = depth_section(table, ["plots/deep_depth.png"])
    assert section is not None and "3 of 36" in section.note
    assert depth_section(depth_table(frame.iloc[:0], {}), []) is None


def test_depth_table_uses_one_row_per_checkpoint_and_skips_runs_without_metrics() -> None:
    metrics = _metrics()
    frame = _frame(metrics, "deep", [0, 40])
    twice = pd.concat([frame, frame.assign(settings="s2")])
    assert len(depth_table(twice, {"deep": metrics})) == 2
    assert depth_table(frame, {}).empty


def test_depth_plot_writes_a_png_or_nothing(tmp_path) -> None:
    metrics = _metrics()
    frame = _frame(metrics, "deep", [0, 10, 40])
    out = depth_plot(frame, INDEX, metrics, tmp_path / "deep.png", "digits · cnn")
    assert out is not None and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    unfitted = metrics.assign(log10_loss=5.0)
    assert depth_plot(frame, INDEX, unfitted, tmp_path / "none.png", "t") is None
    assert not (tmp_path / "none.png").exists()


def test_seeds_plot_draws_two_runs_or_nothing(tmp_path) -> None:
    metrics = _metrics()
    other = metrics.assign(normalized_margin=metrics["normalized_margin"] * 1.1)
    frame = pd.concat([_frame(metrics, "deep-s0", [0, 10, 40]),
                       _frame(other, "deep-s1", [0, 20, 40]).assign(seed=1)])
    tables = {"deep-s0": metrics, "deep-s1": other}
    out = depth_seeds_plot(frame, INDEX, tables, ["deep-s0", "deep-s1"], tmp_path / "s.png", "t")
    assert out is not None and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # One run with fitted epochs is not a comparison of seeds: nothing is written.
    unfitted = {"deep-s0": metrics, "deep-s1": other.assign(log10_loss=5.0)}
    assert depth_seeds_plot(frame, INDEX, unfitted, ["deep-s0", "deep-s1"], tmp_path / "n.png",
                            "t") is None
    assert depth_seeds_plot(frame, INDEX, tables, ["deep-s0"], tmp_path / "n.png", "t") is None
    assert not (tmp_path / "n.png").exists()


@pytest.mark.parametrize("dips", [(), (12, 13, 30)])
def test_decrease_count_matches_a_direct_count(dips: tuple[int, ...]) -> None:
    metrics = _metrics()
    if not dips:
        metrics["smoothed_margin"] = np.sort(metrics["smoothed_margin"].to_numpy())
    frame = _frame(metrics, "deep", [0, 40])
    table = depth_table(frame, {"deep": metrics})
    fitted = metrics[metrics["log10_loss"] < np.log10(np.log(2))]["smoothed_margin"].to_numpy()
    assert int(table["smoothed_decreases"].sum()) == int((np.diff(fitted) < 0).sum())
