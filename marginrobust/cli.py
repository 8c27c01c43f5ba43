"""The ``marginrobust`` command line: each command is a thin caller of the Python API.

Only click and the package's torch-free modules are imported here; every command imports
torch, timm, foolbox, pandas or matplotlib once its arguments are parsed, so ``--help`` and
a one-line error answer at once.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import click

from .errors import UserError

# The names of marginrobust.train.schedules.SCHEDULES, spelled out so that parsing the
# command line imports no torch (a test checks the two lists agree).
SCHEDULE_NAMES = ("loss-based", "loss-based-capped", "constant")
SPLIT_HELP = "Comma-separated splits: test, train or test,train."


class _Group(click.Group):
    """Turns a :class:`UserError` into one sentence on stderr and exit code 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except UserError as exc:
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(2)


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


def _parse_kwargs(pairs: tuple[str, ...]) -> dict[str, Any]:
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


def _positive_int_list(text: str | None) -> list[int]:
    if not text:
        return []
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"expected comma-separated epochs, not {text!r}") from None
    if any(v < 0 for v in values):
        raise UserError("checkpoint epochs must be non-negative")
    return values


def _csv(text: str | None) -> list[str]:
    return [v.strip() for v in (text or "").split(",") if v.strip()]


def _apply(options: list[Any]) -> Any:
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
                  "its last rollback (fewer wasted epochs); or constant."),
        click.option("--lr", type=POSITIVE, default=None,
                     help="alpha_0 for loss-based [0.1]; the rate for constant [0.01]."),
        _opt("--train-subset", preset=preset, type=click.IntRange(min=1),
             help="Seeded class-balanced training subset size (default: all)."),
        _opt("--test-subset", preset=preset, type=click.IntRange(min=1),
             help="Seeded class-balanced test subset size (default: all)."),
        click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
                     help="Seed of initialisation, data order and subsets."),
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
        _opt("--n", "n_points", default=100, preset=preset, type=click.IntRange(min=1),
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
        click.option("--no-certify", is_flag=True, help="Skip the certified radii."),
        click.option("--eval-seed", type=click.IntRange(min=0), default=0, show_default=True,
                     help="Seed of the evaluation points and of the attacks."),
    ]


def _model_kwargs(model: str, bias: str | None, width: float | None,
                  model_opts: tuple[str, ...]) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if not model.startswith("timm/"):
        kwargs = {"bias": bias or "none", "width": 1.0 if width is None else width}
    kwargs.update(_parse_kwargs(model_opts))
    return kwargs


def build_evaluator(attacks: str, norms: str, eps_l2: str | None, eps_linf: str | None,
                    n: int, seed: int, device: str, certify: bool, aa_version: str,
                    aa_attacks: str | None, warm_start: bool = False) -> Any:
    """An :class:`~marginrobust.Evaluator` from the CLI's options (``eval`` and ``bench``)."""
    from .evaluate.engine import Evaluator
    from .evaluate.threats import ThreatModel, normalize_norm, parse_eps_list

    wanted = [normalize_norm(v) for v in _csv(norms)]
    if not wanted:
        raise UserError("give at least one norm, e.g. --norms L2,Linf")
    given = {"L2": eps_l2, "Linf": eps_linf}
    threats = [ThreatModel(norm, parse_eps_list(given[norm])) for norm in wanted if given[norm]]
    names = _csv(attacks)
    if not names:
        raise UserError("give at least one attack, e.g. --attacks pgd")
    options: dict[str, dict[str, Any]] = {}
    if "autoattack" in names:
        custom = aa_attacks and aa_attacks != "standard"
        if custom and not _csv(aa_attacks):
            raise UserError(f"--aa-attacks names no attack: {aa_attacks!r}")
        options["autoattack"] = ({"version": "custom", "attacks_to_run": _csv(aa_attacks)}
                                 if custom else {"version": aa_version})
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


def _report_flags(records: list[Any]) -> None:
    for flag in sorted({f for r in records for f in r.flags}):
        click.echo(f"FLAG: {flag}", err=True)
    for reason in sorted({r.skipped for r in records if getattr(r, "skipped", None)}):
        click.echo(f"skipped: {reason}", err=True)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="marginrobust")
