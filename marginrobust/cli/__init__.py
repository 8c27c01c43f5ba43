"""The ``marginrobust`` command line: each command is a thin caller of the Python API.

One module per command group (:mod:`.info`: models, datasets, attacks; :mod:`.train`:
train, check-homogeneity; :mod:`.evaluate`: eval; :mod:`.bench`: bench, with
:mod:`.pipeline`; :mod:`.board`: leaderboard, compare), on shared parts: the group and its
error handling (:mod:`.app`), option lists (:mod:`.options`), the evaluator built from
options (:mod:`.build`), what is printed (:mod:`.output`) and ``train --resume``
(:mod:`.resume`). Only click and the package's torch-free modules are imported here.
"""

from __future__ import annotations

from . import bench, board, evaluate, info, train  # noqa: F401  (register the commands)
from .app import main
from .build import build_evaluator
from .options import SCHEDULE_NAMES
from .output import summary_table

__all__ = ["SCHEDULE_NAMES", "build_evaluator", "main", "summary_table"]
