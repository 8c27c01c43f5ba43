"""Attacks, threat models and logit rescaling on a tiny MLP trained on sklearn digits."""

from __future__ import annotations

import copy
import math

import foolbox as fb
import numpy as np
import pyautoattack
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from marginrobust.errors import UserError
from marginrobust.evaluate.attacks import (
    CE_LOGIT_SPREAD,
    DDN,
    FMN,
    PGD,
    Attack,
    AttackResult,
    FixedEpsilonAttack,
    LogitScaled,
    MinimalNormAttack,
    logit_scale,
)
from marginrobust.evaluate.attacks.autoattack import AutoAttack
from marginrobust.evaluate.attacks.foolbox_attacks import _LinfMarginPGD
from marginrobust.evaluate.attacks.warm import usable_starts
from marginrobust.evaluate.threats import ThreatModel, default_threats, parse_eps_list
from marginrobust.models import create_model
from marginrobust.registry import ATTACKS

N_EVAL = 32
CHEAP_AA = {"version": "custom", "attacks_to_run": ["apgd-ce", "apgd-t"]}
# Options keeping every registered attack to about a second here.
FAST_OPTIONS: dict[str, dict] = {"autoattack": CHEAP_AA, "cw": {"steps": 50,
                                                                "binary_search_steps": 3}}
# eps = 0 first: robust at budget 0 must equal clean correctness for every attack.
THREATS = {"L2": ThreatModel("L2", (0.0, 0.5, 1.0)),
           "Linf": ThreatModel("Linf", (0.0, 0.05, 0.1))}


class TimesLogits(nn.Module):
    """The same classifier with its logits multiplied by a constant (as after long training)."""

    def __init__(self, model: nn.Module, factor: float) -> None:
        super().__init__()
        self.model = model
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) * self.factor


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # On a loaded 2-core machine two intra-op threads spin against each other on these tiny
    # matrices and every attack runs ~50x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits():
    """A bias-free MLP trained briefly on digits, and 32 held-out points (x in [0, 1])."""
    images, labels = load_digits(return_X_y=True)
    x = torch.tensor(images / 16, dtype=torch.float32).reshape(-1, 1, 8, 8)
    y = torch.tensor(labels)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = create_model("mlp", in_chans=1, img_size=8, widths=(64,))
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        for _ in range(200):
            idx = torch.randint(0, 1500, (128,))
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    return model, x[1500:1500 + N_EVAL], y[1500:1500 + N_EVAL]


def make(name: str) -> Attack:
    return ATTACKS.get(name)(**FAST_OPTIONS.get(name, {}))


def scaled_copy(attack: Attack, model: nn.Module, x: torch.Tensor) -> LogitScaled:
    """The rescaled model ``attack`` attacks, rebuilt from its parts."""
    return LogitScaled(model, logit_scale(model, x) / attack.logit_spread).eval()


@pytest.fixture(scope="module")
def more_points(digits):
    """200 held-out points for the strength comparisons (32 are too few to show them)."""
    images, labels = load_digits(return_X_y=True)
    x = torch.tensor(images / 16, dtype=torch.float32).reshape(-1, 1, 8, 8)
    return x[1500:1700], torch.tensor(labels)[1500:1700]


# --- threat models -------------------------------------------------------------------------

def test_threat_model_normalises_norm_and_epsilons():
    assert ThreatModel("l2", [0.5, 1]).norm == "L2"
    assert ThreatModel("LINF", (0.1,)).norm == "Linf"
    assert ThreatModel("inf", (0.1,)).norm == "Linf"
    assert ThreatModel("L2", [0.5, 1]).epsilons == (0.5, 1.0)


@pytest.mark.parametrize("norm, eps", [("L1", (0.1,)), ("L2", (-0.1,)), ("Linf", (math.nan,)),
                                       ("Linf", (math.inf,)), ("L2", ())])
def test_threat_model_rejects_bad_input(norm, eps):
    with pytest.raises(UserError):
        ThreatModel(norm, eps)


def test_parse_eps_list_reads_fractions():
    assert parse_eps_list("8/255, 0.1") == (8 / 255, 0.1)
    assert parse_eps_list("1e-3,2 / 255") == (1e-3, 2 / 255)


@pytest.mark.parametrize("text", ["", "a", "1/0", "-0.1", "inf", "0.1,,0.2"])
def test_parse_eps_list_rejects_bad_input(text):
    with pytest.raises(UserError):
        parse_eps_list(text)