def main() -> None:
    """Train homogeneous networks far past fitting and measure how their normalized
    margin and adversarial robustness move together (Lyu & Li, ICLR 2020)."""


@main.command("models")
@click.argument("pattern", default="*")
def models_cmd(pattern: str) -> None:
    """List registered models (any timm architecture is also accepted as timm/<name>)."""
    from .models import list_models
    from .registry import MODELS

    for name in list_models(pattern):
        doc = (MODELS.get(name).__doc__ or "").strip().splitlines()
        click.echo(f"{name:12s} {doc[0] if doc else ''}")


@main.command("datasets")
def datasets_cmd() -> None:
    """List registered datasets."""
    from .data import list_datasets

    for name, desc in list_datasets():
        click.echo(f"{name:14s} {desc}")


@main.command("train")
@_apply(model_options())
@click.option("--out", type=click.Path(file_okay=False), required=True,
              help="Run directory (metrics, checkpoints, resume file).")
@_apply(train_options())
@click.option("--checkpoint-epochs", default=None, metavar="E1,E2,...",
              help="Extra epochs to checkpoint.")
@click.option("--init-from", type=click.Path(dir_okay=False), default=None,
              help="Start from this checkpoint's weights.")
@click.option("--scale", type=POSITIVE, default=None,
              help="Multiply all parameters by this factor before training.")
@click.option("--resume", is_flag=True, help="Continue the run in --out where it stopped.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train_cmd(model: str, bias: str, width: float, model_opts: tuple[str, ...], dataset: str,
              data_dir: str | None, out: str, epochs: int | None, batch_size: int, schedule: str,
              lr: float | None, train_subset: int | None, test_subset: int | None, seed: int,
              checkpoint_decades: float, max_minutes: float | None,
              target_log10_loss: float | None, explode_ratio: float, device: str,
              checkpoint_epochs: str | None, init_from: str | None, scale: float | None,
              resume: bool, quiet: bool) -> None:
    """Train a model with the paper's procedure, checkpointing along the trajectory."""
    from .train.run import RunSpec, train_run
    from .train.trainer import TrainConfig

    if resume:
        overrides = {k: v for k, v in (("epochs", epochs), ("max_minutes", max_minutes),
                                       ("target_log10_loss", target_log10_loss)) if v is not None}
        trainer = train_run(out, resume=True, overrides=overrides, progress=not quiet)
    else:
        config = TrainConfig(epochs=100 if epochs is None else epochs, batch_size=batch_size,
                             schedule=schedule, lr=lr, explode_ratio=explode_ratio,
                             max_minutes=max_minutes, target_log10_loss=target_log10_loss,
                             seed=seed, device=device)
        spec = RunSpec(model=model, model_kwargs=_model_kwargs(model, bias, width, model_opts),
                       dataset=dataset, data_dir=data_dir, train_subset=train_subset,
                       test_subset=test_subset, data_seed=seed, init_seed=seed, train=config,
                       checkpoint_decades=checkpoint_decades,
                       checkpoint_epochs=_positive_int_list(checkpoint_epochs),
                       init_from=init_from, scale=scale)
        trainer = train_run(out, spec, progress=not quiet)
    r = trainer.record or {}
    nominal = "" if r.get("homogeneous", True) else " (nominal order: not homogeneous)"
    click.echo(f"stopped ({trainer.stop_reason}) at epoch {r.get('epoch')}: "
               f"log10 loss {r.get('log10_loss', float('nan')):.2f}, "
               f"train acc {r.get('train_acc', float('nan')):.4f}, "
               f"test acc {r.get('test_acc', float('nan')):.4f}, "
               f"normalized margin {r.get('normalized_margin', float('nan')):.4e}{nominal}; "
               f"run in {Path(out)}")


