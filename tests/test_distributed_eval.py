"""Sharded evaluation under torchrun (gloo, 2 CPU processes): the same records and arrays
as one process, resume after a rank is killed, either mode resuming the other, warm-start
chains; the shard merge, the dealing of units and the collective helpers; with a GPU, one
nccl rank against one process."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import launcher_free_env, torchrun

from marginrobust import RunSpec, TrainConfig, distributed, train_run
from marginrobust.evaluate.engine import Evaluator
from marginrobust.evaluate.run import WorkUnit, evaluate_run, shard_units
from marginrobust.evaluate.shards import list_shards, merge_shards, open_shard, shard_dir
from marginrobust.evaluate.store import ResultsStore
from marginrobust.evaluate.threats import ThreatModel
from marginrobust.train import list_checkpoints

THREATS = [ThreatModel("L2", (0.5, 1.0))]
# The CLI settings of every evaluation here; `evaluator` builds the same in this process.
EVAL = ["--norms", "L2", "--eps-l2", "0.5,1.0", "--n", "12", "--device", "cpu", "--quiet"]
ATTACKS = ["--attacks", "pgd,fmn"]
JOB_TIMEOUT = 180


def evaluator(**kw) -> Evaluator:
    return Evaluator(threats=THREATS, attacks=("pgd", "fmn"), n=12, seed=0, device="cpu", **kw)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A digits MLP run with 3 checkpoints (epochs 0, 2 and 4), not evaluated."""
    out = tmp_path_factory.mktemp("trained") / "run"
    spec = RunSpec(model="mlp", model_kwargs={"widths": [16]}, dataset="digits",
                   train_subset=100, test_subset=50,
                   train=TrainConfig(epochs=4, batch_size=50, device="cpu"),
                   checkpoint_decades=0.0, checkpoint_epochs=[2])
    train_run(out, spec)
    assert len(list_checkpoints(out)) == 3
    return out


def fresh(run: Path, parent: Path) -> Path:
    """A copy of the run without results, named like it (records carry the run's name)."""
    dest = parent / run.name
    shutil.copytree(run, dest, ignore=shutil.ignore_patterns("eval"))
    return dest


@pytest.fixture(scope="module")
def reference(run_dir, tmp_path_factory) -> Path:
    """The run evaluated by one process, as the CLI's settings say."""
    out = fresh(run_dir, tmp_path_factory.mktemp("single"))
    evaluate_run(evaluator(), out, ("test", "train"))
    return out


def _env(marker: str = "") -> dict[str, str]:
    return launcher_free_env(MARGINROBUST_TEST_JOB=marker)


def run_job(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=_env(), capture_output=True, text=True,
                          timeout=JOB_TIMEOUT)


def figures(run: Path) -> list[str]:
    """Every record without its `seconds`, as canonical JSON, sorted."""
    return sorted(_no_seconds(r) for r in ResultsStore(run).records)


def _no_seconds(record) -> str:
    return json.dumps({k: v for k, v in record.to_json().items() if k != "seconds"},
                      sort_keys=True)


def assert_same_results(run: Path, ref: Path, adversarials: bool = False) -> None:
    """Records equal but `seconds`; every array but timings equal; no shard left."""
    assert figures(run) == figures(ref)
    assert (run / "eval" / "points.json").read_text() == (ref / "eval" / "points.json").read_text()
    mine, theirs = ResultsStore(run), ResultsStore(ref)
    loads = [ResultsStore.load_arrays] + ([ResultsStore.load_adversarials] if adversarials
                                          else [])
    for f in list_checkpoints(ref):
        for load in loads:
            a = {k: v for k, v in load(mine, f.stem).items() if k.kind != "seconds"}
            b = {k: v for k, v in load(theirs, f.stem).items() if k.kind != "seconds"}
            assert a.keys() == b.keys() and b, f.stem
            for key in b:
                np.testing.assert_array_equal(a[key], b[key], err_msg=key.to_str())
    assert list_shards(run) == []
    assert not (run / "eval" / ".shards").exists()


def test_two_ranks_give_the_records_and_arrays_of_one_process(run_dir, reference, tmp_path):
    out = fresh(run_dir, tmp_path)
    job = run_job(torchrun("eval", str(out), *EVAL, *ATTACKS), tmp_path)
    assert job.returncode == 0, job.stderr[-3000:]
    assert_same_results(out, reference)
    # Merged in the order one process writes them, so the file reads the same.
    assert ([_no_seconds(r) for r in ResultsStore(out).records]
            == [_no_seconds(r) for r in ResultsStore(reference).records])


# ---------------------------------------------------------------------- a rank killed


def _worker_pid(marker: str, rank: int) -> int | None:
    """The pid of the job's worker of this rank (found by its environment)."""
    want = {f"MARGINROBUST_TEST_JOB={marker}".encode(), f"RANK={rank}".encode()}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = set((entry / "environ").read_bytes().split(b"\0"))
        except OSError:
            continue
        if want <= env:
            return int(entry.name)
    return None


