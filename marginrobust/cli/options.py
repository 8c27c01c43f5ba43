"""The command line's option lists (train, eval and bench share them), option types and
parsers.

Only click and the package's torch-free modules are imported here (see :mod:`.app`).
"""

from __future__ import annotations

import json
import math
from typing import Any

import click

from ..errors import UserError

# The names of marginrobust.train.schedules.SCHEDULES, spelled out so that parsing the
# command line imports no torch (a test checks the two lists agree).
SCHEDULE_NAMES = ("loss-based", "loss-based-capped", "loss-based-fast", "constant")
SPLIT_HELP = "Comma-separated splits: test, train or test,train."


class FiniteFloat(click.ParamType):
    """A float that must be finite (``1e400``, ``inf`` and ``nan`` are refused), with bounds.

    Args:
        min, max: Bounds, or None.
        min_open: Whether ``min`` itself is refused (a strictly positive value).
    """

    name = "float"

    def __init__(self, min: float | None = None, max: float | None = None,
                 min_open: bool = False) -> None:
        self.min, self.max, self.min_open = min, max, min_open

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        if isinstance(value, float):
            number = value
        else:
            try:
                number = float(value)
            except (TypeError, ValueError):
                self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        if self.min is not None and (number < self.min or (self.min_open and number == self.min)):
            self.fail(f"{value!r} must be {'>' if self.min_open else '>='} {self.min:g}",
                      param, ctx)
        if self.max is not None and number > self.max:
            self.fail(f"{value!r} must be <= {self.max:g}", param, ctx)
        return number


POSITIVE = FiniteFloat(0.0, min_open=True)


def parse_kwargs(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``key=value`` pairs; values are parsed as JSON when they can be (numbers, lists)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UserError(f"model options are key=value pairs, not {pair!r}")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def parse_epoch_list(text: str | None) -> list[int]:
    """``"10,50"`` → ``[10, 50]``; a malformed or negative epoch is a :class:`UserError`."""
    if not text:
        return []
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"expected comma-separated epochs, not {text!r}") from None
    if any(v < 0 for v in values):
        raise UserError("checkpoint epochs must be non-negative")
    return values


def split_csv(text: str | None) -> list[str]:
    """The non-empty, stripped items of a comma-separated option."""
    return [v.strip() for v in (text or "").split(",") if v.strip()]


def apply_options(options: list[Any]) -> Any:
    """A decorator adding a list of click options to a command, in the listed order."""
    def deco(fn: Any) -> Any:
        for opt in reversed(options):
            fn = opt(fn)
        return fn

    return deco


def _opt(*decls: str, default: Any = None, preset: bool = False, help: str = "",
         **kw: Any) -> Any:
    """An option shared by commands; under ``bench`` (``preset``) its default is the preset's.

    ``default`` is shown in the help of the other commands; under ``bench`` the option
    defaults to None and the help says ``[preset]``.
    """
    if preset:
        return click.option(*decls, default=None, help=f"{help} [preset]".strip(), **kw)
    if isinstance(default, bool) or default is None:
        return click.option(*decls, default=default, help=help, **kw)
    return click.option(*decls, default=default, show_default=True, help=help, **kw)


def model_options(preset: bool = False) -> list[Any]:
    """``--model``, ``--bias``, ``--width``, ``--model-opt``, ``--dataset``, ``--data-dir``."""
    return [
        _opt("--model", default="cnn", preset=preset,
             help="Model family (see `marginrobust models`) or timm/<arch>."),
        _opt("--bias", default="none", preset=preset,
             type=click.Choice(["none", "first", "all"]),
             help="Biases: none/first keep homogeneity, all breaks it."),
        _opt("--width", default=1.0, preset=preset, type=POSITIVE,
             help="Width multiplier (channels and hidden units)."),
        click.option("--model-opt", "model_opts", multiple=True, metavar="KEY=VALUE",
                     help="More model options, e.g. widths=[128,128]."),
        click.option("--dataset", default="digits", show_default=True,
                     help="Dataset (see `marginrobust datasets`): digits, fashion-mnist, mnist, "
                          "cifar10, imagefolder:PATH or npz:PATH."),
        click.option("--data-dir", type=click.Path(file_okay=False), default=None,
                     help="Dataset cache/download folder [default: ~/.cache/marginrobust]."),
    ]