def test_default_threats():
    cifar = {t.norm: t.epsilons for t in default_threats("CIFAR10")}
    assert cifar == {"Linf": (8 / 255,), "L2": (0.5,)}
    assert {t.norm: t.epsilons for t in default_threats("fashion-mnist")} == {
        "Linf": (0.1, 0.3), "L2": (1.0, 2.0)}
    assert {t.norm for t in default_threats("digits")} == {"L2", "Linf"}
    with pytest.raises(UserError):
        default_threats("imagenet")


# --- logit scale ---------------------------------------------------------------------------

def test_logit_scale_is_homogeneous_and_keeps_decisions(digits):
    model, x, _ = digits
    s = logit_scale(model, x)
    big = TimesLogits(model, 1e5)
    assert logit_scale(big, x) == pytest.approx(1e5 * s, rel=1e-5)
    wrapped = LogitScaled(big, logit_scale(big, x))
    with torch.no_grad():
        assert torch.equal(wrapped(x).argmax(1), model(x).argmax(1))
        spread = wrapped(x).double().std(dim=1, correction=0).median()
    assert spread == pytest.approx(1.0, rel=1e-4)


def test_logit_scale_rejects_overflowing_logits(digits):
    model, x, _ = digits
    with pytest.raises(UserError, match="not finite"):
        logit_scale(TimesLogits(model, 1e38), x)


# --- every attack --------------------------------------------------------------------------

@pytest.mark.parametrize("norm", ["L2", "Linf"])
@pytest.mark.parametrize("name", ATTACKS.names())
def test_every_attack_runs(digits, name, norm):
    model, x, y = digits
    attack = make(name)
    threat = THREATS[norm]
    if norm not in attack.norms:
        with pytest.raises(UserError, match="does not support"):
            attack(model, x, y, threat, seed=0)
        return
    result = attack(model, x, y, threat, seed=0)
    assert isinstance(result, AttackResult)
    assert (result.name, result.norm, result.epsilons) == (name, norm, threat.epsilons)
    assert result.clean_correct.shape == (N_EVAL,) and result.clean_correct.dtype == bool
    assert result.robust.shape == (len(threat.epsilons), N_EVAL) and result.robust.dtype == bool
    assert result.clean_accuracy() > 0.8
    assert np.array_equal(result.robust[0], result.clean_correct)
    assert not (result.robust & ~result.clean_correct).any()
    accuracy = result.robust_accuracy()
    assert len(accuracy) == len(threat.epsilons)
    assert all(a <= result.clean_accuracy() for a in accuracy)
    assert accuracy[-1] < result.clean_accuracy()  # the attack finds something
    if isinstance(attack, MinimalNormAttack):
        d = result.distances
        assert d is not None and d.shape == (N_EVAL,) and d.dtype == np.float64
        assert (d[~result.clean_correct] == 0).all() and (d[result.clean_correct] > 0).all()
        assert np.array_equal(result.robust, np.stack([d > e for e in threat.epsilons]))
        assert all(a >= b for a, b in zip(accuracy, accuracy[1:]))
    else:
        assert result.distances is None


def test_registered_factories_take_options():
    attack = ATTACKS.get("pgd")(steps=5, rel_stepsize=0.1, random_start=False, batch_size=8)
    assert isinstance(attack, PGD) and attack.batch_size == 8
    assert ATTACKS.get("ddn")().norms == ("L2",) and ATTACKS.get("cw")().norms == ("L2",)
    with pytest.raises(UserError):
        ATTACKS.get("fmn")(steps=0)


@pytest.mark.parametrize("name", ATTACKS.names())
def test_every_attack_describes_itself_in_one_sentence(name):
    cls = ATTACKS.get(name)
    text = cls.description
    assert text and text[0].isupper() and text.endswith(".") and "\n" not in text
    assert ". " not in text and len(text) <= 120, text
    assert cls.minimal_norm is issubclass(cls, MinimalNormAttack)
    assert cls.minimal_norm is not issubclass(cls, FixedEpsilonAttack)


