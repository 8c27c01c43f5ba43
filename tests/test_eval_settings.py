"""What decides a figure keys it: new settings are stored beside the old and reruns skip;
one point selector everywhere; a resumed progress bar ends full; uncertifiable models keep
their attack figures; minimal-norm attacks are known by their class."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from torch import nn

import marginrobust.evaluate.run as run_module
from marginrobust import MarginTracker, RunSpec, ThreatModel, TrainConfig, load_dataset, train_run
from marginrobust.evaluate.attack_options import is_minimal_norm
from marginrobust.evaluate.attacks import FMN, PGD, MinimalNormAttack
from marginrobust.evaluate.engine import Evaluator, PriorResults, UnitRequest
from marginrobust.evaluate.points import select_indices, select_points
from marginrobust.evaluate.run import evaluate_run
from marginrobust.evaluate.store import ResultsStore

LINF = [ThreatModel("Linf", (0.05,))]


def _aa(*attacks):
    return {"autoattack": {"version": "custom", "attacks_to_run": list(attacks)}}


class CountingPGD(PGD):
    """Counts its evaluations (one per call, even where no point is correct)."""

    calls = 0
    fail_after: int | None = None

    def _evaluate(self, *args, **kwargs):
        type(self).calls += 1
        if self.fail_after is not None and type(self).calls > self.fail_after:
            raise KeyboardInterrupt("killed")
        return super()._evaluate(*args, **kwargs)


class CountingFMN(FMN):
    """A minimal-norm attack under a name no list of names knows."""

    name = "plugin-min-norm"
    calls = 0

    def run(self, *args, **kwargs):
        type(self).calls += 1
        return super().run(*args, **kwargs)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "mlp"
    spec = RunSpec(model="mlp", model_kwargs={"widths": [16]}, dataset="digits",
                   train_subset=120, test_subset=60,
                   train=TrainConfig(epochs=12, batch_size=40, device="cpu"),
                   checkpoint_decades=2.0)
    train_run(out, spec)
    return out


@pytest.fixture
def run(tiny_run, tmp_path):
    return shutil.copytree(tiny_run, tmp_path / "run", ignore=shutil.ignore_patterns("eval"))


def _snapshot(store):
    return [r.to_json() for r in store.records]


def test_new_settings_are_stored_beside_the_old_and_reruns_skip(run):
    def ev(n, seed, aa):
        return Evaluator(threats=LINF, attacks=["autoattack", CountingPGD()], n=n, seed=seed,
                         device="cpu", attack_options=aa)

    first = ev(20, 0, _aa("apgd-ce"))
    old = _snapshot(evaluate_run(first, run, splits=["test"]))
    assert {(r["n"], r["seed"]) for r in old} == {(20, 0)}
    second = ev(30, 1, _aa("apgd-ce", "apgd-t"))
    store = evaluate_run(second, run, splits=["test"])
    records = _snapshot(store)
    assert records[:len(old)] == old                               # old ones untouched
    new = records[len(old):]
    assert {(r["n"], r["seed"]) for r in new} == {(30, 1)}
    assert len(new) == len(old)
    aa = {tuple(json.loads(r["config"])["attacks_to_run"])
          for r in new if r["method"] == "autoattack"}
    assert aa == {("apgd-ce", "apgd-t")}
    sel = {(s["n"], s["seed"]): s["points"]["test"] for s in store.selections()}
    assert set(sel) == {(20, 0), (30, 1)} and len(sel[(20, 0)]) == 20 and len(sel[(30, 1)]) == 30
    # A rerun of either setting computes nothing and stores nothing.
    text = store.path.read_bytes()
    for again in (ev(20, 0, _aa("apgd-ce")), ev(30, 1, _aa("apgd-ce", "apgd-t"))):
        CountingPGD.calls = 0
        evaluate_run(again, run, splits=["test"])
        assert CountingPGD.calls == 0 and store.path.read_bytes() == text
    # Only AutoAttack's set changed: AutoAttack and the worst case are new, PGD and the
    # certificates of these points are reused.
    CountingPGD.calls = 0
    third = _snapshot(evaluate_run(ev(20, 0, _aa("apgd-t")), run, splits=["test"]))
    assert CountingPGD.calls == 0
    added = {r["method"] for r in third[len(records):]}
    assert added == {"autoattack", "worst"}


def test_one_point_selector_for_evaluator_runner_and_tracker(run):
    data = load_dataset("digits", None, 120, 60, 0)
    alone = select_points(data, 25, 3, ["train"])["train"].indices
    both = select_points(data, 25, 3, ["test", "train"])
    assert both["train"].indices == alone
    assert select_points(data, 25, 3, ["train", "test"])["test"].indices == both["test"].indices
    assert select_indices(data.y_train.numpy(), 25, 4, "train") != alone   # the seed matters
    tracker = MarginTracker(data.x_train, data.y_train, data.x_test, data.y_test, n=25, seed=3)
    assert tracker.indices == {"train": alone, "test": both["test"].indices}
    # The runner, split by split or both at once, stores the same points.
    quiet = Evaluator(threats=LINF, attacks=(), certify=False, n=25, seed=3, device="cpu")
    other = shutil.copytree(run, run.parent / "other")
    evaluate_run(quiet, run, splits=["train"])
    evaluate_run(quiet, other, splits=["test", "train"])
    assert ResultsStore(run).load_points(25, 3) == {"train": alone}
    assert ResultsStore(other).load_points(25, 3) == {"train": alone,
                                                       "test": both["test"].indices}


class FakeBar:
    """Counts what a progress bar is told."""

    made: list[FakeBar] = []

    def __init__(self, total):
        self.total, self.n = total, 0
        FakeBar.made.append(self)

    def update(self, k):
        self.n += k

    def set_description(self, _text):
        pass

    def close(self):
        pass


def test_a_resumed_progress_bar_ends_at_its_total(run, monkeypatch):
    monkeypatch.setattr(run_module, "_progress_bar", FakeBar)
    FakeBar.made = []
    both = [ThreatModel("L2", (0.5,)), *LINF]
    ev = Evaluator(threats=both, attacks=[CountingPGD()], certify=False, n=10, device="cpu")
    CountingPGD.calls, CountingPGD.fail_after = 0, 3
    with pytest.raises(KeyboardInterrupt):
        evaluate_run(ev, run, progress=True)
    full = FakeBar.made[-1].total
    finished = {(r.checkpoint, r.split) for r in ResultsStore(run).records}
    assert full == 8 and len(finished) == 1          # 2 checkpoints x 2 splits x 2 norms
    CountingPGD.calls, CountingPGD.fail_after = 0, None
    evaluate_run(ev, run, progress=True)
    bar = FakeBar.made[-1]
    assert bar.total == full - 2 == CountingPGD.calls
    assert bar.n == bar.total                                      # ends at total/total
    evaluate_run(ev, run, progress=True)
    assert FakeBar.made[-1].total == FakeBar.made[-1].n == 0


class Tanh(nn.Module):
    """conv-free, bias-free, but with an activation no certificate handles."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(64, 32, bias=False), nn.Linear(32, 10, bias=False)

    def forward(self, x):
        return self.b(torch.tanh(self.a(x.flatten(1))))


