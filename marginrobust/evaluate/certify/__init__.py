"""Certified robustness of ReLU nets: sound lower bounds on the distance to the nearest
adversarial input (``docs/science.md``, certificates), one module per job:

* :mod:`.ops` and :mod:`.tracing`: the chain of supported operations, read from any model
  by tracing it (:class:`NotCertifiable` names the first unsupported one);
* :mod:`.operator_norms`: per-layer upper bounds on Lipschitz constants;
* :mod:`.lipschitz_ibp`: Lipschitz-margin radii and interval bound propagation (IBP);
* :mod:`.crown`: CROWN and alpha-CROWN bounds on the margins;
* :mod:`.radius`: per-point certified radii of IBP, CROWN and alpha-CROWN by a search on ε;
* :mod:`.milp` and :mod:`.exact`: the exact verifier of small nets (a MILP solved by HiGHS);
* :mod:`.certifiers`: which certifiers the engine runs and what it records.

The names below are the package's public interface; the exact verifier is imported from
:mod:`.exact` (it needs scipy's MILP solver, loaded only when asked for).
"""

from __future__ import annotations

from .lipschitz_ibp import (
    RadiusResult,
    certified_accuracy,
    ibp_certified,
    ibp_margins,
    lipschitz_radii,
)
from .operator_norms import NORM_SLACK, LayerBound, conv2d_norm_bound, operator_norm_bounds
from .radius import certified_radii, margin_lower_bounds
from .tracing import NotCertifiable, certify_reason

__all__ = ["NORM_SLACK", "LayerBound", "NotCertifiable", "RadiusResult", "certified_accuracy",
           "certified_radii", "certify_reason", "conv2d_norm_bound", "ibp_certified",
           "ibp_margins", "lipschitz_radii", "margin_lower_bounds", "operator_norm_bounds"]
