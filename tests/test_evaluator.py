"""The evaluation engine and runner: records, consistency, AutoAttack parity, logit-scale
invariance, resume, plugins, the tracker, and the eval command."""

from __future__ import annotations

import copy
import json
import textwrap

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from marginrobust import (
    MarginTracker,
    RunSpec,
    ThreatModel,
    TrainConfig,
    create_model,
    load_dataset,
    train_run,
)
from marginrobust.cli import main
from marginrobust.errors import UserError
from marginrobust.evaluate.attacks import PGD, LogitScaled, logit_scale
from marginrobust.evaluate.engine import Evaluator
from marginrobust.evaluate.run import evaluate_run
from marginrobust.evaluate.store import EvalRecord, ResultsStore
from marginrobust.registry import ATTACKS, DATASETS, MODELS

CHEAP_AA = {"autoattack": {"version": "custom", "attacks_to_run": ["apgd-ce", "apgd-t"]}}
THREATS = [ThreatModel("L2", (0.3, 0.6)), ThreatModel("Linf", (0.03, 0.06))]


def cheap_evaluator(**kw):
    base = dict(threats=THREATS, attacks=("autoattack", "pgd", "fmn"), n=40, seed=0,
                device="cpu", attack_options=CHEAP_AA)
    return Evaluator(**{**base, **kw})


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "mlp"
    spec = RunSpec(model="mlp", model_kwargs={"widths": [32]}, dataset="digits",
                   train_subset=200, test_subset=100,
                   train=TrainConfig(epochs=30, batch_size=50, device="cpu"),
                   checkpoint_decades=2.0)
    train_run(out, spec)
    return out


def test_records_cover_methods_splits_norms_without_flags(trained_mlp, digits):
    ev = cheap_evaluator()
    records = []
    for split, (x, y) in {"test": (digits.x_test, digits.y_test),
                          "train": (digits.x_train, digits.y_train)}.items():
        result = ev.evaluate(trained_mlp, x[:40], y[:40], split)
        records += result.records
        assert result.array("fmn", "distances", "L2").shape == (40,)
        assert result.array("certify-lipschitz", "radius", "L2").shape == (40,)
        assert result.array("certify-crown", "radius", "L2").shape == (40,)
    methods = {(r.split, r.method, r.norm) for r in records}
    for split in ("test", "train"):
        for norm in ("L2", "Linf"):
            for m in ("autoattack", "pgd", "fmn", "certify-lipschitz", "certify-ibp",
                      "certify-crown", "certified", "worst"):
                assert (split, m, norm) in methods
    assert all(not r.flags for r in records), [r.flags for r in records if r.flags]
    assert all(r.seed == 0 for r in records)
    # The 64-unit MLP is above the exact verifier's default size: its records say so.
    assert all(r.skipped is None for r in records if r.method != "certify-exact")
    exact = [r for r in records if r.method == "certify-exact"]
    assert exact and all(r.norm == "Linf" and "runs by default only on networks of at most"
                         in r.skipped for r in exact)
    configs = {(r.method, r.norm): json.loads(r.config) for r in records}
    aa = configs[("autoattack", "L2")]
    assert aa["attacks_to_run"] == ["apgd-ce", "apgd-t"] and aa["version"] == "custom"
    assert "batch_size" not in aa
    assert configs[("fmn", "L2")]["warm_start"] is False and "warm_start" not in configs[
        ("fmn", "Linf")]
    assert configs[("certified", "L2")] == {"certificates": {
        "certify-crown": {"rel_tol": 1e-3}, "certify-ibp": {}, "certify-lipschitz": {}}}
    assert set(configs[("worst", "L2")]["attacks"]) == {"autoattack", "pgd", "fmn"}
    by = {(r.split, r.method, r.norm, r.eps): r for r in records}
    for (split, method, norm, eps), r in by.items():
        worst = by[(split, "worst", norm, eps)].robust_acc
        assert by[(split, "certified", norm, eps)].robust_acc <= worst <= r.clean_acc
        if method in ("autoattack", "pgd", "fmn"):
            assert worst <= r.robust_acc


