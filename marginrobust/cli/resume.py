"""``train --resume`` on the command line: which options it takes, and the refusal of
every other option that contradicts the stored run.

Only click and the package's torch-free modules are imported here (see :mod:`.app`).
"""

from __future__ import annotations

from typing import Any

import click

from ..errors import UserError
from .options import model_kwargs, parse_epoch_list, parse_kwargs

__all__ = ["RESUME_OPTIONS", "resume_overrides"]


# ``train --resume``: where each option of ``train`` lives in a stored run spec. Options
# not listed here (and not in RESUME_OPTIONS) describe nothing of the run.
_SPEC_PATHS: dict[str, tuple[str, ...]] = {
    "model": ("model",), "dataset": ("dataset",), "data_dir": ("data_dir",),
    "train_subset": ("train_subset",), "test_subset": ("test_subset",),
    "seed": ("init_seed",), "data_seed": ("data_seed",),
    "checkpoint_decades": ("checkpoint_decades",), "checkpoint_epochs": ("checkpoint_epochs",),
    "init_from": ("init_from",), "scale": ("scale",),
    "batch_size": ("train", "batch_size"), "schedule": ("train", "schedule"),
    "lr": ("train", "lr"), "explode_ratio": ("train", "explode_ratio"),
    "precision": ("train", "precision"), "deterministic": ("train", "deterministic"),
}
# Options that ``--resume`` takes: how long and where the run goes on, and how it shows.
RESUME_OPTIONS = ("epochs", "max_minutes", "target_log10_loss", "device")


def resume_overrides(ctx: click.Context, out: str) -> dict[str, Any]:
    """The TrainConfig changes that ``train --resume`` was given, after refusing every
    option given on the command line that contradicts the stored run.

    Args:
        ctx: The ``train`` command's context (its parameters and where each came from).
        out: The run folder.

    Raises:
        UserError: An option contradicts ``run.json``, or there is no run to resume.
    """
    from ..io import read_run_json

    stored = read_run_json(out)
    if stored is None:
        raise UserError(f"nothing to resume: {out} holds no run.json")
    run = stored["run"]
    given = {name for name in ctx.params
             if ctx.get_parameter_source(name) in (click.core.ParameterSource.COMMANDLINE,
                                                   click.core.ParameterSource.ENVIRONMENT)}
    p = ctx.params
    wanted: dict[str, Any] = {}
    for name in given & set(_SPEC_PATHS):
        value = p[name]
        if name == "checkpoint_epochs":
            value = parse_epoch_list(value)
        wanted[name] = value
    if given & {"bias", "width", "model_opts"}:
        kwargs = model_kwargs(run["model"] if "model" not in given else p["model"],
                              p["bias"], p["width"], p["model_opts"])
        keys = ({"bias"} & given) | ({"width"} & given) | set(parse_kwargs(p["model_opts"]))
        for key in sorted(keys):
            if kwargs.get(key) != run["model_kwargs"].get(key):
                raise UserError(_contradiction(f"model option {key}={kwargs.get(key)!r}",
                                               run["model_kwargs"].get(key), out))
    for name, value in wanted.items():
        path = _SPEC_PATHS[name]
        have = run[path[0]] if len(path) == 1 else run[path[0]][path[1]]
        if value != have:
            option = "--" + name.replace("_", "-")
            raise UserError(_contradiction(f"{option} {value}", have, out))
    return {name: p[name] for name in RESUME_OPTIONS if name in given}


def _contradiction(option: str, stored: Any, out: str) -> str:
    may = ", ".join("--" + o.replace("_", "-") for o in RESUME_OPTIONS)
    return (f"{option} contradicts the run in {out} (it has {stored!r}); --resume continues "
            f"the stored run and may change only {may}; drop the option, or train a new run "
            "with another --out")
