"""Make the folder of wheels that ``benchmarks/gpu.sh`` installs on a CUDA machine without network.

A typical CUDA image has torch (CUDA build), torchvision, timm, numpy, scipy, pandas,
scikit-learn, matplotlib, click, tqdm, requests and pytest, but not foolbox, eagerpy,
pyautoattack, GitPython (which foolbox imports), gitdb, smmap, tabulate or markdown-it-py (with
mdurl; the leaderboard renders its notes with it). This downloads those,
at the versions installed where it runs (the ones the test suite passed with), as binary wheels
for the target interpreter, and slims the pyautoattack wheel: it ships 42 MB of example weights
that nothing imports. Run it where pip reaches an index, once::

    python -m benchmarks.gpu_wheels                      # -> .gpu/whl, for CPython 3.12
    python -m benchmarks.gpu_wheels --python-version 3.11 --out DIR

then send ``.gpu/`` with the checkout and run ``MARGINROBUST_WHEELS=.gpu/whl benchmarks/gpu.sh``
there. ``.gpu/`` is in ``.gitignore``.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import subprocess
import sys
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

#: What a CUDA image usually lacks, as distribution names.
PACKAGES: tuple[str, ...] = ("foolbox", "eagerpy", "pyautoattack", "GitPython", "gitdb", "smmap",
                             "tabulate", "markdown-it-py", "mdurl")

#: Files inside wheels that are never imported and only make the folder heavy.
DROP: dict[str, tuple[str, ...]] = {
    "pyautoattack": ("*/examples/*.pt", "*/examples/*.h5"),
}


def pinned(packages: tuple[str, ...] = PACKAGES) -> list[str]:
    """``name==version`` for each package as installed here, or the bare name if it is not."""
    specs = []
    for name in packages:
        try:
            specs.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            specs.append(name)
    return specs


def download_command(out: Path, specs: list[str], python_version: str,
                     platform: str = "manylinux2014_x86_64") -> list[str]:
    """The ``pip download`` call: binary wheels only, no dependencies, for the target Python."""
    return [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--python-version", python_version, "--implementation", "cp",
            "--platform", platform, "-d", str(out), *specs]


def slim_wheel(path: Path, patterns: tuple[str, ...]) -> int:
    """Rewrite the wheel at ``path`` without the members matching ``patterns``.

    Their lines go from the ``RECORD`` too, so pip installs the result without complaint.
    The new wheel replaces the old one atomically. Returns the number of members dropped.
    """
    mode = path.stat().st_mode & 0o777
    with zipfile.ZipFile(path) as src:
        members = src.infolist()
        drop = {m.filename for m in members
                if any(fnmatch.fnmatch(m.filename, p) for p in patterns)}
        if not drop:
            return 0
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".whl.part")
        os.close(fd)
        try:
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
                for member in members:
                    if member.filename in drop:
                        continue
                    data = src.read(member)
                    if member.filename.endswith(".dist-info/RECORD"):
                        lines = data.decode().splitlines(keepends=True)
                        data = "".join(line for line in lines
                                       if line.split(",", 1)[0] not in drop).encode()
                    dst.writestr(member, data)
            os.chmod(tmp, mode)  # mkstemp makes it private; keep the original's mode
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return len(drop)


def slim_folder(folder: Path) -> dict[str, int]:
    """Slim every wheel in ``folder`` that :data:`DROP` names; members dropped per wheel."""
    dropped = {}
    for wheel in sorted(folder.glob("*.whl")):
        project = wheel.name.split("-", 1)[0].lower()
        if project in DROP:
            dropped[wheel.name] = slim_wheel(wheel, DROP[project])
    return dropped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_wheels", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(".gpu/whl"),
                        help="folder for the wheels (default .gpu/whl)")
    parser.add_argument("--python-version", default="3.12",
                        help="the CUDA machine's Python, as pip's --python-version (default 3.12)")
    parser.add_argument("--platform", default="manylinux2014_x86_64")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    specs = pinned()
    proc = subprocess.run(download_command(args.out, specs, args.python_version, args.platform))
    if proc.returncode != 0:
        print("gpu_wheels: pip download failed (is a package index reachable?)", file=sys.stderr)
        return 2
    for name, count in slim_folder(args.out).items():
        print(f"[gpu_wheels] {name}: dropped {count} example files")
    wheels = sorted(args.out.glob("*.whl"))
    size = sum(w.stat().st_size for w in wheels) / 1e6
    print(f"[gpu_wheels] {len(wheels)} wheels, {size:.1f} MB in {args.out}: {', '.join(specs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
