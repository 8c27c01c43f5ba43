"""Robustness evaluation: threat models, attacks, certificates, the Evaluator."""

from . import attacks, autoattack  # noqa: F401  (registers the attacks)