def test_autoattack_figure_equals_direct_pyautoattack(trained_mlp, digits):
    from pyautoattack import AutoAttack

    x, y = digits.x_test[:40], digits.y_test[:40]
    ev = cheap_evaluator(threats=[ThreatModel("Linf", (0.06,))], attacks=("autoattack",),
                         certify=False)
    records = ev.evaluate(trained_mlp, x, y, "test").records
    ours = [r for r in records if r.method == "autoattack"][0].robust_acc
    scaled = LogitScaled(trained_mlp, logit_scale(trained_mlp, x)).eval()
    adversary = AutoAttack(scaled, norm="Linf", eps=0.06, version="custom",
                           attacks=["apgd-ce", "apgd-t"], seed=0, device=x.device)
    adversary.verbose = False
    x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=256)
    with torch.no_grad():
        direct = float((scaled(x_adv).argmax(1) == y).double().mean())
    assert ours == direct


class Times(nn.Module):
    def __init__(self, model, factor):
        super().__init__()
        self.model, self.factor = model, factor

    def forward(self, x):
        return self.model(x) * self.factor


def test_every_figure_is_invariant_to_logit_scale(trained_mlp, digits):
    x, y = digits.x_train[:40], digits.y_train[:40]
    ev = cheap_evaluator(certify=False)
    a = ev.evaluate(trained_mlp, x, y, "train").records
    b = ev.evaluate(Times(trained_mlp, 1e5), x, y, "train").records
    assert [(r.method, r.norm, r.eps, r.robust_acc) for r in a] == \
           [(r.method, r.norm, r.eps, r.robust_acc) for r in b]
    # The certificates too: for a homogeneous net, scaling θ leaves the radii unchanged.
    big = copy.deepcopy(trained_mlp)
    with torch.no_grad():
        for p in big.parameters():
            p.mul_(10.0)
    ev = cheap_evaluator(attacks=())
    c = ev.evaluate(trained_mlp, x, y, "train")
    d = ev.evaluate(big, x, y, "train")
    np.testing.assert_allclose(c.array("certify-lipschitz", "radius", "L2"),
                               d.array("certify-lipschitz", "radius", "L2"), rtol=1e-6)
    assert [r.robust_acc for r in c.records] == [r.robust_acc for r in d.records]


class Counting(PGD):
    calls = 0
    fail_after: int | None = None

    def run(self, *args, **kwargs):
        type(self).calls += 1
        if self.fail_after is not None and type(self).calls > self.fail_after:
            raise KeyboardInterrupt("killed")
        return super().run(*args, **kwargs)


def test_evaluation_resumes_without_repeating_work(small_run):
    from marginrobust.train import list_checkpoints

    n_ckpt = len(list_checkpoints(small_run))
    assert n_ckpt >= 3
    threats = [ThreatModel("Linf", (0.05,))]
    # Each (checkpoint, split) runs PGD once; die during the 4th.
    Counting.calls, Counting.fail_after = 0, 3
    ev = Evaluator(threats=threats, attacks=[Counting()], n=20, device="cpu")
    with pytest.raises(KeyboardInterrupt):
        evaluate_run(ev, small_run, splits=["test", "train"])
    stored = ResultsStore(small_run).records
    first = {r.key: r.seconds for r in stored}
    assert len({(r.checkpoint, r.split) for r in stored}) == 3
    Counting.calls, Counting.fail_after = 0, None
    store = evaluate_run(ev, small_run, splits=["test", "train"])
    assert Counting.calls == 2 * n_ckpt - 3
    for r in store.records:
        if r.key in first:
            assert r.seconds == first[r.key]      # stored figure kept, not recomputed
    pgd = [r for r in store.records if r.method == "pgd"]
    assert len(pgd) == 2 * n_ckpt
    Counting.calls = 0
    evaluate_run(ev, small_run, splits=["test", "train"])
    assert Counting.calls == 0
    assert {r.epoch for r in pgd} == {r.epoch for r in store.records}
    assert all(r.normalized_margin is not None for r in pgd)


def test_margin_tracker_in_a_plain_loop(digits):
    torch.manual_seed(0)
    model = create_model("mlp", in_chans=1, img_size=8, widths=(32,))
    tracker = MarginTracker(digits.x_train, digits.y_train, digits.x_test, digits.y_test,
                            evaluator=cheap_evaluator(attacks=("pgd",), n=20),
                            eval_epochs={3}, n=20)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for epoch in range(1, 4):
        for i in range(0, len(digits.x_train), 50):
            loss = nn.functional.cross_entropy(model(digits.x_train[i:i + 50]),
                                               digits.y_train[i:i + 50])
            opt.zero_grad()
            loss.backward()
            opt.step()
        tracker.update(model, epoch)
    frame = tracker.frame()
    assert list(frame["epoch"]) == [1, 2, 3]
    assert frame["homogeneity_order"].iloc[0] == 2
    assert (frame["log10_loss"].diff().dropna() < 0).all()
    ev = tracker.eval_frame()
    assert set(ev["split"]) == {"train", "test"} and set(ev["epoch"]) == {3}
    assert model.training


