"""Cells for people and for machines: formatted text, strict-JSON values.

Shared by the rendered pages and ``compare``; nothing here knows where a value came from.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from .columns import INTEGER_COLUMNS

MISSING = "—"


def is_missing(value: Any) -> bool:
    """Whether a cell holds no value (None, NaN or pandas' NA); strings never do.

    Args:
        value: A cell of a frame.
    """
    if value is None:
        return True
    if isinstance(value, str):
        return False
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # list-like cells (flags) are values
        return False


def format_value(column: str, value: Any) -> str:
    """A cell for people: 4 significant digits, counts as integers, ``—`` when missing.

    Args:
        column: The column's name (counts such as ``epoch`` print as integers).
        value: The raw value.
    """
    if isinstance(value, str):
        return value
    if is_missing(value):
        return MISSING
    number = float(value)
    if math.isinf(number):
        return "∞" if number > 0 else "−∞"
    if column in INTEGER_COLUMNS and number.is_integer():
        return str(int(number))
    return f"{number:.4g}"


def json_value(value: Any) -> Any:
    """A value for strict JSON: non-finite and missing numbers become None.

    Integers (Python or NumPy, as in the frames' ``Int64`` columns) stay integers.

    Args:
        value: A cell of a frame.
    """
    if value is None or isinstance(value, (str, bool)):
        return value
    if is_missing(value):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    number = float(value)
    return number if math.isfinite(number) else None


def json_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The rows of ``frame`` as JSON-ready dicts (see :func:`json_value`).

    Args:
        frame: Any frame.
    """
    return [{k: json_value(v) for k, v in row.items()} for row in frame.to_dict("records")]