def test_minimal_norm_flags_and_logit_spreads():
    assert FMN.minimal_norm and DDN.minimal_norm and not PGD.minimal_norm
    assert not AutoAttack.minimal_norm
    # cross-entropy attacks run at the measured spread; scale-invariant ones at 1
    assert PGD().logit_spread == AutoAttack().logit_spread == DDN().logit_spread == 4.0
    assert FMN().logit_spread == ATTACKS.get("deepfool")().logit_spread == 1.0
    for bad in ({"losses": ()}, {"losses": ("hinge",)}, {"losses": ("margin", "margin")},
                {"logit_spread": 0.0}, {"logit_spread": math.inf}):
        with pytest.raises(UserError):
            PGD(**bad)
    with pytest.raises(UserError, match="logit_spread"):
        AutoAttack(logit_spread=-1)


def test_batching_does_not_change_minimal_norm_results(digits):
    model, x, y = digits
    whole = FMN()(model, x, y, THREATS["Linf"], seed=0)
    batched = FMN(batch_size=7)(model, x, y, THREATS["Linf"], seed=0)
    np.testing.assert_allclose(batched.distances, whole.distances, rtol=1e-5)


# --- agreement with the libraries ----------------------------------------------------------

def test_pgd_equals_direct_foolbox_calls(digits):
    """Cross-entropy then margin foolbox LinfPGD on the rescaled model, seeded once; a
    point is robust only if it survives both."""
    model, x, y = digits
    threat = ThreatModel("Linf", (0.05, 0.1))
    attack = PGD()
    result = attack(model, x, y, threat, seed=3)
    scaled = attack.attacked_model(model, x)
    assert scaled.scale == pytest.approx(logit_scale(model, x) / CE_LOGIT_SPREAD)
    assert result.logit_scale == scaled.scale
    fmodel = fb.PyTorchModel(scaled, bounds=(0, 1), device=x.device)
    correct = torch.from_numpy(result.clean_correct)
    torch.manual_seed(3)
    for k, eps in enumerate(threat.epsilons):
        _, _, by_ce = fb.attacks.LinfPGD()(fmodel, x[correct], y[correct], epsilons=eps)
        _, _, by_margin = _LinfMarginPGD()(fmodel, x[correct], y[correct], epsilons=eps)
        robust = np.zeros(N_EVAL, dtype=bool)
        robust[correct.numpy()] = ~(by_ce | by_margin).numpy()
        assert np.array_equal(result.robust[k], robust)
        assert result.robust_accuracy()[k] == robust.mean()


@pytest.mark.parametrize("norm, eps", [("Linf", 0.1), ("L2", 1.0)])
def test_pgd_is_as_strong_as_foolbox_on_the_raw_logits(digits, more_points, norm, eps):
    """At an ordinary logit scale (spread about 4), pgd leaves no more points robust than
    foolbox's PGD called on the model itself with the same steps and seed; the former
    attack (cross-entropy on logits divided by their spread) left more."""
    model, _, _ = digits
    x, y = more_points
    threat = ThreatModel(norm, (eps,))
    ours = PGD()(model, x, y, threat, seed=0)
    former = PGD(losses=("crossentropy",), logit_spread=1.0)(model, x, y, threat, seed=0)
    correct = torch.from_numpy(ours.clean_correct)
    torch.manual_seed(0)
    direct = fb.attacks.LinfPGD() if norm == "Linf" else fb.attacks.L2PGD()
    _, _, success = direct(fb.PyTorchModel(model, bounds=(0, 1), device=x.device),
                           x[correct], y[correct], epsilons=eps)
    raw = float((~success).sum()) / len(x)
    print(f"{norm} {eps}: raw foolbox {raw:.3f}, pgd {ours.robust_accuracy()[0]:.3f}, "
          f"former {former.robust_accuracy()[0]:.3f}")
    assert 2 < ours.logit_scale * CE_LOGIT_SPREAD < 10   # an ordinary scale
    assert ours.robust_accuracy()[0] <= raw
    assert former.robust_accuracy()[0] > raw + 0.02      # the weakness this fixes