def _units_in(shard: Path) -> set[tuple[str, str]]:
    path = shard / "eval" / "records.jsonl"
    if not path.exists():
        return set()
    lines = [line for line in path.read_text().split("\n")[:-1] if line]
    return {(json.loads(line)["checkpoint"], json.loads(line)["split"]) for line in lines}


@pytest.fixture(scope="module")
def killed(run_dir, tmp_path_factory) -> Path:
    """A run whose 2-rank evaluation died: rank 1 SIGKILLed once its shard held a unit."""
    parent = tmp_path_factory.mktemp("killed")
    out = fresh(run_dir, parent)
    marker = uuid.uuid4().hex
    proc = subprocess.Popen(torchrun("eval", str(out), *EVAL, *ATTACKS), cwd=parent,
                            env=_env(marker), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline, shot = time.time() + JOB_TIMEOUT, False
        while time.time() < deadline and proc.poll() is None and not shot:
            if _units_in(shard_dir(out, 1)):
                pid = _worker_pid(marker, 1)
                if pid is not None:
                    os.kill(pid, signal.SIGKILL)
                    shot = True
            time.sleep(0.01)
        assert shot, "the evaluation ended before a rank could be killed"
        assert proc.wait(timeout=JOB_TIMEOUT) != 0, "the job survived a killed rank"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    # Rank 1 (the train split of each checkpoint) had 3 units and finished 1 or 2.
    assert 1 <= len(_units_in(shard_dir(out, 1))) < 3
    assert not (out / "eval" / "records.jsonl").exists()
    return out


def test_a_killed_job_is_finished_by_a_second_one(killed, reference, tmp_path):
    out = tmp_path / killed.name
    shutil.copytree(killed, out)
    job = run_job(torchrun("eval", str(out), *EVAL, *ATTACKS), tmp_path)
    assert job.returncode == 0, job.stderr[-3000:]
    assert_same_results(out, reference)


def test_one_process_finishes_a_killed_job(killed, reference, tmp_path):
    out = tmp_path / killed.name
    shutil.copytree(killed, out)
    left = _units_in(shard_dir(out, 0)) | _units_in(shard_dir(out, 1))
    ev = evaluator()
    evaluated = []
    original = ev._evaluate

    def counting(model, x, y, split, checkpoint, *args, **kw):
        evaluated.append((checkpoint, split))
        return original(model, x, y, split, checkpoint, *args, **kw)

    ev._evaluate = counting
    evaluate_run(ev, out, ("test", "train"))
    assert_same_results(out, reference)
    # What the killed ranks finished was taken from their shards, not redone.
    assert left and not left & set(evaluated) and len(left) + len(evaluated) == 6


def test_two_ranks_finish_what_one_process_began(run_dir, reference, tmp_path):
    out = fresh(run_dir, tmp_path)
    evaluate_run(evaluator(), out, ("test",), checkpoints=list_checkpoints(out)[:2])
    job = run_job(torchrun("eval", str(out), *EVAL, *ATTACKS), tmp_path)
    assert job.returncode == 0, job.stderr[-3000:]
    assert_same_results(out, reference)


def test_warm_started_chains_are_dealt_by_split(run_dir, tmp_path):
    ref = fresh(run_dir, tmp_path / "single")
    warm = ["--warm-start", "--attacks", "fmn", "--no-certify"]
    evaluate_run(Evaluator(threats=THREATS, attacks=("fmn",), certify=False, n=12,
                           device="cpu", warm_start=True), ref, ("test", "train"))
    out = fresh(run_dir, tmp_path / "sharded")
    job = run_job(torchrun("eval", str(out), *EVAL, *warm), tmp_path)
    assert job.returncode == 0, job.stderr[-3000:]
    assert_same_results(out, ref, adversarials=True)


# ---------------------------------------------------------------------- pieces


def test_units_are_dealt_round_robin_and_chains_whole():
    units = [WorkUnit(c, s) for c in range(3) for s in ("test", "train")]
    assert shard_units(units, 2, 0) == units[0::2]
    assert shard_units(units, 2, 1) == units[1::2]
    assert shard_units(units, 4, 3) == [units[3]]
    assert sorted(sum((shard_units(units, 4, r) for r in range(4)), [])) == sorted(units)
    chains = [shard_units(units, 3, r, chained=True) for r in range(3)]
    assert chains == [[u for u in units if u.split == "test"],
                      [u for u in units if u.split == "train"], []]
    assert shard_units(units, 1, 0, chained=True) == units      # one rank: the fixed order


def test_merging_shards_is_ordered_idempotent_and_removes_them(reference, tmp_path):
    run = tmp_path / "run"
    store = ResultsStore(reference)
    records = store.records
    names = sorted({r.checkpoint for r in records})
    # Two ranks' shards holding every unit, dealt round-robin, written as ranks write.
    units = [(c, s) for c in names for s in ("test", "train")]
    for rank in (0, 1):
        shard = open_shard(run, rank)
        for c, s in units[rank::2]:
            shard.save_arrays(c, {k: v for k, v in store.load_arrays(c).items() if k.split == s})
            shard.add([r for r in records if (r.checkpoint, r.split) == (c, s)])
    assert len(list_shards(run)) == 2
    assert merge_shards(run, units) == len(records)
    assert [r.to_json() for r in ResultsStore(run).records] == [r.to_json() for r in records]
    for c in names:
        assert ResultsStore(run).load_arrays(c).keys() == store.load_arrays(c).keys()
    assert list_shards(run) == [] and merge_shards(run, units) == 0
    # A merge killed before removing a shard is redone without doubling a record.
    shard = open_shard(run, 3)
    shard.add(records[:5])
    assert merge_shards(run, units) == 5
    assert [r.to_json() for r in ResultsStore(run).records] == [r.to_json() for r in records]


def test_one_process_is_rank_0_of_1(monkeypatch):
    for key in (*distributed.LAUNCH_ENV, "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    assert not distributed.launched() and not distributed.init("cpu")
    assert (distributed.rank(), distributed.world_size(), distributed.local_rank()) == (0, 1, 0)
    assert distributed.is_main_process() and distributed.backend() is None
    assert distributed.backend_for("cpu") == "gloo"
    assert str(distributed.rank_device("cpu")) == "cpu"
    distributed.barrier()
    assert distributed.broadcast_object({"a": 1}) == {"a": 1}
    assert distributed.all_gather_object(3) == [3]
    assert distributed.all_logsumexp([0.5, -2.0]).tolist() == [0.5, -2.0]
    assert distributed.all_sum(7).item() == 7 and distributed.all_min(2.5).item() == 2.5


COLLECTIVES = """
    import math
    import torch
    from marginrobust import distributed as d

    assert d.init("cpu") and d.backend() == "gloo" and d.world_size() == 2
    r = d.rank()
    assert d.local_rank() == r and d.is_main_process() == (r == 0)
    assert d.broadcast_object({"from": r}) == {"from": 0}
    assert d.all_gather_object(r * 10) == [0, 10]
    # log-losses of the ranks' shares: log(e^a + e^b) in float64, equal bits on each rank
    mine = torch.tensor([-1000.0, 3.0], dtype=torch.float64) - r
    lse = d.all_logsumexp(mine)
    assert lse.dtype == torch.float64
    assert lse.tolist() == torch.logsumexp(torch.stack([mine + r, mine + r - 1]), 0).tolist()
    assert math.isfinite(lse[0].item())
    counts = d.all_sum(torch.tensor([r + 1, 2 ** 40]))
    assert counts.dtype == torch.int64 and counts.tolist() == [3, 2 ** 41]
    assert d.all_min(0.1 * (r + 1)).item() == 0.1
    d.barrier()
    with open(f"rank-{r}.txt", "w") as fh:
        fh.write(repr(lse.tolist()))
"""


def test_collective_helpers_under_two_gloo_ranks(tmp_path):
    script = tmp_path / "collectives.py"
    script.write_text(textwrap.dedent(COLLECTIVES))
    job = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc_per_node", "2", str(script)], cwd=tmp_path, env=_env(),
                         capture_output=True, text=True, timeout=JOB_TIMEOUT)
    assert job.returncode == 0, job.stderr[-3000:]
    # Every rank got the same bits.
    assert (tmp_path / "rank-0.txt").read_text() == (tmp_path / "rank-1.txt").read_text()


ONE_CUDA_RANK = """
    import json
    import sys
    from marginrobust import distributed
    from marginrobust.evaluate.engine import Evaluator
    from marginrobust.evaluate.run import evaluate_run
    from marginrobust.evaluate.threats import ThreatModel

    ev = Evaluator(threats=[ThreatModel("L2", (0.5, 1.0))], attacks=("pgd", "fmn"), n=12,
                   seed=0, device="cuda")
    evaluate_run(ev, sys.argv[1], ("test", "train"))
    with open("rank-0.json", "w") as fh:
        json.dump({"backend": distributed.backend(), "device": str(ev.device),
                   "rank_device": str(distributed.rank_device("cuda"))}, fh)
"""


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_rank_under_nccl_gives_the_records_of_one_process(run_dir, tmp_path):
    """One rank under torchrun on the GPU (nccl, cuda:LOCAL_RANK) against one process."""
    ref = fresh(run_dir, tmp_path / "single")
    evaluate_run(Evaluator(threats=THREATS, attacks=("pgd", "fmn"), n=12, seed=0,
                           device="cuda"), ref, ("test", "train"))
    out = fresh(run_dir, tmp_path / "sharded")
    script = tmp_path / "one_cuda_rank.py"
    script.write_text(textwrap.dedent(ONE_CUDA_RANK))
    job = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc_per_node", "1", str(script), str(out)], cwd=tmp_path,
                         env=_env(), capture_output=True, text=True, timeout=JOB_TIMEOUT)
    assert job.returncode == 0, job.stderr[-3000:]
    seen = json.loads((tmp_path / "rank-0.json").read_text())
    # The group was nccl's, the rank computed on cuda:0, and the evaluator got its own
    # device back afterwards.
    assert seen == {"backend": "nccl", "device": "cuda", "rank_device": "cuda:0"}
    assert_same_results(out, ref)
