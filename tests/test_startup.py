"""A newcomer's first contact is ``--help``: it must import none of the heavy libraries."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "timm", "foolbox", "pandas", "matplotlib", "pyautoattack", "autoattack",
         "sklearn", "numpy")

_PROBE = f"""
HEAVY = {HEAVY!r}
import json, sys
from click.testing import CliRunner
from marginrobust.cli import main
runner = CliRunner()
codes = {{}}
for args in [["--help"], *[[name, "--help"] for name in main.commands]]:
    codes[" ".join(args)] = runner.invoke(main, args).exit_code
bad = runner.invoke(main, ["train", "--epochs", "-1", "--out", "x"])
codes["bad"] = bad.exit_code
heavy = [m for m in HEAVY if m in sys.modules]
print(json.dumps({{"codes": codes, "heavy": heavy}}))
"""


def test_help_and_usage_errors_import_nothing_heavy():
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                         check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["heavy"] == []
    assert result["codes"].pop("bad") == 2
    assert set(result["codes"].values()) == {0}
    assert "eval --help" in result["codes"] and "bench --help" in result["codes"]


def test_package_import_is_lazy():
    probe = (f"import sys, marginrobust; print([m for m in {HEAVY!r} if m in sys.modules]); "
             "marginrobust.ThreatModel; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout.split("\n")
    assert out[0] == "[]" and out[1] == "True"


def test_schedule_names_on_the_command_line_match_the_schedules():
    from marginrobust.cli import SCHEDULE_NAMES
    from marginrobust.train.schedules import SCHEDULES

    assert tuple(SCHEDULE_NAMES) == tuple(SCHEDULES)
