"""Budgets: every malformed ε is one UserError sentence, never a Python exception."""

from __future__ import annotations

import math
import re

import pytest

from marginrobust.errors import UserError
from marginrobust.evaluate.threats import ThreatModel, parse_eps_list


@pytest.mark.parametrize("text,needle", [
    ("1e400", "too large"),
    ("1e99999999", "too large"),          # float() answers at once; no 10**99999999 built
    ("1e-400", "too small"),
    ("1e-99999999", "too small"),
    ("inf", "too large"),
    ("-inf", "too large"),
    ("nan", "not a number"),
    ("NaN/2", "not a number"),
    ("-0.1", "non-negative"),
    ("-8/255", "non-negative"),
    ("8/0", "divides by zero"),
    ("8/0.0", "divides by zero"),
    ("1e300/1e-300", "too large"),
    ("abc", "cannot read"),
    ("8/255/2", "cannot read"),
    ("/255", "cannot read"),
    ("8/", "cannot read"),
    ("0x10", "cannot read"),
    ("0.1,,0.2", "cannot read"),
    ("", "empty"),
    (" , ", "empty"),
    ("0.1,0.1", "twice"),
    ("0.1,1/10", "twice"),
])
def test_every_bad_epsilon_is_one_user_error_sentence(text, needle):
    with pytest.raises(UserError) as err:
        parse_eps_list(text, option="--eps-l2")
    message = str(err.value)
    assert needle in message
    assert "\n" not in message
    if text.strip(" ,"):
        assert "--eps-l2" in message


def test_zero_refused_unless_allowed():
    assert parse_eps_list("0,0.5", allow_zero=True) == (0.0, 0.5)
    for text in ("0", "0/3", "0.5,0", "-0", "0e5"):
        with pytest.raises(UserError, match=r"epsilon must be positive, got .* in --eps-l2 "
                                            r"\(at budget 0 robustness is the clean accuracy"):
            parse_eps_list(text, option="--eps-l2")
    # -0 is 0, not a second figure under another name
    assert math.copysign(1.0, parse_eps_list("-0", allow_zero=True)[0]) == 1.0


@pytest.mark.parametrize("eps", [1.0, 2.0, 1 + 1e-12, 255 / 255, 1e300])
def test_linf_budget_of_the_whole_box_is_refused_naming_it(eps):
    with pytest.raises(UserError, match=re.escape(f"a Linf epsilon of {eps:g} reaches every "
                                                  "input in [0, 1] (the whole box)")) as err:
        ThreatModel("Linf", (0.1, eps))
    assert "\n" not in str(err.value)


def test_budgets_just_inside_the_limits_are_kept():
    below = math.nextafter(1.0, 0.0)
    assert ThreatModel("Linf", (below, 5e-324)).epsilons == (below, 5e-324)
    # L2 has no upper limit here: the box's L2 diameter depends on the input size.
    assert ThreatModel("L2", (2.0, 1e300)).epsilons == (2.0, 1e300)
    assert ThreatModel("L2", (0.0,)).epsilons == (0.0,)


def test_good_lists_parse_exactly():
    assert parse_eps_list("8/255, 0.1") == (8 / 255, 0.1)
    assert parse_eps_list("8 / 255") == (8 / 255,)
    assert parse_eps_list("1_0,1e-3,.5") == (10.0, 1e-3, 0.5)
    assert parse_eps_list("1e300") == (1e300,)


@pytest.mark.parametrize("epsilons", [(10 ** 400,), ("abc",), (float("nan"),),
                                      (float("inf"),), (-1.0,), (True,), (None,), (),
                                      (0.1, 0.1), 0.1, "0.1"])
def test_threat_model_refuses_bad_epsilons_in_one_sentence(epsilons):
    with pytest.raises(UserError) as err:
        ThreatModel("L2", epsilons)
    assert "\n" not in str(err.value)


def test_threat_model_normalises():
    t = ThreatModel("linf", (-0.0, 0.1))
    assert t.norm == "Linf" and t.epsilons == (0.0, 0.1)
    assert math.copysign(1.0, t.epsilons[0]) == 1.0
