"""What the commands print for a reader: bench's short summary, compare's marking of
differences between figures of different evaluation settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from marginrobust.cli import main
from marginrobust.errors import UserError
from marginrobust.report.compare import OTHER_SETTINGS, compare, format_compare

TRAIN = ["train", "--model", "mlp", "--model-opt", "widths=[8]", "--train-subset", "60",
         "--test-subset", "30", "--quiet", "--device", "cpu", "--epochs", "2"]
EVAL = ["--norms", "L2", "--eps-l2", "0.5", "--n", "10", "--quiet", "--device", "cpu",
        "--no-certify", "--split", "test"]


def _invoke(args: list[str]):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> tuple[Path, Path]:
    """Two runs evaluated with different attack sets (FMN alone; FMN and PGD)."""
    root = tmp_path_factory.mktemp("cmp")
    a, b = root / "a", root / "b"
    for run, attacks in ((a, "fmn"), (b, "fmn,pgd")):
        assert _invoke([*TRAIN, "--out", run]).exit_code == 0
        result = _invoke(["eval", run, "--attacks", attacks, *EVAL])
        assert result.exit_code == 0, result.output
    return a, b


def test_compare_marks_differences_of_other_settings_in_the_table(two_runs):
    a, b = two_runs
    table = compare([a, b])
    marked = [c for c in table.columns if c.endswith(OTHER_SETTINGS)]
    assert marked == [f"Δ {table.columns[1]}{OTHER_SETTINGS}"]
    assert table.attrs["other_settings"] is True
    text = format_compare(table)
    assert "WARNING" in text and "--settings" in text
    # The same runs compared with themselves: like with like, nothing marked.
    same = compare([a, a])
    assert not [c for c in same.columns if c.endswith(OTHER_SETTINGS)]
    assert same.attrs["other_settings"] is False
    assert "WARNING" not in format_compare(same)


def test_compare_settings_picks_common_settings_or_says_which_exist(two_runs):
    a, b = two_runs
    items = compare([a, b]).attrs["items"]
    first, second = items[0]["settings"], items[1]["settings"]
    assert first != second
    with pytest.raises(UserError, match=f"not evaluated with settings {first}"):
        compare([a, b], settings=first)
    result = _invoke(["compare", a, b, "--settings", first])
    assert result.exit_code == 2 and f"it has {second}" in result.output


def test_bench_prints_one_row_per_checkpoint_and_where_the_board_is(tmp_path):
    result = _invoke(["bench", "--model", "mlp", "--model-opt", "widths=[8]", "--epochs", "2",
                      "--train-subset", "60", "--test-subset", "30", "--n", "10",
                      "--attacks", "autoattack,fmn", "--aa-attacks", "apgd-ce", "--norms", "L2",
                      "--eps-l2", "0.5", "--device", "cpu",
                      "--out", tmp_path / "run", "--leaderboard", tmp_path / "board",
                      "--quiet"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("AutoAttack (AA)"))
    header, rule = lines[start + 1], lines[start + 2]
    assert header.split()[:5] == ["epoch", "log10", "loss", "norm.", "margin"]
    assert header.split()[5:] == ["AA", "L2", "0.5", "cert", "L2", "0.5"]
    assert set(rule) <= {"-", " "}
    rows = lines[start + 3:]
    table = [line for line in rows if line[:1].isdigit() and "records" not in line]
    checkpoints = sorted((tmp_path / "run" / "checkpoints").glob("epoch-*.pt"))
    assert len(table) == len(checkpoints)
    assert any("records (every split" in line for line in rows)
    assert lines[-1] == f"leaderboard: {tmp_path / 'board' / 'README.md'}"
    assert len(lines) < 40


def test_eval_certify_names_the_certifiers_it_runs(two_runs):
    a, _ = two_runs
    result = _invoke(["eval", a, "--attacks", "fmn", *EVAL[:-3], "--certify", "crown",
                      "--split", "test"])
    assert result.exit_code == 0, result.output
    from marginrobust.evaluate.store import ResultsStore

    methods = {r.method for r in ResultsStore(a).records}
    assert "certify-crown" in methods and "certify-alpha-crown" not in methods
    for args, words in ((["--certify", "nope"], "unknown certifier 'nope'"),
                        (["--certify", "crown", "--no-certify"], "contradict")):
        bad = _invoke(["eval", a, "--attacks", "fmn", *EVAL[:-3], "--split", "test", *args])
        assert bad.exit_code == 2 and words in bad.output, bad.output


def test_the_board_never_takes_a_certifiers_radii_for_attack_distances():
    from marginrobust.report.methods import minimal_norm_methods

    records = [{"method": m, "median_distance": 0.1}
               for m in ("certify-crown", "certify-alpha-crown", "certify-exact",
                         "certify-lipschitz", "certified", "worst", "fmn")]
    assert minimal_norm_methods(records) == frozenset({"fmn"})