@main.command("attacks")
def attacks_cmd() -> None:
    """List registered attacks, the norms each supports, and what each does."""
    from . import evaluate  # noqa: F401  (registers the built-in attacks)
    from .registry import ATTACKS

    for name in ATTACKS.names():
        factory = ATTACKS.get(name)
        text = getattr(factory, "description", None)
        if not text:
            # A plugin without a description: its docstring's first paragraph, whole.
            text = " ".join((factory.__doc__ or "").strip().split("\n\n")[0].split())
        norms = ",".join(getattr(factory, "norms", ()))
        click.echo(f"{name:12s} {norms:8s} {text}")


@main.command("eval")
@click.argument("path", type=click.Path())
@_apply(eval_options())
@click.option("--device", default="auto", show_default=True,
              help="auto (cuda when present), cpu, cuda or cuda:N.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def eval_cmd(path: str, attacks: str, norms: str, eps_l2: str | None, eps_linf: str | None,
             n_points: int, splits: str, aa_version: str, aa_attacks: str | None,
             warm_start: bool, no_certify: bool, eval_seed: int, device: str,
             quiet: bool) -> None:
    """Attack and certify every checkpoint of a run (or one checkpoint file).

    Results go to RUN_DIR/eval/records.jsonl (one record per checkpoint, split, method,
    norm, eps and settings: points, seed, attack options) and RUN_DIR/eval/ (per-point
    distances and radii). Rerunning with the same settings skips finished work; new
    settings are evaluated and stored beside the old figures.
    """
    from .evaluate.run import evaluate_run
    from .io import parse_splits

    chosen = parse_splits(splits)
    evaluator = build_evaluator(attacks, norms, eps_l2, eps_linf, n_points, eval_seed, device,
                                not no_certify, aa_version, aa_attacks, warm_start)
    store = evaluate_run(evaluator, path, chosen, progress=not quiet)
    records = store.records
    click.echo(summary_table(records))
    _report_flags(records)
    click.echo(f"{len(records)} records in {store.path}")


def _bench_help() -> str:
    from .presets import describe_presets

    return ("Train, evaluate every checkpoint, and update the leaderboard, in one resumable "
            "command.\n\nWith no options it runs on the embedded digits set. Options marked "
            "[preset] take the dataset's preset when left out (CPU presets when no GPU is "
            "used):\n\n\b\n" + describe_presets() + "\n\nRerunning the same command finishes "
            "a killed bench without redoing finished work.")


@main.command("bench", help=_bench_help())
@_apply(model_options(preset=True))
@_apply(train_options(preset=True))
@_apply(eval_options(preset=True))
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Run directory [runs/<dataset>-<model>-<schedule>-<bias>].")
@click.option("--leaderboard", "leaderboard_dir", type=click.Path(file_okay=False),
              default="runs/leaderboard", show_default=True,
              help="Leaderboard folder to update.")
@click.option("--no-leaderboard", is_flag=True, help="Do not touch the leaderboard.")
@click.option("--force", is_flag=True,
              help="Let the leaderboard write into a folder it did not write.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def bench_cmd(model: str | None, bias: str | None, width: float | None,
              model_opts: tuple[str, ...], dataset: str, data_dir: str | None,
              epochs: int | None, batch_size: int | None, schedule: str | None,
              lr: float | None, train_subset: int | None, test_subset: int | None, seed: int,
              checkpoint_decades: float | None, max_minutes: float | None,
              target_log10_loss: float | None, explode_ratio: float, device: str,
              attacks: str | None, norms: str, eps_l2: str | None, eps_linf: str | None,
              n_points: int | None, splits: str, aa_version: str, aa_attacks: str | None,
              warm_start: bool, no_certify: bool, eval_seed: int, out: str | None,
              leaderboard_dir: str, no_leaderboard: bool, force: bool, quiet: bool) -> None:
    from .io import parse_splits, resolve_device
    from .pipeline import bench, spec_from_preset
    from .presets import preset_for

    chosen = parse_splits(splits)
    dev = str(resolve_device(device))
    overrides = {"model": model, "bias": bias, "width": width, "epochs": epochs,
                 "batch_size": batch_size, "schedule": schedule, "train_subset": train_subset,
                 "test_subset": test_subset, "checkpoint_decades": checkpoint_decades,
                 "n": n_points, "attacks": attacks, "aa_attacks": aa_attacks, "lr": lr,
                 "max_minutes": max_minutes, "target_log10_loss": target_log10_loss,
                 "explode_ratio": explode_ratio, "seed": seed, "device": device,
                 "data_dir": data_dir, "model_kwargs": _parse_kwargs(model_opts)}
    spec, preset = spec_from_preset(preset_for(dataset, dev), dataset, overrides)
    click.echo(f"[bench] preset for {dataset} on {dev}: {preset}")
    evaluator = build_evaluator(preset.attacks, norms, eps_l2, eps_linf, preset.n, eval_seed,
                                device, not no_certify, aa_version, preset.aa_attacks,
                                warm_start)
    result = bench(spec, evaluator, Path(out) if out else None,
                   None if no_leaderboard else Path(leaderboard_dir), chosen,
                   progress=not quiet, log=click.echo, force=force)
    click.echo(summary_table([r for r in result["records"]
                              if r.method in ("autoattack", "certified", "fmn")]))
    _report_flags(result["records"])


