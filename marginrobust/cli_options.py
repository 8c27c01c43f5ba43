"""The command line's shared parts: option lists (train, eval and bench share them), the
option types, the error-to-exit-code group, and the evaluator built from options.

Only click and the package's torch-free modules are imported here, like in ``cli``.
"""

from __future__ import annotations

import errno
import json
import math
import os
from typing import Any

import click

from .errors import UserError

# The names of marginrobust.train.schedules.SCHEDULES, spelled out so that parsing the
# command line imports no torch (a test checks the two lists agree).
SCHEDULE_NAMES = ("loss-based", "loss-based-capped", "loss-based-fast", "constant")
SPLIT_HELP = "Comma-separated splits: test, train or test,train."


# OS faults that a user can mend (space, quota, permissions): one sentence and exit 1.
_FAULT_ADVICE = {
    errno.ENOSPC: "free some space and rerun the same command to continue",
    errno.EDQUOT: "free some space (or raise the quota) and rerun the same command to continue",
    errno.EROFS: "the file system is read-only; use a writable folder",
    errno.EACCES: "you may not write there; fix its permissions or use another folder",
    errno.EPERM: "you may not write there; fix its permissions or use another folder",
}
FAULT_EXIT = 1


def fault_sentence(exc: OSError) -> str | None:
    """One sentence for an OS fault a user can mend (None for any other error)."""
    advice = _FAULT_ADVICE.get(exc.errno or -1)
    if advice is None:
        return None
    where = f" {exc.filename}" if exc.filename else ""
    return (f"could not write{where}: {exc.strerror or os.strerror(exc.errno or 0)}; "
            f"{advice} (every file written before is complete)")


class CliGroup(click.Group):
    """Turns failures a user can act on into one sentence: a :class:`UserError` exits 2,
    an OS fault while writing (full disk, read-only folder) exits 1, and a stop signal
    (Ctrl-C, SIGTERM) says where the command stopped and exits 130 or 143."""

    def invoke(self, ctx: click.Context) -> Any:
        from . import stopping

        previous = stopping.install()
        stopping.note("")
        try:
            return super().invoke(ctx)
        except UserError as exc:
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(2)
        except OSError as exc:
            sentence = fault_sentence(exc)
            if sentence is None:
                raise
            click.echo(f"Error: {sentence}", err=True)
            ctx.exit(FAULT_EXIT)
        except stopping.Stopped as exc:
            at = stopping.where()
            click.echo(f"Stopped by {exc}{' ' + at if at else ''}; rerun the same command "
                       "to continue where it stopped.", err=True)
            ctx.exit(exc.exit_code)
        finally:
            stopping.restore(previous)


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
                  "its last rollback (fewer wasted epochs: 0.70-0.80x the paper's gradient "
                  "evaluations on digits); the paper's rule with an in-epoch alarm that ends "
                  "an exploding epoch early (loss-based-fast: 0.82-0.88x the paper's "
                  "gradient evaluations on digits, still 63-65% wasted); or constant."),
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


def build_evaluator(*, attacks: str, norms: str, eps_l2: str | None, eps_linf: str | None,
                    n: int, seed: int, device: str, certify: bool | str, aa_version: str,
                    aa_attacks: str | None, warm_start: bool = False) -> Any:
    """An :class:`~marginrobust.Evaluator` from the CLI's options (``eval`` and ``bench``).

    ``certify`` is True (the default set), False (``--no-certify``) or the comma-separated
    names of ``--certify``."""
    from .evaluate.engine import Evaluator
    from .evaluate.threats import ThreatModel, normalize_norm, parse_eps_list

    wanted = [normalize_norm(v) for v in split_csv(norms)]
    if not wanted:
        raise UserError("give at least one norm, e.g. --norms L2,Linf")
    given = {"L2": (eps_l2, "--eps-l2"), "Linf": (eps_linf, "--eps-linf")}
    threats = [ThreatModel(norm, parse_eps_list(given[norm][0], option=given[norm][1]))
               for norm in wanted if given[norm][0] is not None]
    names = split_csv(attacks)
    if not names:
        raise UserError("give at least one attack, e.g. --attacks pgd")
    options: dict[str, dict[str, Any]] = {}
    if "autoattack" in names:
        custom = aa_attacks and aa_attacks != "standard"
        if custom and not split_csv(aa_attacks):
            raise UserError(f"--aa-attacks names no attack: {aa_attacks!r}")
        options["autoattack"] = ({"version": "custom", "attacks_to_run": split_csv(aa_attacks)}
                                 if custom else {"version": aa_version})
    if isinstance(certify, str):
        certify = split_csv(certify)
        if not certify:
            raise UserError("give at least one certifier to --certify, or use --no-certify")
    return Evaluator(threats=threats, norms=wanted, attacks=names, certify=certify, n=n,
                     seed=seed, device=device, attack_options=options, warm_start=warm_start)