@pytest.mark.parametrize("norm, eps", [("Linf", 0.1), ("L2", 1.0)])
def test_apgd_ce_is_as_strong_as_pyautoattack_on_the_raw_logits(digits, more_points, norm,
                                                                 eps):
    """AutoAttack's cross-entropy attack has PGD's temperature dependence; at spread 4 it
    is as strong as pyautoattack on the model itself, at spread 1 it was weaker."""
    model, _, _ = digits
    x, y = more_points
    threat = ThreatModel(norm, (eps,))
    options = {"version": "custom", "attacks_to_run": ["apgd-ce"]}
    ours = AutoAttack(**options)(model, x, y, threat, seed=0)
    former = AutoAttack(logit_spread=1.0, **options)(model, x, y, threat, seed=0)
    raw = _direct_autoattack(model, x, y, norm, eps, 0, "custom", ["apgd-ce"],
                             scaled=model).mean()
    assert ours.robust_accuracy()[0] <= raw
    assert former.robust_accuracy()[0] > raw + 0.02


def test_pgd_without_rescaling_falsely_fails_on_huge_logits(digits):
    """The control for the invariance tests: raw CE gradients vanish at 1e5x logits."""
    model, x, y = digits
    big = TimesLogits(model, 1e5).eval()
    torch.manual_seed(0)
    _, _, success = fb.attacks.LinfPGD()(fb.PyTorchModel(big, bounds=(0, 1), device=x.device),
                                         x, y, epsilons=0.1)
    rescaled = PGD()(big, x, y, ThreatModel("Linf", (0.1,)), seed=0)
    assert 1 - success.float().mean().item() > rescaled.robust_accuracy()[0] + 0.1


@pytest.mark.parametrize("norm", ["L2", "Linf"])
def test_fmn_adversarials_are_misclassified_within_reported_distance(digits, norm):
    model, x, y = digits
    threat = THREATS[norm]
    attack = FMN()
    result = attack(model, x, y, threat, seed=0)
    correct = torch.from_numpy(result.clean_correct)
    # FMN is deterministic: rerunning its batch reproduces the adversarials it returned
    x_adv = attack.run(scaled_copy(attack, model, x), x[correct], y[correct], norm, 0)
    reported = result.distances[correct.numpy()]
    found = np.isfinite(reported)
    assert found.mean() > 0.9
    with torch.no_grad():
        misclassified = (model(x_adv).argmax(1) != y[correct]).numpy()
    p = 2 if norm == "L2" else math.inf
    norms = torch.linalg.vector_norm((x_adv.double() - x[correct].double()).flatten(1),
                                     ord=p, dim=1).numpy()
    assert misclassified[found].all()
    assert (norms[found] <= reported[found] * (1 + 1e-9)).all()
    assert (x_adv >= 0).all() and (x_adv <= 1).all()


def test_l2_fmn_shrinks_foolbox_fmn_crossings(digits):
    """foolbox 3.3.4's L2 FMN never projects; the refinement must shrink what it finds."""
    model, x, y = digits
    result = FMN()(model, x, y, ThreatModel("L2", (0.5,)), seed=0)
    correct = torch.from_numpy(result.clean_correct)
    xc, yc = x[correct], y[correct]
    fmodel = fb.PyTorchModel(scaled_copy(FMN(), model, x), bounds=(0, 1), device=x.device)
    plain, _, found = fb.attacks.L2FMNAttack()(fmodel, xc, yc, epsilons=None)
    plain_d = (plain.double() - xc.double()).flatten(1).norm(dim=1).numpy()
    ours = result.distances[correct.numpy()]
    found = found.numpy()
    assert found.all()
    assert (ours <= plain_d + 1e-6).all()
    assert np.median(ours) < 0.8 * np.median(plain_d)


@pytest.mark.parametrize("name, norm", [("pgd", "L2"), ("pgd", "Linf"), ("fmn", "L2"),
                                        ("fmn", "Linf"), ("autoattack", "Linf"), ("ddn", "L2")])
def test_results_invariant_to_logit_scale(digits, name, norm):
    model, x, y = digits
    attack = make(name)
    # budget 0 leaves every point to AutoAttack's full run; the others are cheap
    threat = ThreatModel(norm, THREATS[norm].epsilons[1:] if name == "autoattack"
                         else THREATS[norm].epsilons)
    small = attack(model, x, y, threat, seed=0)
    big = attack(TimesLogits(model, 1e5).eval(), x, y, threat, seed=0)
    assert big.logit_scale == pytest.approx(1e5 * small.logit_scale, rel=1e-5)
    assert np.array_equal(big.clean_correct, small.clean_correct)
    assert big.robust_accuracy() == small.robust_accuracy()
    if small.distances is not None:
        np.testing.assert_allclose(big.distances, small.distances, rtol=1e-4)