PLUGIN = textwrap.dedent('''
    import numpy as np
    import torch
    from torch import nn
    from marginrobust.data import ArraySplits
    from marginrobust.evaluate.attacks import PGD

    def tiny_linear(num_classes=10, in_chans=1, img_size=8, **_):
        """A plugin model: one bias-free linear layer."""
        h, w = (img_size, img_size) if isinstance(img_size, int) else img_size
        return nn.Sequential(nn.Flatten(), nn.Linear(in_chans * h * w, num_classes, bias=False))

    def blobs(arg, data_dir):
        """A plugin dataset: two Gaussian blobs."""
        rng = np.random.default_rng(0)
        x = np.clip(rng.normal(0.5, 0.1, (80, 1, 4, 4)), 0, 1).astype("float32")
        y = (np.arange(80) % 2).astype("int64")
        x[y == 1] = np.clip(x[y == 1] + 0.2, 0, 1)
        return ArraySplits(x[:60], y[:60], x[60:], y[60:], ["a", "b"], "plugin")

    class BlobPGD(PGD):
        """A plugin attack."""
        name = "blob-pgd"
''')


def test_third_party_plugins_through_entry_points(tmp_path, monkeypatch):
    (tmp_path / "mr_plugin.py").write_text(PLUGIN)
    info = tmp_path / "mr_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mr-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[marginrobust.models]\ntiny-linear = mr_plugin:tiny_linear\n\n"
        "[marginrobust.datasets]\nblobs = mr_plugin:blobs\n\n"
        "[marginrobust.attacks]\nblob-pgd = mr_plugin:BlobPGD\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for reg in (MODELS, DATASETS, ATTACKS):
        monkeypatch.setattr(reg, "_plugins_loaded", False)
        monkeypatch.setattr(reg, "_items", dict(reg._items))
    data = load_dataset("blobs")
    assert data.spec.shape == (1, 4, 4) and data.spec.num_classes == 2
    model = create_model("tiny-linear", num_classes=2, in_chans=1, img_size=4)
    ev = Evaluator(threats=[ThreatModel("L2", (0.1,))], attacks=["blob-pgd"], n=10,
                   device="cpu", certify=True)
    frame = ev.evaluate_data(model, data)
    assert "blob-pgd" in set(frame["method"])
    result = CliRunner().invoke(main, ["models"])
    assert "tiny-linear" in result.output


@pytest.mark.parametrize("args,needle", [
    (["--eps-linf", "-0.1"], "negative"),
    (["--attacks", "nope"], "unknown attack 'nope'"),
    (["--norms", "L7"], "L7"),
    (["--split", "validation"], "validation"),
])
def test_eval_cli_errors(small_run, args, needle):
    result = CliRunner().invoke(main, ["eval", str(small_run), "--quiet", *args])
    assert result.exit_code == 2, result.output
    assert needle in result.output and "Traceback" not in result.output


def test_eval_cli_on_empty_dir_and_runs(tmp_path, small_run):
    empty = CliRunner().invoke(main, ["eval", str(tmp_path)])
    assert empty.exit_code == 2 and "no checkpoints" in empty.output
    ckpt = sorted((small_run / "checkpoints").glob("*.pt"))[-1]
    result = CliRunner().invoke(main, ["eval", str(ckpt), "--attacks", "pgd,fmn", "--n", "20",
                                       "--quiet", "--split", "train"])
    assert result.exit_code == 0, result.output
    assert "records in" in result.output and "FLAG" not in result.output


def test_evaluator_bad_input():
    with pytest.raises(UserError):
        Evaluator(n=0)
    with pytest.raises(UserError):
        Evaluator(attacks=("pgd",), attack_options={"nope": {}})
    with pytest.raises(UserError):
        Evaluator(norms=("L1",))


def test_results_store_appends_and_survives_a_torn_last_line(tmp_path):
    store = ResultsStore(tmp_path)
    a = EvalRecord("c1", "test", "pgd", "L2", 0.5, 10, 1.0, 0.5)
    b = EvalRecord("c2", "test", "pgd", "L2", 0.5, 10, 1.0, 0.4, median_distance=float("inf"))
    store.add([a])
    store.add([b])
    with open(store.path, "a") as fh:
        fh.write('{"checkpoint": "c3", "spl')           # a killed append
    again = ResultsStore(tmp_path)
    assert [r.key for r in again.records] == [a.key, b.key]
    assert again.records[1].median_distance == float("inf")
    again.add([EvalRecord("c1", "test", "pgd", "L2", 0.5, 10, 1.0, 0.7)])   # replaces a
    final = ResultsStore(tmp_path).records
    assert sorted((r.checkpoint, r.robust_acc) for r in final) == [("c1", 0.7), ("c2", 0.4)]