def summary_table(records: list[Any]) -> str:
    """Robust accuracy per checkpoint, split, method, norm and eps, as a text table."""
    from tabulate import tabulate

    def number(value: float | None, fmt: str) -> str:
        return "" if value is None else format(value, fmt)

    rows = [[r.checkpoint, r.split, r.method, r.norm, f"{r.eps:g}", f"{r.clean_acc:.3f}",
             "skipped" if getattr(r, "skipped", None) else number(r.robust_acc, ".3f"),
             number(r.median_distance, ".4g"), number(r.normalized_margin, ".3e")]
            for r in records if r.method in ("autoattack", "pgd", "fmn", "certified", "worst")]
    return tabulate(rows, headers=["checkpoint", "split", "method", "norm", "eps", "clean",
                                   "robust", "median dist", "norm. margin"])


def bench_summary(records: list[Any], board: Any = None) -> str:
    """One row per checkpoint of a bench: where it is on the trajectory, its margin, and
    its AutoAttack and certified accuracies per (norm, ε) on the test points: the figures
    the leaderboard leads with, not every record (those are in the run's records.jsonl).

    Args:
        records: The run's evaluation records.
        board: The leaderboard's README (said at the end), or None.
    """
    from tabulate import tabulate

    headline = ("autoattack", "certified")
    splits = [r.split for r in records if r.method in headline]
    split = "test" if "test" in splits else (splits[0] if splits else "test")
    keys = sorted({(r.norm, r.eps) for r in records
                   if r.method in headline and r.split == split})
    by_ckpt: dict[str, dict[str, Any]] = {}
    for r in records:
        row = by_ckpt.setdefault(r.checkpoint, {"epoch": r.epoch, "log10 loss": r.log10_loss,
                                               "norm. margin": r.normalized_margin})
        if r.method in headline and r.split == split and r.robust_acc is not None:
            tag = "AA" if r.method == "autoattack" else "cert"
            row[f"{tag} {r.norm} {r.eps:g}"] = r.robust_acc
    columns = ["epoch", "log10 loss", "norm. margin",
               *[f"{tag} {n} {e:g}" for n, e in keys for tag in ("AA", "cert")]]
    columns = [c for c in columns if any(c in row for row in by_ckpt.values())]

    def cell(column: str, value: Any) -> str:
        if value is None:
            return ""
        if column == "epoch":
            return str(value)
        return f"{value:.3e}" if column == "norm. margin" else f"{value:.3f}"

    rows = sorted(by_ckpt.values(), key=lambda row: row["epoch"] or 0)
    table = tabulate([[cell(c, row.get(c)) for c in columns] for row in rows],
                     headers=columns, disable_numparse=True)
    where = f"\nleaderboard: {board}" if board is not None else ""
    return (f"AutoAttack (AA) and certified (cert) accuracy on the {split} points:\n{table}\n"
            f"{len(records)} records (every split, attack, certificate and setting) in the "
            f"run's eval/records.jsonl{where}")


def report_flags(records: list[Any]) -> None:
    """Print consistency flags and skipped certificates on stderr, once each."""
    for flag in sorted({f for r in records for f in r.flags}):
        click.echo(f"FLAG: {flag}", err=True)
    for reason in sorted({r.skipped for r in records if getattr(r, "skipped", None)}):
        click.echo(f"skipped: {reason}", err=True)



def certify_choice(names: str | None, none: bool) -> bool | str:
    """What ``--certify`` and ``--no-certify`` ask for: True (the default set), False, or
    the names given.

    Raises:
        UserError: Both options were given.
    """
    if none and names is not None:
        raise UserError("--certify and --no-certify contradict each other; give one")
    return False if none else (True if names is None else names)

