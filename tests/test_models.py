"""Every registered model, every bias mode: shapes and the numerical homogeneity check."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

from marginrobust import check_homogeneity, create_model, homogeneity_order, list_models
from marginrobust.errors import UserError
from marginrobust.models import weight_layers

EXPECTED_ORDER = {"mlp": 3, "cnn": 4, "vgg16": 14}
SHAPES = [(1, 8), (3, 32)]


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("bias", ["none", "first", "all"])
@pytest.mark.parametrize("chans,size", SHAPES)
def test_registered_models_homogeneity(name, bias, chans, size):
    torch.manual_seed(0)
    model = create_model(name, num_classes=7, in_chans=chans, img_size=size, bias=bias,
                         width=0.125)
    x = torch.rand(6, chans, size, size)
    assert model(x).shape == (6, 7)
    report = check_homogeneity(model, x)
    if bias == "all":
        assert report.order is None
        assert any("bias after the first layer" in b for b in report.blame)
    else:
        assert report.order == EXPECTED_ORDER.get(name, len(weight_layers(model)))
        assert report.max_rel_error < 1e-9


def test_first_layer_bias_only_in_first_mode():
    m = create_model("cnn", bias="first")
    assert [layer.bias is not None for layer in weight_layers(m)] == [True, False, False, False]
    assert all(float(layer.bias.abs().sum()) == 0 for layer in weight_layers(m)[:1])


def test_paper_cnn_architecture_on_mnist_shape():
    m = create_model("cnn", in_chans=1, img_size=28)
    convs = [layer for layer in m if isinstance(layer, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 64]
    assert [c.kernel_size for c in convs] == [(5, 5), (3, 3)]
    fcs = [layer for layer in m if isinstance(layer, nn.Linear)]
    assert [f.in_features for f in fcs] == [64 * 7 * 7, 1024]


def test_vgg16_has_13_convs_and_one_linear():
    m = create_model("vgg16", in_chans=3, img_size=32, width=0.25)
    assert sum(isinstance(layer, nn.Conv2d) for layer in m) == 13
    assert sum(isinstance(layer, nn.Linear) for layer in m) == 1
    assert m(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_he_normal_init_std():
    torch.manual_seed(0)
    m = create_model("mlp", in_chans=1, img_size=28, widths=(2048,))
    w = weight_layers(m)[0].weight
    assert float(w.std()) == pytest.approx((2 / 784) ** 0.5, rel=0.02)


def test_non_homogeneous_modules_are_blamed():
    m = nn.Sequential(nn.Flatten(), nn.Linear(64, 16, bias=False), nn.BatchNorm1d(16),
                      nn.Tanh(), nn.Linear(16, 3, bias=False)).eval()
    report = check_homogeneity(m, torch.rand(8, 1, 8, 8))
    assert report.order is None
    joined = " ".join(report.blame)
    assert "BatchNorm1d" in joined and "Tanh" in joined
    assert "not homogeneous" in report.describe()
    assert "which do not round to one integer" in report.describe()


def test_leaky_relu_and_avgpool_stay_homogeneous():
    m = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.LeakyReLU(0.1),
                      nn.AvgPool2d(2), nn.Flatten(), nn.Linear(64, 3, bias=False))
    assert homogeneity_order(m, torch.rand(5, 1, 8, 8)) == 2


def test_timm_integration():
    m = timm.create_model("marginrobust_cnn", num_classes=10, in_chans=1, img_size=8)
    assert homogeneity_order(m, torch.rand(4, 1, 8, 8)) == 4
    r = create_model("timm/resnet10t", num_classes=10, in_chans=1, img_size=16)
    assert r(torch.rand(2, 1, 16, 16)).shape == (2, 10)
    assert homogeneity_order(r.eval(), torch.rand(4, 1, 16, 16)) is None


def test_unknown_model_and_bad_options_are_user_errors():
    with pytest.raises(UserError, match="unknown model"):
        create_model("resnet9000")
    with pytest.raises(UserError, match="bias"):
        create_model("cnn", bias="some")
    with pytest.raises(UserError, match="width"):
        create_model("cnn", width=-1)
    with pytest.raises(UserError, match="timm has no"):
        create_model("timm/not-a-model")


@pytest.mark.parametrize("name,options,words", [
    ("cnn", {"widht": 0.25}, ["'widht'", "did you mean 'width'", "bias, width"]),
    ("mlp", {"depth": 3}, ["'depth'", "widths, bias, width"]),
    ("vgg16", {"bias": "none", "dropout": 0.5}, ["'dropout'", "bias, width"]),
])
def test_unknown_options_are_refused_in_one_sentence(name, options, words):
    with pytest.raises(UserError, match=f"model '{name}' has no option") as info:
        create_model(name, **options)
    text = str(info.value)
    assert "\n" not in text and all(w in text for w in words), text


@pytest.mark.parametrize("name,options,word", [
    ("mlp", {"widths": "oops"}, "widths must be a list of positive integers"),
    ("mlp", {"widths": 128}, "widths must be a list of positive integers"),
    ("mlp", {"widths": [64, -1]}, "widths must be a list of positive integers"),
    ("cnn", {"width": "half"}, "width must be a positive number"),
    ("cnn", {"width": float("nan")}, "width must be a positive number"),
    ("vgg16", {"width": float("inf")}, "width must be a positive number"),
    ("mlp", {"widths": [], "width": 0}, "width must be a positive number"),
])
def test_bad_option_values_are_user_errors(name, options, word):
    with pytest.raises(UserError, match=word) as info:
        create_model(name, **options)
    assert "\n" not in str(info.value)


def test_timm_entry_points_reject_unknown_options_too():
    with pytest.raises(UserError, match="has no option 'drop_rate'"):
        timm.create_model("marginrobust_mlp", drop_rate=0.1)
    with pytest.raises(UserError, match="cannot build timm model 'resnet10t'"):
        create_model("timm/resnet10t", widht=2)


def test_star_import_of_models_works():
    import marginrobust.models as models

    namespace: dict = {}
    exec("from marginrobust.models import *", namespace)
    assert {"create_model", "check_homogeneity", "list_models"} <= set(namespace)
    assert all(hasattr(models, name) for name in models.__all__)
    assert not any(name.startswith("marginrobust_") for name in models.__all__)
    assert timm.is_model("marginrobust_cnn")


def test_message_says_the_orders_at_theta_and_at_its_perturbation():
    # Biases after layer 1 start at zero: at θ the net is homogeneous, at its perturbation not.
    torch.manual_seed(0)
    model = create_model("cnn", num_classes=10, in_chans=1, img_size=8, bias="all",
                         width=0.125)
    report = check_homogeneity(model, torch.rand(16, 1, 8, 8))
    assert report.order is None
    assert report.rel_errors[0] < 1e-9 < report.tol < report.rel_errors[1]
    assert all(abs(v - 4) < 1e-9 for v in report.orders.values())
    assert not all(abs(v - 4) < 1e-9 for v in report.perturbed_orders.values())
    text = report.describe()
    at_theta = ", ".join(f"{v:.3f}" for v in report.orders.values())
    perturbed = ", ".join(f"{v:.3f}" for v in report.perturbed_orders.values())
    assert (f"at θ the measured orders L_c (c = 0.5, 2, 3) are {at_theta} and f(cθ) = c^4 "
            f"f(θ) holds there") in text
    assert f"but at a random perturbation of θ they are {perturbed}" in text
    assert f"by a relative {report.rel_errors[1]:.1e} (allowed 1e-06)" in text
    assert "bias after the first layer" in text


@pytest.mark.parametrize(("tail", "says"), [
    (nn.Tanh(), "which round to L=2, but f(cθ) differs from c^2 f(θ) by a relative"),
    (nn.Softmax(1), "does not grow with θ (order 0)"),
])
def test_message_says_why_theta_itself_fails(tail, says):
    torch.manual_seed(0)
    m = nn.Sequential(nn.Flatten(), nn.Linear(64, 16, bias=False), nn.ReLU(),
                      nn.Linear(16, 3, bias=False), tail)
    report = check_homogeneity(m, torch.rand(8, 1, 8, 8))
    assert report.order is None and not report.perturbed_orders
    assert says in report.describe() and type(tail).__name__ in report.describe()


def test_zero_outputs_measure_no_order_and_say_so():
    m = nn.Sequential(nn.Flatten(), nn.Linear(64, 16, bias=False), nn.ReLU(),
                      nn.Linear(16, 3, bias=False))
    report = check_homogeneity(m, torch.zeros(4, 1, 8, 8))
    assert report.order is None
    assert report.describe().startswith("no homogeneity order measured: f(θ; x) is zero")
    assert check_homogeneity(m, torch.rand(4, 1, 8, 8)).order == 2