class Plain(nn.Module):
    """An ordinary bias-free module: the layers are called in forward, not a Sequential."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(64, 32, bias=False), nn.Linear(32, 10, bias=False)

    def forward(self, x):
        return self.b(torch.relu(self.a(torch.flatten(x, 1))))


def test_an_uncertifiable_model_keeps_its_attack_figures(digits):
    torch.manual_seed(0)
    x, y = digits.x_test[:20], digits.y_test[:20]
    ev = Evaluator(threats=LINF, attacks=("pgd", "fmn"), n=20, device="cpu")
    result = ev.evaluate(Tanh(), x, y)
    by = {r.method: r for r in result.records}
    assert by["pgd"].robust_acc is not None and by["fmn"].robust_acc is not None
    assert by["worst"].robust_acc is not None
    for m in ("certify-lipschitz", "certify-ibp", "certify-crown", "certified"):
        assert by[m].robust_acc is None and by[m].skipped, by[m]
        assert "\n" not in by[m].skipped
    # Resumed with the same reason stored: nothing new to say about the certificates.
    prior = PriorResults(skipped={r.key: r.skipped for r in result.records if r.skipped})
    again = ev.evaluate_unit(Tanh(), x, y, UnitRequest("model", "test", 20, tuple(LINF)),
                             prior=prior)
    assert not any(r.skipped for r in again.records)


def test_a_plain_module_is_certified_like_a_sequential(digits):
    torch.manual_seed(0)
    x, y = digits.x_test[:20], digits.y_test[:20]
    ev = Evaluator(threats=LINF, attacks=("pgd",), n=20, device="cpu")
    plain = Plain()
    records = ev.evaluate(plain, x, y).records
    chain = nn.Sequential(nn.Flatten(), plain.a, nn.ReLU(), plain.b)
    same = ev.evaluate(chain, x, y).records
    cert = [r for r in records if r.method.startswith("certif")]
    # The default certifiers (Lipschitz, IBP, CROWN and, for 32 ReLU units, exact) and their
    # combination.
    assert len(cert) == 5 and all(r.skipped is None and r.robust_acc is not None for r in cert)
    assert [(r.method, r.robust_acc, r.median_distance) for r in records] == \
           [(r.method, r.robust_acc, r.median_distance) for r in same]


class Flagged(PGD):
    name = "flagged"
    minimal_norm = True


def test_minimal_norm_attacks_are_known_by_class_not_name(run):
    assert is_minimal_norm(FMN()) and is_minimal_norm(CountingFMN())
    assert not is_minimal_norm(PGD()) and is_minimal_norm(Flagged())
    assert issubclass(CountingFMN, MinimalNormAttack)
    # New budgets for a plugin minimal-norm attack come from its stored distances.
    def ev(eps):
        return Evaluator(threats=[ThreatModel("L2", eps)], attacks=[CountingFMN()],
                         certify=False, n=10, device="cpu")

    CountingFMN.calls = 0
    evaluate_run(ev((0.5,)), run, splits=["test", "train"])
    ran = CountingFMN.calls
    assert ran > 0
    store = evaluate_run(ev((0.5, 1.0)), run, splits=["test", "train"])
    assert CountingFMN.calls == ran
    wider = [r for r in store.records if r.method == "plugin-min-norm" and r.eps == 1.0]
    assert wider and all(r.median_distance is not None for r in wider)
