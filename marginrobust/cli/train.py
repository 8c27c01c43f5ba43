"""``train`` and ``check-homogeneity``: training runs and the models they train."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .app import main
from .build import build_run_spec
from .options import (
    POSITIVE,
    apply_options,
    model_kwargs,
    model_options,
    parse_epoch_list,
    train_options,
)
from .resume import resume_overrides


@main.command("train")
@apply_options(model_options())
@click.option("--out", type=click.Path(file_okay=False), required=True,
              help="Run directory (metrics, checkpoints, resume file).")
@apply_options(train_options())
@click.option("--checkpoint-epochs", default=None, metavar="E1,E2,...",
              help="Extra epochs to checkpoint.")
@click.option("--init-from", type=click.Path(dir_okay=False), default=None,
              help="Start from this checkpoint's weights.")
@click.option("--scale", type=POSITIVE, default=None,
              help="Multiply all parameters by this factor before training.")
@click.option("--resume", is_flag=True,
              help="Continue the run in --out where it stopped. It may change only --epochs, "
                   "--max-minutes, --target-log10-loss and --device; any other option that "
                   "contradicts the stored run is refused.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train_cmd(model: str, bias: str, width: float, model_opts: tuple[str, ...], dataset: str,
              data_dir: str | None, out: str, epochs: int | None, batch_size: int, schedule: str,
              lr: float | None, train_subset: int | None, test_subset: int | None, seed: int,
              data_seed: int | None, checkpoint_decades: float, max_minutes: float | None,
              target_log10_loss: float | None, explode_ratio: float, device: str,
              precision: str, deterministic: bool, checkpoint_epochs: str | None,
              init_from: str | None, scale: float | None,
              resume: bool, quiet: bool) -> None:
    """Train a model with the paper's procedure, checkpointing along the trajectory."""
    from ..train.run import train_run

    if resume:
        overrides = resume_overrides(click.get_current_context(), out)
        trainer = train_run(out, resume=True, overrides=overrides, progress=not quiet)
    else:
        spec = build_run_spec(
            model=model, model_kwargs=model_kwargs(model, bias, width, model_opts),
            dataset=dataset, data_dir=data_dir, train_subset=train_subset,
            test_subset=test_subset, seed=seed, data_seed=data_seed,
            epochs=100 if epochs is None else epochs, batch_size=batch_size,
            schedule=schedule, lr=lr, explode_ratio=explode_ratio, max_minutes=max_minutes,
            target_log10_loss=target_log10_loss, device=device, precision=precision,
            deterministic=deterministic, checkpoint_decades=checkpoint_decades,
            checkpoint_epochs=parse_epoch_list(checkpoint_epochs), init_from=init_from,
            scale=scale)
        trainer = train_run(out, spec, progress=not quiet)
    from .. import distributed

    if not distributed.is_main_process():
        return  # under torchrun rank 0 speaks for all ranks
    r = trainer.record or {}
    nominal = "" if r.get("homogeneous", True) else " (nominal order: not homogeneous)"
    click.echo(f"stopped ({trainer.stop_reason}) at epoch {r.get('epoch')}: "
               f"log10 loss {r.get('log10_loss', float('nan')):.2f}, "
               f"train acc {r.get('train_acc', float('nan')):.4f}, "
               f"test acc {r.get('test_acc', float('nan')):.4f}, "
               f"normalized margin {r.get('normalized_margin', float('nan')):.4e}{nominal}; "
               f"run in {Path(out)}")


@main.command("check-homogeneity")
@apply_options(model_options())
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
    from ..data import load_dataset
    from ..models import check_homogeneity, create_model
    from ..train.checkpoints import load_checkpoint

    data = load_dataset(dataset, data_dir, train_subset=None, test_subset=None, seed=0)
    if checkpoint:
        net, _ = load_checkpoint(checkpoint)
    else:
        c, h, w = data.spec.shape
        net = create_model(model, num_classes=data.spec.num_classes, in_chans=c, img_size=(h, w),
                           **model_kwargs(model, bias, width, model_opts))
    report = check_homogeneity(net, data.x_train[:n_points])
    click.echo(report.describe())
    sys.exit(0 if report.homogeneous else 1)


if __name__ == "__main__":
    main()