@main.command("leaderboard")
@click.argument("runs", nargs=-1, type=click.Path(file_okay=False))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="runs/leaderboard",
              show_default=True, help="Leaderboard folder (the same default as bench).")
@click.option("--force", is_flag=True,
              help="Write into a folder the leaderboard did not write (e.g. to regenerate a "
                   "committed board).")
def leaderboard_cmd(runs: tuple[str, ...], out_dir: str, force: bool) -> None:
    """Publish runs (results only, no checkpoints) into OUT/runs and rebuild the leaderboard.

    Writes leaderboard.csv, leaderboard.json, links.csv, README.md, index.html and plots/
    from every run under OUT/runs. With no RUNS it just rebuilds.
    """
    from .report.publish import update_leaderboard

    files = update_leaderboard([Path(r) for r in runs], Path(out_dir), force=force)
    for name, path in files.items():
        click.echo(f"{name}: {path}")


@main.command("compare")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table",
              show_default=True, help="Output format.")
@click.option("--plot", type=click.Path(dir_okay=False), default=None,
              help="Also write robust-accuracy-vs-eps curves to this PNG.")
def compare_cmd(paths: tuple[str, ...], fmt: str, plot: str | None) -> None:
    """Compare runs (their last checkpoint) or checkpoints side by side, with differences."""
    from .report.compare import compare, compare_plot, format_compare

    frame = compare(list(paths))
    click.echo(format_compare(frame, fmt))
    if plot:
        written = compare_plot(list(paths), Path(plot))
        click.echo(f"plot: {written}", err=True)


@main.command("check-homogeneity")
@_apply(model_options())
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None,
              help="Check a checkpoint's model instead of a fresh one.")
@click.option("--n", "n_points", type=click.IntRange(min=1), default=32, show_default=True,
              help="Training points to evaluate on.")
def check_homogeneity_cmd(model: str, bias: str, width: float, model_opts: tuple[str, ...],
                          dataset: str, data_dir: str | None, checkpoint: str | None,
                          n_points: int) -> None:
    """Measure a model's homogeneity order L, or say why it is not homogeneous.

    Exits 0 when homogeneous, 1 when not (so scripts can test it).
    """
    from .data import load_dataset
    from .models import check_homogeneity, create_model
    from .train.checkpoints import load_checkpoint

    data = load_dataset(dataset, data_dir, train_subset=None, test_subset=None, seed=0)
    if checkpoint:
        net, _ = load_checkpoint(checkpoint)
    else:
        c, h, w = data.spec.shape
        net = create_model(model, num_classes=data.spec.num_classes, in_chans=c, img_size=(h, w),
                           **_model_kwargs(model, bias, width, model_opts))
    report = check_homogeneity(net, data.x_train[:n_points])
    click.echo(report.describe())
    sys.exit(0 if report.homogeneous else 1)


if __name__ == "__main__":
    main()
