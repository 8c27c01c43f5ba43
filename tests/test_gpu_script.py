"""benchmarks/gpu.sh: its dry run on the CPU, its options, its offline wheel install.

No test here may have the word the script selects its tests by (``-k``) in its name, or
the dry run would run this file again from inside itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu.sh"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MARGINROBUST_")}
    env.update(PYTHON=sys.executable, OMP_NUM_THREADS="1", **extra)
    return env


def _script(*args: str, timeout: int = 600, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, env=_env(**env),
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu") / "results.json"
    committed = ROOT / "benchmarks" / "results-cuda.json"
    before = committed.stat().st_mtime_ns if committed.exists() else None
    proc = _script("--device", "cpu", "--out", str(out))
    after = committed.stat().st_mtime_ns if committed.exists() else None
    return proc, out, before == after


def test_the_dry_run_exits_0_and_writes_every_part_of_the_suite(dry_run):
    proc, out, committed_untouched = dry_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert committed_untouched
    payload = json.loads(out.read_text())
    assert payload["device"] == "cpu" and payload["tiny"] is True
    assert payload["complete"] is True
    assert set(payload["seconds"]) == {"train", "loss", "margins", "eval", "certify", "presets"}
    rows = payload["results"]
    assert not [r for r in rows if r["figure"] == "crashed"]
    names = [r["benchmark"] for r in rows]
    for expected in ("training step (cnn 1x28x28", "training step (vgg16 3x32x32",
                     "loss step (cnn 28x28", "loss step (vgg16 32x32", "loss alone",
                     "margin statistics (cnn 28x28", "margin statistics (vgg16 32x32",
                     "measurement precision (vgg16", "eval overhead: AutoAttack",
                     "eval overhead: FMN L2", "certify: cnn 28x28", "certify: vgg16",
                     "cuda preset digits", "cuda preset fashion-mnist, mnist",
                     "cuda preset cifar10, imagefolder", "CUDA tests"):
        assert any(n.startswith(expected) for n in names), expected
    figures = {(r["benchmark"].split(" (")[0], r["figure"]) for r in rows}
    for figure in ("throughput ratio marginrobust/plain",
                   "trainer epoch: time ratio --deterministic / off",
                   "trainer epoch: time ratio --precision tf32 / fp32"):
        assert ("training step", figure) in figures
    presets = {r["figure"] for r in rows if r["benchmark"].startswith("cuda preset")}
    assert presets == {"seconds per epoch attempt (SGD pass + train-set stats)",
                       "seconds per accepted epoch (paper's schedule)",
                       "seconds per checkpoint evaluation (estimate)",
                       "hours for the preset (estimate)"}
    # A dry run judges no target, and the fused loss agreed with the reference.
    assert all(r["ok"] is None for r in rows if not r["benchmark"].startswith("CUDA tests"))
    fused = [r for r in rows if r["figure"] == "time ratio fused step / log_losses step"]
    assert fused and all("bit for bit: yes" in r["detail"] and ": NO" not in r["detail"]
                         for r in fused)
    tests = [r for r in rows if r["benchmark"].startswith("CUDA tests")]
    assert tests[0]["figure"] == "tests passed" and tests[0]["ok"] is True
    assert any("skipped" in r["detail"] for r in tests[1:])  # no GPU here


def test_help_and_malformed_options():
    proc = _script("--help")
    assert proc.returncode == 0 and "--device cpu" in proc.stdout
    assert "MARGINROBUST_WHEELS" in proc.stdout
    proc = _script("--device", "tpu")
    assert proc.returncode == 2 and "must be cuda or cpu" in proc.stderr
    proc = _script("--frobnicate")
    assert proc.returncode == 2 and "unknown option" in proc.stderr


def test_asking_for_a_gpu_on_a_machine_without_one_is_one_sentence():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    proc = _script("--check")
    assert proc.returncode == 2 and "no CUDA device here" in proc.stderr


def _wheel(folder: Path, name: str = "mrwheelcheck") -> Path:
    """A minimal pure-Python wheel, as pip download would have left one."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-0.1-py3-none-any.whl"
    info = f"{name}-0.1.dist-info"
    files = {f"{name}/__init__.py": "VALUE = 42\n",
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                              "Tag: py3-none-any\n"}
    with zipfile.ZipFile(path, "w") as zf:
        for arc, text in files.items():
            zf.writestr(arc, text)
        zf.writestr(f"{info}/RECORD", "".join(f"{arc},,\n" for arc in files)
                    + f"{info}/RECORD,,\n")
    return path


def test_wheels_are_installed_offline_into_their_own_folder(tmp_path):
    _wheel(tmp_path / "whl")
    site = tmp_path / "site"
    proc = _script("--device", "cpu", "--check", MARGINROBUST_WHEELS=str(tmp_path / "whl"),
                   MARGINROBUST_SITE=str(site), PIP_NO_INDEX="1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (site / "mrwheelcheck" / "__init__.py").read_text() == "VALUE = 42\n"
    assert "check passed" in proc.stdout
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = _script("--device", "cpu", "--check", MARGINROBUST_WHEELS=str(empty))
    assert proc.returncode == 2 and "no wheels in" in proc.stderr


def test_slimmed_wheel_drops_the_examples_and_still_installs_offline(tmp_path):
    from benchmarks.gpu_wheels import DROP, download_command, pinned, slim_folder

    path = _wheel(tmp_path / "whl", name="pyautoattack")
    info = "pyautoattack-0.1.dist-info"
    # Add the kind of payload the real wheel ships: example weights, listed in RECORD.
    with zipfile.ZipFile(path) as zf:
        files = {n: zf.read(n) for n in zf.namelist()}
    files["pyautoattack/examples/model_test.pt"] = b"\0" * 4096
    files["pyautoattack/examples/tf_model.weight.h5"] = b"\0" * 4096
    files["pyautoattack/examples/eval.py"] = b"print('kept')\n"
    files[f"{info}/RECORD"] += b"".join(f"pyautoattack/examples/{n},,\n".encode()
                                        for n in ("model_test.pt", "tf_model.weight.h5",
                                                  "eval.py"))
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    mode = path.stat().st_mode & 0o777

    assert slim_folder(path.parent) == {path.name: 2}
    assert path.stat().st_mode & 0o777 == mode
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        record = zf.read(f"{info}/RECORD").decode()
    assert "pyautoattack/examples/eval.py" in names and "pyautoattack/__init__.py" in names
    assert not any(n.endswith((".pt", ".h5")) for n in names)
    assert ".pt," not in record and ".h5," not in record and "eval.py," in record
    assert slim_folder(path.parent) == {path.name: 0}  # nothing left to drop: untouched

    site = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index",
                           "--no-deps", "--target", str(site), str(path)],
                          capture_output=True, text=True, env=_env(PIP_NO_INDEX="1"))
    assert proc.returncode == 0, proc.stderr
    assert (site / "pyautoattack" / "examples" / "eval.py").exists()
    assert not (site / "pyautoattack" / "examples" / "model_test.pt").exists()

    # The download: binary wheels for the target Python, no dependencies, at the versions
    # the suite runs with here.
    assert "pyautoattack" in DROP
    specs = pinned()
    assert any(s.startswith("foolbox==") for s in specs)
    assert any(s.lower().startswith("gitpython") for s in specs)  # foolbox imports git
    cmd = download_command(tmp_path, specs, "3.12")
    assert cmd[cmd.index("--python-version") + 1] == "3.12"
    assert "--no-deps" in cmd and "--only-binary=:all:" in cmd