def test_ibp_reuse_across_budgets_and_norms_matches_direct_calls(trained_mlp, digits):
    from marginrobust.evaluate.certify.lipschitz_ibp import ibp_certified

    x, y = digits.x_train[:60], digits.y_train[:60]
    grid = (0.001, 0.003, 0.01, 0.03)
    ev = Evaluator(threats=[ThreatModel("L2", grid), ThreatModel("Linf", grid)], attacks=(),
                   n=60, device="cpu")
    result = ev.evaluate(trained_mlp, x, y, "train")
    clean = result.array("clean", "correct")
    counts = []
    for norm in ("L2", "Linf"):
        for eps in grid:
            direct = ibp_certified(trained_mlp, x, y, eps, norm) & clean
            np.testing.assert_array_equal(result.array("certify-ibp", "certified", norm, eps),
                                          direct)
            counts.append(int(direct.sum()))
    assert counts[0] > counts[3] >= 0 and counts[0] > 0     # the skip was really exercised


def _fresh_copy(run, dest):
    import shutil

    shutil.copytree(run, dest, ignore=shutil.ignore_patterns("eval"))
    return dest


def _kinds(arrays):
    return {(k.split, k.method, k.norm, k.kind) for k in arrays}


def _one(arrays, method, norm, kind):
    [value] = [v for k, v in arrays.items() if (k.method, k.norm, k.kind) == (method, norm, kind)]
    return value


def test_warm_start_chains_checkpoints_and_resumes_with_the_same_numbers(small_run, tmp_path):
    from marginrobust.evaluate.attacks import FMN
    from marginrobust.evaluate.points import select_points
    from marginrobust.train import list_checkpoints, load_checkpoint

    threats = [ThreatModel("L2", (0.5,)), ThreatModel("Linf", (0.05,))]

    def ev():
        return Evaluator(threats=threats, attacks=("fmn",), certify=False, n=20, device="cpu",
                         warm_start=True)

    full = _fresh_copy(small_run, tmp_path / "full")
    store = evaluate_run(ev(), full, splits=["test"])
    files = list_checkpoints(full)
    assert len(files) >= 3
    for f in files:
        adv = store.load_adversarials(f.stem)
        assert _kinds(adv) == {("test", "fmn", "L2", "adversarial")}   # FMN warm-starts L2 only
        assert not any(k.kind == "adversarial" for k in store.load_arrays(f.stem))
    # The last checkpoint's figures are FMN started from the one before's points.
    model, _ = load_checkpoint(files[-1])
    pts = select_points(load_dataset("digits", None, 200, 100, 0), 20, 0, ["test"],
                        store.load_points(20, 0))["test"]
    starts = _one(store.load_adversarials(files[-2].stem), "fmn", "L2", "adversarial")
    direct = FMN()(model, pts.x, pts.y, threats[0], seed=0, starting_points=starts)
    assert direct.warm_started > 0
    np.testing.assert_array_equal(
        _one(store.load_arrays(files[-1].stem), "fmn", "L2", "distances"), direct.distances)
    assert all(json.loads(r.config)["warm_start"] for r in store.records
               if r.norm == "L2" and r.method == "fmn")
    # Stopped before the last checkpoint and rerun: the same records as one pass.
    resumed = _fresh_copy(small_run, tmp_path / "resumed")
    evaluate_run(ev(), resumed, splits=["test"], checkpoints=files[:-1])
    again = evaluate_run(ev(), resumed, splits=["test"])

    def figures(s):
        return sorted((r.key, r.robust_acc, r.median_distance) for r in s.records)

    assert figures(again) == figures(ResultsStore(full))


def test_eval_cli_warm_start(small_run, tmp_path):
    run = _fresh_copy(small_run, tmp_path / "run")
    res = CliRunner().invoke(main, ["eval", str(run), "--attacks", "fmn", "--norms", "L2",
                                    "--n", "10", "--split", "test", "--no-certify",
                                    "--warm-start", "--quiet"])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (run / "eval" / "adversarials").iterdir()) == sorted(
        p.name.replace(".pt", ".npz") for p in (run / "checkpoints").glob("epoch-*.pt"))
