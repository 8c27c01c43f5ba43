"""Which runs are seeds of one configuration, and which differ only in their schedule.

Read from each run's ``run.json`` (``run``): two runs are **seeds of one configuration**
when everything that decides their trajectory is equal but the seeds (``init_seed``,
``train.seed``, and ``data_seed`` where no subset is drawn, since it then draws nothing).
What only stops, checkpoints or places a run (epochs, time and loss targets, checkpoint
spacing, device, evaluation batch size, data folder) does not count. Two runs are a
**schedule pair** when they are equal in all of that and in the seeds, but differ in the
learning-rate schedule (``schedule``, ``lr`` and the loss-based rule's options).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .loader import RunData

SEEDS = (("init_seed",), ("train", "seed"))
NOT_DEFINING = (("train", "epochs"), ("train", "max_minutes"), ("train", "target_log10_loss"),
                ("train", "device"), ("train", "eval_batch_size"), ("checkpoint_decades",),
                ("checkpoint_epochs",), ("data_dir",))
SCHEDULE = (("train", "schedule"), ("train", "lr"), ("train", "lr_up"), ("train", "lr_down"),
            ("train", "alpha_min"), ("train", "explode_ratio"))


@dataclass(frozen=True)
class RunConfig:
    """What a run is an instance of.

    Attributes:
        run: The run's label.
        config: Canonical JSON of what decides the trajectory, seeds left out.
        pair: The same without the schedule, seeds kept: runs sharing it differ in their
            schedule only.
        seed: The initialisation seed (None where not recorded).
        schedule: The schedule as the tables name it (``loss-based, lr=0.1``).
        description: The configuration in a few words (model options, schedule).
    """

    run: str
    config: str
    pair: str
    seed: int | None
    schedule: str
    description: str


def _drop(spec: dict[str, Any], paths: Sequence[tuple[str, ...]]) -> dict[str, Any]:
    out = json.loads(json.dumps(spec, default=str))  # a deep copy of plain values
    for path in paths:
        node = out
        for key in path[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(path[-1], None)
    return out


def _get(spec: dict[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = spec
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
    return node


def _schedule_text(spec: dict[str, Any]) -> str:
    train = spec.get("train") or {}
    text = str(train.get("schedule") or "?")
    return f"{text}, lr={train['lr']:g}" if isinstance(train.get("lr"), (int, float)) else text


def run_config(run: RunData) -> RunConfig:
    """The configuration, schedule pair key and seed of one run (module docstring).

    Args:
        run: A loaded run.
    """
    spec = run.info.get("run") or {}
    seeds = list(SEEDS)
    if spec.get("train_subset") is None and spec.get("test_subset") is None:
        seeds.append(("data_seed",))
    defining = _drop(spec, [*NOT_DEFINING, *seeds])
    config = json.dumps(defining, sort_keys=True, separators=(",", ":"))
    seed_values = [_get(spec, p) for p in SEEDS]
    pair = json.dumps({"config": _drop(defining, SCHEDULE), "seeds": seed_values},
                      sort_keys=True, separators=(",", ":"))
    kwargs = spec.get("model_kwargs") or {}
    options = ", ".join(f"{k}={v}" for k, v in sorted(kwargs.items()))
    model = f"{spec.get('model')} ({options})" if options else str(spec.get("model"))
    seed = seed_values[0]
    return RunConfig(run.label, config, pair, int(seed) if isinstance(seed, int) else None,
                     _schedule_text(spec), f"{model}; {_schedule_text(spec)}")


def run_configs(runs: Sequence[RunData]) -> dict[str, RunConfig]:
    """:func:`run_config` of every run, by label; descriptions made distinct.

    Two configurations of one dataset that differ only where the description does not look
    (a data subset, a precision) get ``#1``, ``#2``… after theirs; the same description on
    two datasets is not ambiguous (the tables name the dataset).

    Args:
        runs: Loaded runs.
    """
    out = {run.label: run_config(run) for run in runs}
    # Descriptions are told apart within a dataset: the tables name the dataset beside them.
    dataset = {run.label: str((run.info.get("run") or {}).get("dataset")) for run in runs}
    seen: dict[tuple[str, str], list[str]] = {}
    for label, cfg in out.items():
        configs = seen.setdefault((dataset[label], cfg.description), [])
        if cfg.config not in configs:
            configs.append(cfg.config)
    for label, cfg in out.items():
        configs = seen[(dataset[label], cfg.description)]
        if len(configs) > 1:
            k = configs.index(cfg.config) + 1
            out[label] = RunConfig(cfg.run, cfg.config, cfg.pair, cfg.seed, cfg.schedule,
                                   f"{cfg.description} #{k}")
    return out
