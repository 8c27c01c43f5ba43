"""Options → the objects the commands run, in one place and by keyword only: the run spec
of ``train`` and ``bench`` (:func:`build_run_spec`) and the
:class:`~marginrobust.Evaluator` of ``eval`` and ``bench`` (:func:`build_evaluator`).

Torch-free at import, like the rest of the command line.
"""

from __future__ import annotations

from typing import Any

from ..errors import UserError
from .options import split_csv

__all__ = ["build_evaluator", "build_run_spec"]


def build_evaluator(*, attacks: str, norms: str, eps_l2: str | None, eps_linf: str | None,
                    n: int, seed: int, device: str, certify: bool | str, aa_version: str,
                    aa_attacks: str | None, warm_start: bool = False) -> Any:
    """An :class:`~marginrobust.Evaluator` from the CLI's options (``eval`` and ``bench``).

    ``certify`` is True (the default set), False (``--no-certify``) or the comma-separated
    names of ``--certify``."""
    from ..evaluate.engine import Evaluator
    from ..evaluate.threats import ThreatModel, normalize_norm, parse_eps_list

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


def build_run_spec(*, model: str, model_kwargs: dict[str, Any], dataset: str,
                   data_dir: str | None, train_subset: int | None, test_subset: int | None,
                   seed: int, data_seed: int | None, epochs: int, batch_size: int,
                   schedule: str, lr: float | None, explode_ratio: float,
                   max_minutes: float | None, target_log10_loss: float | None, device: str,
                   precision: str, deterministic: bool, checkpoint_decades: float,
                   checkpoint_epochs: list[int] | None = None, init_from: str | None = None,
                   scale: float | None = None) -> Any:
    """The :class:`~marginrobust.RunSpec` (with its :class:`~marginrobust.TrainConfig`) of a
    ``train`` or ``bench`` command: ``seed`` seeds the initialisation and the training, and
    the data subset too unless ``data_seed`` is given."""
    from ..train.config import TrainConfig
    from ..train.run import RunSpec

    config = TrainConfig(epochs=epochs, batch_size=batch_size, schedule=schedule, lr=lr,
                         explode_ratio=explode_ratio, max_minutes=max_minutes,
                         target_log10_loss=target_log10_loss, seed=seed, device=device,
                         precision=precision, deterministic=deterministic)
    return RunSpec(model=model, model_kwargs=model_kwargs, dataset=dataset, data_dir=data_dir,
                   train_subset=train_subset, test_subset=test_subset,
                   data_seed=seed if data_seed is None else data_seed, init_seed=seed,
                   train=config, checkpoint_decades=checkpoint_decades,
                   checkpoint_epochs=list(checkpoint_epochs or []), init_from=init_from,
                   scale=scale)
