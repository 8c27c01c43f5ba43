"""``models``, ``datasets`` and ``attacks``: what is registered."""

from __future__ import annotations

import click

from .app import main


@main.command("models")
@click.argument("pattern", default="*")
def models_cmd(pattern: str) -> None:
    """List registered models (any timm architecture is also accepted as timm/<name>)."""
    from ..models import list_models
    from ..registry import MODELS

    for name in list_models(pattern):
        doc = (MODELS.get(name).__doc__ or "").strip().splitlines()
        click.echo(f"{name:12s} {doc[0] if doc else ''}")


@main.command("datasets")
def datasets_cmd() -> None:
    """List registered datasets."""
    from ..data import list_datasets

    for name, desc in list_datasets():
        click.echo(f"{name:14s} {desc}")


@main.command("attacks")
def attacks_cmd() -> None:
    """List registered attacks, the norms each supports, and what each does."""
    from .. import evaluate  # noqa: F401  (registers the built-in attacks)
    from ..registry import ATTACKS

    for name in ATTACKS.names():
        factory = ATTACKS.get(name)
        text = getattr(factory, "description", None)
        if not text:
            # A plugin without a description: its docstring's first paragraph, whole.
            text = " ".join((factory.__doc__ or "").strip().split("\n\n")[0].split())
        norms = ",".join(getattr(factory, "norms", ()))
        click.echo(f"{name:12s} {norms:8s} {text}")