def _direct_autoattack(model, x, y, norm, eps, seed, version, attacks=None, scaled=None):
    """pyautoattack on ``scaled`` (default: the rescaled model AutoAttack attacks)."""
    if scaled is None:
        scaled = scaled_copy(AutoAttack(), model, x)
    adversary = pyautoattack.AutoAttack(scaled, attacks=attacks, device=x.device,
                                        eps=eps, norm=norm, seed=seed, version=version)
    adversary.verbose = False
    _, y_adv = adversary.run_standard_evaluation(x, y, batch_size=256)
    return (y_adv == y).numpy()


@pytest.mark.parametrize("norm, eps", [("Linf", (0.05, 0.1)), ("L2", (0.5,))])
def test_autoattack_equals_direct_pyautoattack(digits, norm, eps):
    model, x, y = digits
    result = AutoAttack(**CHEAP_AA)(model, x, y, ThreatModel(norm, eps), seed=1)
    for k, e in enumerate(eps):
        robust = _direct_autoattack(model, x, y, norm, e, 1, "custom", CHEAP_AA["attacks_to_run"])
        assert np.array_equal(result.robust[k], robust)
        assert result.robust_accuracy()[k] == robust.mean()


@pytest.mark.slow
def test_standard_autoattack_equals_direct_pyautoattack(digits):
    model, x, y = digits
    x, y = x[:10], y[:10]
    result = AutoAttack()(model, x, y, ThreatModel("Linf", (0.05,)), seed=0)
    robust = _direct_autoattack(model, x, y, "Linf", 0.05, 0, "standard")
    assert np.array_equal(result.robust[0], robust)


def test_autoattack_targets_fewer_classes(digits):
    _, x, y = digits
    with torch.random.fork_rng():
        torch.manual_seed(0)
        four = create_model("mlp", num_classes=4, in_chans=1, img_size=8, widths=(16,)).eval()
        three = create_model("mlp", num_classes=3, in_chans=1, img_size=8, widths=(16,)).eval()
    labels = y % 4
    result = AutoAttack(version="custom", attacks_to_run=["apgd-t"])(
        four, x[:8], labels[:8], ThreatModel("Linf", (0.1,)), seed=0)
    assert result.robust.shape == (1, 8)
    with pytest.raises(UserError, match="at least 4 classes"):
        AutoAttack()(three, x[:8], y[:8] % 3, ThreatModel("Linf", (0.1,)), seed=0)


# --- validation and side effects -----------------------------------------------------------

def test_invalid_inputs_raise_user_error(digits):
    model, x, y = digits
    threat = THREATS["Linf"]
    attack = PGD(steps=2)
    with pytest.raises(UserError, match=r"\[0, 1\]"):
        attack(model, x * 2, y, threat, seed=0)
    with pytest.raises(UserError, match=r"\[0, 1\]"):
        attack(model, x - 0.5, y, threat, seed=0)
    nan_x = x.clone()
    nan_x[0, 0, 0, 0] = math.nan
    with pytest.raises(UserError):
        attack(model, nan_x, y, threat, seed=0)
    with pytest.raises(UserError, match="shapes"):
        attack(model, x, y[:-1], threat, seed=0)
    with pytest.raises(UserError, match="labels"):
        attack(model, x, y + 10, threat, seed=0)
    with pytest.raises(UserError, match="labels"):
        attack(model, x, y.float(), threat, seed=0)
    with pytest.raises(UserError, match="ThreatModel"):
        attack(model, x, y, ("Linf", (0.1,)), seed=0)
    with pytest.raises(UserError, match="unknown norm"):
        attack(model, x, y, ThreatModel("L1", (0.1,)), seed=0)
    with pytest.raises(UserError, match="non-negative"):
        attack(model, x, y, ThreatModel("Linf", (-0.1,)), seed=0)
    with pytest.raises(UserError, match="seed"):
        attack(model, x, y, threat, seed=0.5)


@pytest.mark.parametrize("options", [{"version": "custom"},
                                     {"version": "custom", "attacks_to_run": ["pgd"]},
                                     {"attacks_to_run": ["apgd-ce"]},
                                     {"version": "fast"}])
def test_autoattack_rejects_bad_options(options):
    with pytest.raises(UserError):
        AutoAttack(**options)


