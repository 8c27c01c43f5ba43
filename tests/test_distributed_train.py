"""Data-parallel training under torchrun (gloo, 2 CPU processes): the metrics of one process
with the same global batch to 1e-6 relative and the same accept/rollback decisions, one
writer of the run folder, resume from 2 processes to 1 and from 1 to 2, bench training on
every rank; the helpers (contiguous shares, the gradient sum, the reduced measurements,
the check that the ranks start from one run) with 2 ranks and without a group."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import launcher_free_env, torchrun

from marginrobust import RunSpec, TrainConfig, distributed, train_run
from marginrobust.margins import margin_stats
from marginrobust.train import list_checkpoints, read_checkpoint, read_metrics
from marginrobust.train.fused_loss import framed_loss, framed_loss_and_log_losses
from marginrobust.train.run import read_run

JOB_TIMEOUT = 180
LN10 = math.log(10.0)
RTOL = 1e-6
# 201 points in batches of 100: the last batch has 1 point, so rank 1's share of it is
# empty. The default rate reaches its stability edge within 20 epochs: 25 rollbacks.
TRAIN = ["--model", "mlp", "--model-opt", "widths=[32]", "--dataset", "digits",
         "--train-subset", "201", "--test-subset", "100", "--batch-size", "100",
         "--device", "cpu", "--quiet"]
# Fields that are decisions of the schedule or counts: equal, not close.
DECISIONS = ("epoch", "step", "grad_evals", "rollbacks", "alpha")
# Logs of a loss or a rate: compared as the relative difference of the quantity itself.
LOG_FIELDS = ("log10_loss", "log10_mean_loss", "test_log10_mean_loss", "log10_lr")


def spec(epochs: int) -> RunSpec:
    """The run of TRAIN, as the CLI builds it."""
    return RunSpec(model="mlp", model_kwargs={"bias": "none", "width": 1.0, "widths": [32]},
                   dataset="digits", train_subset=201, test_subset=100,
                   train=TrainConfig(epochs=epochs, batch_size=100, device="cpu"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """20 epochs in this process (one torch thread, as every rank below)."""
    out = tmp_path_factory.mktemp("single") / "run"
    train_run(out, spec(20))
    return out


def _env() -> dict[str, str]:
    return launcher_free_env()


def run_job(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    job = subprocess.run(args, cwd=cwd, env=_env(), capture_output=True, text=True,
                         timeout=JOB_TIMEOUT)
    assert job.returncode == 0, job.stderr[-3000:]
    return job


def decisions(records: list[dict]) -> list[tuple]:
    return [tuple(r[k] for k in DECISIONS) for r in records]


def assert_close(got: list[dict], want: list[dict], rtol: float = RTOL) -> None:
    """The same decisions, counts and flags; every measured number within ``rtol``."""
    assert decisions(got) == decisions(want)
    for g, w in zip(got, want):
        assert g.keys() == w.keys()
        for key, b in w.items():
            a = g[key]
            if key in DECISIONS or key == "wall_s":
                continue
            if key in LOG_FIELDS:
                assert abs(a - b) * LN10 <= rtol, (w["epoch"], key, a, b)
            elif isinstance(b, list) and b and isinstance(b[0], float):
                assert a == pytest.approx(b, rel=rtol, abs=0), (w["epoch"], key)
            elif isinstance(b, float):
                assert a == pytest.approx(b, rel=rtol, abs=0), (w["epoch"], key, a, b)
            else:  # counts (near_support), flags, orders, a missing rate
                assert a == b, (w["epoch"], key)


def without_wall(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in records]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> Path:
    """The same 20 epochs under torchrun with 2 processes."""
    out = tmp_path_factory.mktemp("two") / "run"
    run_job(torchrun("train", "--out", str(out), "--epochs", "20", *TRAIN), out.parent)
    return out


def test_two_ranks_train_as_one_process(reference, two_ranks):
    out = two_ranks
    got, want = read_metrics(out), read_metrics(reference)
    assert len(got) == 21  # one writer: no row twice
    assert sum(r["rollbacks"] for r in want) > 10  # the decisions are worth comparing
    assert_close(got, want)
    # Before any step the records differ only by the float64 order of log 𝓛's sum.
    assert_close(got[:1], want[:1], rtol=1e-12)
    stored = read_run(out)
    assert stored["world_size"] == 2 and stored["environment"]["world_size"] == 2
    assert stored["run"] == read_run(reference)["run"]
    assert read_run(reference)["world_size"] == 1
    assert [p.name for p in list_checkpoints(out)] == [p.name
                                                       for p in list_checkpoints(reference)]
    assert read_checkpoint(out / "resume.pt")["environment"]["world_size"] == 2
    assert (out / "metrics.csv").read_text().count("\n") == 22


def test_two_ranks_judge_chunks_as_one_process(tmp_path):
    """loss-based-fast: the guard reads the batches' relative losses summed over the
    ranks and the extensions the exactly reduced full-set loss, so 2 ranks end, extend and
    accept the same attempts as one process."""
    one, two = tmp_path / "one", tmp_path / "two"
    fast = ["--schedule", "loss-based-fast", "--lr", "3", "--epochs", "12"]
    s = spec(12)
    s.train.schedule, s.train.lr = "loss-based-fast", 3.0
    train_run(one, s)
    run_job(torchrun("train", "--out", str(two), *fast, *TRAIN), tmp_path)
    want = read_metrics(one)
    assert sum(r["rollbacks"] for r in want) >= 3  # chunks or epochs were rolled back
    assert want[-1]["grad_evals"] > want[-1]["step"]
    # Some attempts were extended past their first epoch: their records skip epochs.
    assert any(b["epoch"] - a["epoch"] > 1 for a, b in zip(want, want[1:]))
    # The decisions are equal; the measured numbers drift further apart than under the
    # paper's schedule (up to 1.6e-5 by epoch 12 here): larger steps amplify the rounding
    # of the gradients, summed over the ranks in another order, from epoch to epoch.
    assert_close(read_metrics(two), want, rtol=1e-4)


def test_a_two_rank_run_resumes_in_one_process(reference, two_ranks, tmp_path):
    out = tmp_path / "run"
    run_job(torchrun("train", "--out", str(out), "--epochs", "10", *TRAIN), tmp_path)
    assert read_run(out)["world_size"] == 2
    # Two runs with 2 ranks: the same bits.
    assert without_wall(read_metrics(out)) == without_wall(read_metrics(two_ranks)[:11])
    trainer = train_run(out, resume=True, overrides={"epochs": 20})
    assert trainer.epoch == 20
    got = read_metrics(out)
    assert len(got) == 21
    assert_close(got, read_metrics(reference))
    assert read_run(out)["world_size"] == 1


def test_a_one_process_run_resumes_with_two_ranks(reference, tmp_path):
    out = tmp_path / "run"
    train_run(out, spec(10))
    run_job(torchrun("train", "--out", str(out), "--resume", "--epochs", "20", "--quiet"),
            tmp_path)
    got = read_metrics(out)
    assert len(got) == 21
    # Up to epoch 10 this was one process: the reference's bits.
    assert without_wall(got[:11]) == without_wall(read_metrics(reference)[:11])
    assert_close(got, read_metrics(reference))
    assert read_run(out)["world_size"] == 2


def test_bench_under_torchrun_trains_on_every_rank_then_evaluates(tmp_path):
    out = tmp_path / "run"
    job = run_job(torchrun("bench", "--model", "mlp", "--model-opt", "widths=[16]",
                           "--train-subset", "100", "--test-subset", "50", "--epochs", "3",
                           "--batch-size", "50", "--attacks", "pgd", "--norms", "L2",
                           "--n-points", "12", "--device", "cpu", "--out", str(out),
                           "--no-leaderboard", "--quiet"), tmp_path)
    assert job.stdout.count("[bench] training: trained") == 1  # rank 0 says it
    assert read_run(out)["world_size"] == 2
    assert len(read_metrics(out)) == 4
    assert (out / "eval" / "records.jsonl").exists()


# ---------------------------------------------------------------------- the helpers

WORKER = textwrap.dedent('''
    import json, math, sys
    import torch
    from marginrobust import TrainConfig, Trainer, create_model, distributed
    from marginrobust.errors import UserError
    from marginrobust.margins import stats_from_logits

    distributed.init("cpu")
    rank, world = distributed.rank(), distributed.world_size()
    found = {}

    # The gradient sum: the float64 sum rounded once (with 2 ranks, the float32 sum).
    torch.manual_seed(0)
    values = torch.randn(world, 4000) * torch.logspace(-6, 6, 4000)
    mine = [values[rank, :1000].clone(), values[rank, 1000:].clone().view(100, 30)]
    distributed.all_sum_tensors_(mine)
    want = values[0].double()
    for v in values[1:]:
        want += v.double()
    got = torch.cat([t.reshape(-1) for t in mine])
    found["sum"] = torch.equal(got, want.float()) and torch.equal(got, values.sum(dim=0))
    found["sum_dtype"] = str(mine[1].dtype)

    # The reduced measurements of the ranks' shares against the whole set's.
    logits = torch.randn(301, 10) * 5
    y = torch.randint(0, 10, (301,))
    whole = stats_from_logits(logits, y, 2.0, [1.0, 2.0], 2)
    lo, hi = distributed.share_bounds(301)
    part = stats_from_logits(logits[lo:hi], y[lo:hi], 2.0, [1.0, 2.0], 2, across_ranks=True)
    # All but log 𝓛 and what is computed from it (its float64 sum runs in another order).
    from_loss = ("log10_loss", "log10_mean_loss", "smoothed_margin")
    found["stats_equal"] = [k for k in whole if k not in from_loss and part[k] != whole[k]]
    found["log_loss"] = max(abs(part[k] / whole[k] - 1) for k in from_loss)

    # Ranks given different runs refuse, every one of them.
    model = create_model("mlp", in_chans=1, img_size=4, widths=[8])
    x = torch.rand(20, 1, 4, 4)
    labels = torch.arange(20) % 10
    trainer = Trainer(model, x, labels, x, labels,
                      TrainConfig(epochs=1, batch_size=10, device="cpu", seed=rank))
    try:
        trainer.fit()
        found["refused"] = None
    except UserError as exc:
        found["refused"] = str(exc)
    with open(sys.argv[1] + f".{rank}", "w") as fh:
        json.dump(found, fh)
''')


def test_the_helpers_with_two_ranks(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    result = tmp_path / "found"
    job = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc_per_node", "2", str(script), str(result)], cwd=tmp_path,
                         env=_env(), capture_output=True, text=True, timeout=JOB_TIMEOUT)
    assert job.returncode == 0, job.stderr[-3000:]
    for rank in range(2):
        found = json.loads(Path(f"{result}.{rank}").read_text())
        assert found["sum"] is True and found["sum_dtype"] == "torch.float32"
        assert found["stats_equal"] == []
        assert found["log_loss"] <= 1e-14
        assert found["refused"] is not None
        assert found["refused"].startswith("rank 1 does not start from rank 0's run: its "
                                           "config, data order differ")


@pytest.mark.parametrize("frame", [0.0, 0.7, -3.7])
def test_a_share_gives_its_points_the_gradients_of_one_process(digits, frame):
    """Each point's loss gradient, and with the whole batch as the share every parameter
    gradient, has one process's bits: only the sum over the ranks' shares differs."""
    torch.manual_seed(0)
    z = (torch.randn(100, 10) * 5).requires_grad_()
    y = torch.randint(0, 10, (100,))
    framed_loss(z, y, frame).backward()
    for lo, hi in ((0, 100), (0, 50), (50, 100), (37, 38)):
        part = z.detach()[lo:hi].clone().requires_grad_()
        _, log_l = framed_loss_and_log_losses(part, y[lo:hi], frame)
        (torch.exp(log_l - frame).sum() / 100).backward()
        assert torch.equal(part.grad, z.grad[lo:hi])
    from marginrobust import Trainer, create_model

    torch.manual_seed(0)
    model = create_model("mlp", in_chans=1, img_size=8, widths=(16,))
    trainer = Trainer(model, digits.x_train, digits.y_train, digits.x_test, digits.y_test,
                      TrainConfig(device="cpu"))
    idx = torch.arange(100)
    framed_loss(model(digits.x_train[idx]), digits.y_train[idx], frame).backward()
    want = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    trainer._share_loss(idx, 100, frame).backward()
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), want))


@pytest.mark.parametrize("n,ranks", [(10, 2), (11, 2), (1, 2), (0, 3), (100, 3), (7, 4)])
def test_shares_are_the_contiguous_splits_of_tensor_split(n, ranks):
    items = torch.arange(n)
    want = [t.tolist() for t in torch.tensor_split(items, ranks)]
    got = []
    for r in range(ranks):
        lo, hi = distributed.share_bounds(n, ranks, r)
        got.append(items[lo:hi].tolist())
    assert got == want


def test_without_a_group_the_collectives_change_nothing(digits):
    tensors = [torch.ones(3), torch.arange(4.0)]
    distributed.all_sum_tensors_(tensors)
    distributed.broadcast_tensors_(tensors)
    assert tensors[0].tolist() == [1.0] * 3 and tensors[1].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert float(distributed.all_max(2.5)) == 2.5
    assert distributed.share_bounds(7) == (0, 7)
    from marginrobust import create_model

    torch.manual_seed(0)
    model = create_model("mlp", in_chans=1, img_size=8, widths=(16,)).eval()
    with torch.no_grad():
        plain = margin_stats(model, digits.x_train, digits.y_train, 2)
        shared = margin_stats(model, digits.x_train, digits.y_train, 2, across_ranks=True)
    assert shared == plain


FAST_WORKER = textwrap.dedent('''
    import json, sys
    import torch
    from marginrobust import Callback, TrainConfig, Trainer, create_model, load_dataset
    from marginrobust import distributed

    class Log(Callback):
        def __init__(self):
            self.events = []

        def on_epoch_end(self, t, r):
            self.events.append(["accept", t.epoch, t.grad_evals, t.schedule.alpha])

        def on_rollback(self, t, epoch, why):
            self.events.append([why, epoch, t.grad_evals, t.schedule.alpha])

    def run(variant):
        data = load_dataset("digits", train_subset=200, test_subset=50, seed=0)
        torch.manual_seed(0)
        model = create_model("mlp", in_chans=1, img_size=8, widths=(32,))
        log = Log()
        t = Trainer(model, data.x_train, data.y_train, data.x_test, data.y_test,
                    TrainConfig(epochs=6, batch_size=25, lr=3.0, device="cpu",
                                schedule="loss-based-fast"), [log])
        for k, v in variant.items():
            setattr(t.schedule, k, v)
        t.fit()
        return log.events

    if __name__ == "__main__":
        variants = json.loads(sys.argv[2])
        if len(sys.argv) > 3:  # one process
            found = [run(v) for v in variants]
            rank = "one"
        else:
            distributed.init("cpu")
            found = [run(v) for v in variants]
            rank = distributed.rank()
        with open(sys.argv[1] + f".{rank}", "w") as fh:
            json.dump(found, fh)
''')


def test_two_ranks_raise_the_same_alarms_as_one_process(tmp_path):
    """loss-based-fast's alarm reads the batches' relative losses summed over the ranks:
    2 ranks end (or redo) the same attempts as one process, in both variants."""
    script = tmp_path / "fast_worker.py"
    script.write_text(FAST_WORKER)
    result = tmp_path / "found"
    variants = json.dumps([{"guard_ratio": 1.5},
                           {"guard_ratio": 1.5, "guard_aborts": False, "chunk_steps": 3}])
    one = subprocess.run([sys.executable, str(script), str(result), variants, "one"],
                         cwd=tmp_path, env=_env(), capture_output=True, text=True,
                         timeout=JOB_TIMEOUT)
    assert one.returncode == 0, one.stderr[-3000:]
    job = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc_per_node", "2", str(script), str(result), variants],
                         cwd=tmp_path, env=_env(), capture_output=True, text=True,
                         timeout=JOB_TIMEOUT)
    assert job.returncode == 0, job.stderr[-3000:]
    want = json.loads(Path(f"{result}.one").read_text())
    aborts, redoes = want
    # The alarms fired: an attempt ended before its 8 steps, and chunks were redone.
    assert any(e[0] == "exploded" and e[2] - p[2] < 8 for p, e in zip(aborts, aborts[1:]))
    assert any(e[0] == "chunk exploded" for e in redoes)
    for rank in range(2):
        assert json.loads(Path(f"{result}.{rank}").read_text()) == want
