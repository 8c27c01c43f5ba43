"""Options → the objects the commands run: one place that builds the
:class:`~marginrobust.Evaluator` of ``eval`` and ``bench`` (keyword arguments only).

Torch-free at import, like the rest of the command line.
"""

from __future__ import annotations

from typing import Any

from ..errors import UserError
from .options import split_csv

__all__ = ["build_evaluator"]


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