def test_attack_restores_model_state_and_rng(digits):
    model, x, y = digits
    trained = copy.deepcopy(model).train()
    for p in trained.parameters():
        p.grad = None  # direct library calls in other tests leave gradients on the original
    rng = torch.get_rng_state()
    with pytest.warns(UserWarning, match="train mode"):
        result = FMN(steps=10)(trained, x, y, THREATS["L2"], seed=0)
    assert result.robust.shape == (3, N_EVAL)
    assert all(m.training for m in trained.modules())
    assert all(p.requires_grad and p.grad is None for p in trained.parameters())
    assert torch.equal(torch.get_rng_state(), rng)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_attacks_run_on_cuda(digits):
    model, x, y = digits
    gpu = copy.deepcopy(model).cuda()
    with pytest.raises(UserError, match="is on"):
        PGD()(gpu, x, y, THREATS["Linf"], seed=0)
    xg, yg = x.cuda(), y.cuda()
    for name, norm in [("pgd", "L2"), ("fmn", "L2"), ("fmn", "Linf"), ("autoattack", "Linf")]:
        on_gpu = make(name)(gpu, xg, yg, THREATS[norm], seed=0)
        on_cpu = make(name)(model, x, y, THREATS[norm], seed=0)
        assert np.array_equal(on_gpu.clean_correct, on_cpu.clean_correct)
        # different kernels and random streams: close, not equal
        assert np.allclose(on_gpu.robust_accuracy(), on_cpu.robust_accuracy(), atol=3 / N_EVAL)


# --- warm starts ---------------------------------------------------------------------------

class BothNormsWarmFMN(FMN):
    """FMN warm-started under Linf too (the library keeps it to L2, where it pays)."""

    warm_start_norms = ("L2", "Linf")


# Attacked logits are O(1) (spread 1): a point this close to the boundary can be rounded to
# either side by a matrix product of another shape or on another CPU.
ROUNDING_MARGIN = 1e-5


@pytest.mark.parametrize("norm", ["L2", "Linf"])
def test_warm_fmn_equals_foolbox_started_from_the_same_points(digits, norm):
    """Warm-started FMN is foolbox's FMN (L2: projection fixed) given ``starting_points``.

    foolbox runs here on the batch the attack hands it (the clean-correct points with usable
    starts, most of them the given points unchanged), so both compute the same floats on any
    CPU. A point may differ only where foolbox's result lies within rounding of the boundary
    (the attack checks it in the whole batch, may find it correct there and attacks it again
    from scratch) or where the given start, still adversarial, is closer.
    """
    model, x, y = digits
    threat = THREATS[norm]
    earlier = FMN()(model, x, y, threat, seed=0)
    # An earlier model's points: here the same model with its logits tilted a little.
    later = copy.deepcopy(model)
    with torch.no_grad():
        for p in later.parameters():
            p.mul_(1 + 0.05 * torch.randn_like(p, generator=torch.Generator().manual_seed(1)))
    result = BothNormsWarmFMN()(later, x, y, threat, seed=0,
                                starting_points=earlier.adversarials)
    correct = torch.from_numpy(result.clean_correct)
    ours = result.distances[result.clean_correct]
    assert np.isfinite(ours).all()
    scaled = scaled_copy(FMN(), later, x)
    xc, yc, given = x[correct], y[correct], torch.from_numpy(earlier.adversarials)[correct]
    starts, warm = usable_starts(scaled, xc, yc, given, 256)
    assert int(warm.sum()) == result.warm_started > 0.8 * len(xc)
    as_given = warm & (starts == given).flatten(1).all(1)
    assert as_given.sum() > 0.5 * len(xc)
    fmodel = fb.PyTorchModel(scaled, bounds=(0, 1), device=x.device)
    direct_attack = fb.attacks.LInfFMNAttack() if norm == "Linf" else _fixed_l2_fmn()
    direct = direct_attack(fmodel, xc[warm], yc[warm], epsilons=None,
                           starting_points=starts[warm])[1]
    with torch.no_grad():
        logits = scaled(direct)
    true = logits.gather(1, yc[warm][:, None]).squeeze(1)
    margin = (logits.scatter(1, yc[warm][:, None], -math.inf).amax(1) - true).numpy()
    p = 2 if norm == "L2" else math.inf
    direct_d = _norms(direct - xc[warm], p)
    given_d = _norms(given[warm].nan_to_num() - xc[warm], p)
    ours_w = ours[warm.numpy()]
    same = np.isclose(ours_w, direct_d, rtol=1e-5, atol=1e-6)
    rounded = np.abs(margin) < ROUNDING_MARGIN
    kept_start = np.isclose(ours_w, given_d, rtol=1e-5, atol=1e-6) & (ours_w < direct_d)
    assert (same | rounded | kept_start).all()
    assert same[as_given[warm].numpy()].mean() > 0.9


