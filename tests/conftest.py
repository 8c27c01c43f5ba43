"""Shared fixtures: small real data (scikit-learn digits) and a briefly trained model."""

from __future__ import annotations

import os

import pytest
import torch

# Two cores: one intra-op thread per test process avoids oversubscription stalls.
torch.set_num_threads(int(os.environ.get("MARGINROBUST_TEST_THREADS", "1")))


@pytest.fixture(scope="session")
def digits():
    from marginrobust import load_dataset

    return load_dataset("digits", train_subset=300, test_subset=100, seed=0)


@pytest.fixture(scope="session")
def trained_mlp(digits):
    """A bias-free MLP trained to 100% training accuracy with the package's own trainer."""
    from marginrobust import TrainConfig, Trainer, create_model

    torch.manual_seed(0)
    model = create_model("mlp", in_chans=1, img_size=8, widths=(64,))
    trainer = Trainer(model, digits.x_train, digits.y_train, digits.x_test, digits.y_test,
                      TrainConfig(epochs=40, batch_size=50, device="cpu"))
    trainer.fit()
    assert trainer.record["train_acc"] == 1.0
    return model.eval()


def kill_after_epochs(args: list[str], run_dir, epochs: int, env: dict) -> None:
    """Start a CLI process and SIGKILL it once ``run_dir`` holds ``epochs`` metric rows."""
    import signal
    import subprocess
    import time

    from marginrobust.train import read_metrics

    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if len(read_metrics(run_dir)) >= epochs:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"


def launcher_free_env(**extra: str) -> dict[str, str]:
    """This process's environment for a child run: one torch thread, no torchrun variables
    (a test started under a launcher must not make its children think they are ranks)."""
    import os

    from marginrobust import distributed

    env = {**os.environ, "OMP_NUM_THREADS": "1", **extra}
    for key in (*distributed.LAUNCH_ENV, "LOCAL_RANK"):
        env.pop(key, None)
    return env


def torchrun(*args: str, nproc: int = 2) -> list[str]:
    """The command line of ``torchrun --standalone -m marginrobust -- ARGS``."""
    import sys

    # `--` ends torchrun's own options: it would take `--n` for its `--nnodes`.
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            "--nproc_per_node", str(nproc), "-m", "marginrobust", "--", *args]


def one_error_line(result, code: int = 2, only_line: bool = False) -> str:
    """The one sentence a failed command printed: exit ``code``, no traceback, exactly one
    line starting with ``Error`` (with ``only_line``: exactly one non-empty line in all,
    for messages such as ``Stopped by SIGTERM ...``). Returns that line."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines()
             if (line.strip() if only_line else line.startswith("Error"))]
    assert len(lines) == 1, result.output
    return lines[0]
