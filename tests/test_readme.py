"""The README's Python API examples run as written (in a fresh folder, in one process)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def _api_blocks() -> list[str]:
    text = README.read_text()
    section = text[text.index("## Python API"):]
    section = section[:section.index("\n## ", 4)]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_readme_api_section_has_the_examples():
    blocks = _api_blocks()
    joined = "\n".join(blocks)
    assert len(blocks) >= 5
    for needle in ("Evaluator(", "certify=True", "class MyNet(nn.Module)", "MarginTracker(",
                   "evaluate_run(", "load_checkpoint("):
        assert needle in joined, needle


@pytest.mark.slow
def test_readme_api_examples_run_as_written(tmp_path):
    script = "\n\n".join(_api_blocks())
    (tmp_path / "readme_api.py").write_text(script)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "readme_api.py"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    # The plain module was certified, not skipped.
    assert "lipschitz and ibp skipped: 0" in out.stdout


def _layout_modules() -> list[str]:
    """The module paths the README's Layout tree names (``evaluate/attacks/base.py``)."""
    text = README.read_text()
    section = text[text.index("## Layout"):]
    tree = re.search(r"```text\n(.*?)```", section, flags=re.S).group(1)
    paths: list[str] = []
    folders: list[str] = []
    for line in tree.splitlines()[1:]:  # below "marginrobust/"
        indent = (len(line) - len(line.lstrip(" "))) // 2 - 1
        name = line.split()[0]
        folders = folders[:indent]
        if name.endswith("/"):
            folders.append(name.rstrip("/"))
        else:
            paths.append("/".join([*folders, name]))
    return paths


def test_readme_layout_lists_every_module_once():
    package = README.parent / "marginrobust"
    modules = sorted(p.relative_to(package).as_posix() for p in package.rglob("*.py")
                     if p.name != "__init__.py" or p.parent == package)
    listed = _layout_modules()
    assert len(listed) == len(set(listed)), "a module is listed twice"
    assert sorted(listed) == modules, (
        f"README Layout: missing {sorted(set(modules) - set(listed))}, "
        f"gone {sorted(set(listed) - set(modules))}")