def _norms(delta: torch.Tensor, p: float) -> np.ndarray:
    return torch.linalg.vector_norm(delta.double().flatten(1), ord=p, dim=1).numpy()


def _fixed_l2_fmn():
    from marginrobust.evaluate.attacks import ProjectedL2FMN

    return ProjectedL2FMN()


def test_points_a_warm_start_leaves_unbroken_are_attacked_again_from_scratch(digits,
                                                                              monkeypatch):
    model, x, y = digits
    threat = THREATS["L2"]
    cold = FMN()(model, x, y, threat, seed=0)
    ok = cold.clean_correct & np.isfinite(cold.distances)
    assert ok.sum() > 0.8 * len(x)
    # Halfway to the earlier adversarial points: usable only once stretched, so no start
    # is kept as given, and a warm run that never crosses the boundary leaves them bare.
    halfway = x.numpy() + 0.5 * (cold.adversarials - x.numpy())
    monkeypatch.setattr(FMN, "run_warm", lambda self, model, x, *args: x.clone())
    warm = FMN()(model, x, y, threat, seed=0, starting_points=halfway)
    assert warm.warm_started > 0.5 * ok.sum()
    assert warm.restarted_cold is not None and warm.restarted_cold.sum() >= warm.warm_started
    assert cold.restarted_cold is None  # no starting points: nothing restarted
    assert np.isfinite(warm.distances[ok]).all()
    assert not np.isnan(warm.adversarials[ok]).any()
    np.testing.assert_array_equal(warm.robust, np.stack([warm.distances > e
                                                         for e in threat.epsilons]))
    # The retry attacks a batch of another size than the cold run: equal up to rounding,
    # which may move a point or two along another path.
    assert np.isclose(warm.distances[ok], cold.distances[ok], rtol=1e-4).mean() > 0.9


def test_warm_start_from_its_own_points_never_moves_further(digits):
    model, x, y = digits
    threat = THREATS["L2"]
    cold = FMN()(model, x, y, threat, seed=0)
    warm = FMN()(model, x, y, threat, seed=0, starting_points=cold.adversarials)
    ok = np.isfinite(cold.distances) & cold.clean_correct
    assert warm.warm_started >= 0.9 * ok.sum()
    assert (warm.distances[ok] <= cold.distances[ok]).all()


def test_starting_points_are_checked_and_ignored_where_not_supported(digits):
    model, x, y = digits
    threat = THREATS["L2"]
    with pytest.raises(UserError, match="shape"):
        FMN()(model, x, y, threat, starting_points=x[:3])
    nan = np.full(tuple(x.shape), np.nan, dtype=np.float32)
    cold, none_usable = FMN()(model, x, y, threat), FMN()(model, x, y, threat,
                                                          starting_points=nan)
    assert none_usable.warm_started == 0
    np.testing.assert_array_equal(cold.distances, none_usable.distances)
    linf = FMN()(model, x, y, THREATS["Linf"], starting_points=cold.adversarials)
    assert linf.warm_started == 0             # FMN warm-starts L2 only
    ddn = ATTACKS.get("ddn")
    assert not ddn.warm_start_norms
    a = ddn(steps=20)(model, x, y, threat, seed=0)
    b = ddn(steps=20)(model, x, y, threat, seed=0, starting_points=cold.adversarials)
    np.testing.assert_array_equal(a.distances, b.distances)
    assert b.warm_started == 0 and a.adversarials is not None


@pytest.mark.parametrize("name", ["fmn", "pgd"])
def test_no_correct_point_means_nothing_to_attack(digits, name):
    model, x, y = digits
    with torch.no_grad():
        wrong = (model(x).argmax(1) + 1) % 10
    result = make(name)(model, x, wrong, THREATS["L2"], seed=0)
    assert not result.clean_correct.any() and not result.robust.any()
    if result.distances is not None:
        assert (result.distances == 0).all()
