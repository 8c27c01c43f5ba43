"""What produced each robustness column, in words, from the settings table.

A column's header on the page says which attacks (or certificate) made its figures:
``aa`` = the AutoAttack version and the attacks it ran, ``worst`` = the attacks it takes
the worst case over, ``median_dist`` = the minimal-norm attacks, and so on. Where the rows
of a table come from several settings, each settings id gets its own description.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable
from typing import Any

import pandas as pd

from .figures import HALF_EPS, MEDIAN, MIN_RADIUS, RADIUS, FigureIndex
from .methods import is_evaluator_method

# pyautoattack's standard version (its run_standard_evaluation with version="standard").
STANDARD_AUTOATTACK = ("apgd-ce", "apgd-t", "fab-t", "square")
NOT_RECORDED = "(not recorded)"
_FIXED = {"cert": "certified accuracy: Lipschitz or IBP certificate",
          RADIUS: "median Lipschitz-certified radius (misclassified points: 0)",
          HALF_EPS: "budget below which the Lipschitz certificate certifies half the points",
          MIN_RADIUS: "smallest Lipschitz-certified L2 radius on the training points",
          "clean": "clean accuracy on the evaluated points"}


def _parsed(config: str) -> dict[str, Any] | None:
    try:
        value = json.loads(config) if config and config != NOT_RECORDED else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def autoattack_text(config: str) -> str:
    """``AutoAttack custom: apgd-ce, apgd-t`` of an AutoAttack config.

    Args:
        config: The records' ``config`` (canonical JSON, empty where not recorded).
    """
    options = _parsed(config)
    if options is None:
        return "AutoAttack (options not recorded)"
    version = str(options.get("version", "standard"))
    attacks = options.get("attacks_to_run")
    if version == "custom" and attacks:
        return f"AutoAttack custom: {', '.join(map(str, attacks))}"
    if version == "standard":
        return f"AutoAttack standard: {', '.join(STANDARD_AUTOATTACK)}"
    return f"AutoAttack {version}"


def _worst_text(config: str, methods: Iterable[str]) -> str:
    options = _parsed(config)
    attacks = options.get("attacks") if options else None
    if isinstance(attacks, dict):
        names = [autoattack_text(json.dumps(o)) if m == "autoattack" else str(m)
                 for m, o in sorted(attacks.items())]
    else:  # older records: the attacks that ran at this setting
        names = [m for m in sorted(methods) if not is_evaluator_method(m)]
    return "worst case over: " + ", ".join(names)


def setting_texts(settings: pd.DataFrame, minimal: Collection[str]) -> dict[str, dict[str, str]]:
    """Per settings id, per measure (``aa``, ``worst``, ``median_dist``…), its words.

    Args:
        settings: The settings table (``settings, method, config``).
        minimal: The minimal-norm methods.
    """
    out: dict[str, dict[str, str]] = {}
    for sid, rows in settings.groupby("settings", sort=False):
        configs = dict(zip(rows["method"], rows["config"]))
        methods = list(configs)
        texts = dict(_FIXED)
        if "autoattack" in configs:
            texts["aa"] = autoattack_text(configs["autoattack"])
        if "worst" in configs:
            texts["worst"] = _worst_text(configs["worst"], methods)
        found = sorted(m for m in methods if m in minimal)
        if found:
            texts[MEDIAN] = ("smallest median minimal distance among: "
                                    + ", ".join(found))
        out[str(sid)] = texts
    return out


def column_notes(columns: Iterable[str], ids: Iterable[Any],
                 texts: dict[str, dict[str, str]], figures: FigureIndex) -> dict[str, str]:
    """Per robustness column of a table, what produced it (``A: …; B: …`` where the table's
    settings ids describe it differently).

    Args:
        columns: The table's columns.
        ids: The settings ids of its rows (missing ones are ignored).
        texts: :func:`setting_texts`.
        figures: The key of each robustness column.
    """
    present = [str(i) for i in dict.fromkeys(ids) if isinstance(i, str) and i in texts]
    out = {}
    for col in figures.select(columns):
        measure = str(figures.measure(col))
        found = {sid: texts[sid][measure] for sid in present if measure in texts[sid]}
        if not found:
            if measure in _FIXED:
                out[col] = _FIXED[measure]
            continue
        if len(set(found.values())) == 1:
            out[col] = next(iter(found.values()))
        else:
            out[col] = "; ".join(f"{sid}: {text}" for sid, text in found.items())
    return out


def legend(texts: dict[str, dict[str, str]], ids: Iterable[Any]) -> str:
    """One sentence naming the attack set of ``aa`` and ``worst`` for some settings ids.

    Args:
        texts: :func:`setting_texts`.
        ids: The settings ids to describe.
    """
    parts = []
    for sid in [str(i) for i in dict.fromkeys(ids) if isinstance(i, str) and i in texts]:
        named = [f"`{p}` = {texts[sid][p]}" for p in ("aa", "worst", MEDIAN)
                 if p in texts[sid]]
        if named:
            parts.append(f"settings {sid}: " + "; ".join(named))
    return ("Attack sets — " + " | ".join(parts) + ".") if parts else ""