def train_options(preset: bool = False) -> list[Any]:
    """The training options shared by ``train`` and ``bench``."""
    return [
        click.option("--epochs", type=click.IntRange(min=0), default=None,
                     help="Accepted epochs to train " + ("[preset]." if preset else
                          "[default: 100; with --resume: the stored number].")),
        _opt("--batch-size", default=100, preset=preset, type=click.IntRange(min=0),
             help="Mini-batch size; 0 for full batch."),
        _opt("--schedule", default="loss-based", preset=preset,
             type=click.Choice(list(SCHEDULE_NAMES)),
             help="Paper's loss-based rate with rollback; the same with alpha capped below "
                  "its last rollback (0.64-0.74x the paper's gradient evaluations on "
                  "digits); loss-based-fast: the paper's step and descent test, an attempt "
                  "that ends above the last accepted loss runs up to 3 more epochs before "
                  "it is judged and an alarm stops exploding ones (0.34-0.41x the paper's "
                  "gradient evaluations and 0.42-0.44x its wall time to log10 loss -30 on "
                  "digits, margins within 1%); or constant."),
        click.option("--lr", type=POSITIVE, default=None,
                     help="alpha_0 for loss-based [0.1]; the rate for constant [0.01]."),
        _opt("--train-subset", preset=preset, type=click.IntRange(min=1),
             help="Seeded class-balanced training subset size (default: all)."),
        _opt("--test-subset", preset=preset, type=click.IntRange(min=1),
             help="Seeded class-balanced test subset size (default: all)."),
        click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
                     help="Seed of initialisation, data order and subsets."),
        click.option("--data-seed", type=click.IntRange(min=0), default=None,
                     help="Seed of the subsets alone, to hold the training and test images "
                          "fixed across seeds [default: --seed]."),
        _opt("--checkpoint-decades", default=1.0, preset=preset, type=FiniteFloat(0.0),
             help="Checkpoint every k decades of the summed loss (0: off)."),
        click.option("--max-minutes", type=POSITIVE, default=None,
                     help="Stop after this much training time."),
        click.option("--target-log10-loss", type=FiniteFloat(), default=None,
                     help="Stop once log10 of the summed training loss reaches this value."),
        click.option("--explode-ratio", type=FiniteFloat(1.0, min_open=True), default=500.0,
                     show_default=True,
                     help="Roll back when a batch loss exceeds this multiple of the last mean "
                          "loss."),
        click.option("--device", default="auto", show_default=True,
                     help="auto (cuda when present), cpu, cuda or cuda:N."),
        click.option("--precision", type=click.Choice(["fp32", "tf32"]), default="fp32",
                     show_default=True,
                     help="Kernels of the training steps on a GPU: exact fp32, or TF32 "
                          "(faster, less exact). Margins and losses are always measured in "
                          "exact fp32 with float64 reductions."),
        click.option("--deterministic/--no-deterministic", default=True, show_default=True,
                     help="Deterministic GPU kernels, no cuDNN autotuning: a resumed run "
                          "equals an uninterrupted one bit for bit on a GPU too."),
    ]


def eval_options(preset: bool = False) -> list[Any]:
    """The evaluation options shared by ``eval`` and ``bench``."""
    return [
        _opt("--attacks", default="autoattack,pgd,fmn", preset=preset,
             help="Comma-separated attacks (see `marginrobust attacks`)."),
        click.option("--norms", default="L2,Linf", show_default=True,
                     help="Comma-separated threat norms: L2, Linf."),
        click.option("--eps-l2", default=None, metavar="E1,E2",
                     help="L2 budgets [dataset default, e.g. digits 0.5,1.0; cifar10 0.5]."),
        click.option("--eps-linf", default=None, metavar="E1,E2",
                     help="Linf budgets, fractions allowed [dataset default, e.g. cifar10 "
                          "8/255]."),
        # --n-points too: torchrun's own parser takes a bare --n for its --nnodes.
        _opt("--n", "--n-points", "n_points", default=100, preset=preset,
             type=click.IntRange(min=1),
             help="Evaluation points per split (seeded, class-balanced, the same for every "
                  "checkpoint)."),
        click.option("--split", "splits", default="test,train", show_default=True,
                     help=SPLIT_HELP),
        click.option("--aa-version", type=click.Choice(["standard", "plus", "rand"]),
                     default="standard", show_default=True,
                     help="AutoAttack version (ignored when --aa-attacks names a custom set)."),
        _opt("--aa-attacks", preset=preset, metavar="A1,A2",
             help="A cheaper custom AutoAttack set, e.g. apgd-ce,apgd-t ('standard': all)."),
        click.option("--warm-start", is_flag=True,
                     help="Start FMN at each checkpoint from the previous checkpoint's "
                          "adversarial points (off: every checkpoint is attacked from scratch)."),
        click.option("--certify", "certify_names", default=None, metavar="C1,C2",
                     help="Certifiers to run, from lipschitz, ibp, crown, alpha-crown, exact "
                          "[default set: lipschitz, ibp, crown; exact where it is cheap]."),
        click.option("--no-certify", is_flag=True, help="Skip the certified radii."),
        click.option("--eval-seed", type=click.IntRange(min=0), default=0, show_default=True,
                     help="Seed of the evaluation points and of the attacks."),
    ]


def model_kwargs(model: str, bias: str | None, width: float | None,
                  model_opts: tuple[str, ...]) -> dict[str, Any]:
    """The model factory's options from ``--bias``, ``--width`` and ``--model-opt``."""
    kwargs: dict[str, Any] = {}
    if not model.startswith("timm/"):
        kwargs = {"bias": bias or "none", "width": 1.0 if width is None else width}
    kwargs.update(parse_kwargs(model_opts))
    return kwargs


def certify_choice(names: str | None, none: bool) -> bool | str:
    """What ``--certify`` and ``--no-certify`` ask for: True (the default set), False, or
    the names given.

    Raises:
        UserError: Both options were given.
    """
    if none and names is not None:
        raise UserError("--certify and --no-certify contradict each other; give one")
    return False if none else (True if names is None else names)

