"""Networks and likelihoods: architecture, replica shapes, priors per layer, clear errors, devices."""

from __future__ import annotations

import numpy as np
import pyro
import pytest
import torch

import bnn_priors as bp
from bnn_priors.errors import DataError, InvalidParameterError, UnknownNameError
from inference import SVI
from models import BayesianMLP, BayesianResNet, GaussianLikelihood


def _trace(model, X, y=None):
    return pyro.poutine.trace(model).get_trace(X, y)


def test_mlp_sites_and_shapes_with_replicas():
    model = BayesianMLP(3, 2, hidden=(7, 5), prior=bp.prior("rayleigh", "ard-add"), replicas=4)
    tr = _trace(model, torch.randn(10, 3), torch.randn(4, 10, 2))
    assert tr.nodes["layer0.weight"]["value"].shape == (4, 3, 7)
    assert tr.nodes["layer1.weight"]["value"].shape == (4, 7, 5)
    assert tr.nodes["output.weight"]["value"].shape == (4, 5, 2)
    assert tr.nodes["layer1.unit_scale"]["value"].shape == (4, 7, 1)
    assert tr.nodes["layer1.layer_scale"]["value"].shape == (4, 1, 1)
    assert tr.nodes["output.bias"]["value"].shape == (4, 2)
    assert tr.nodes["likelihood.precision"]["value"].shape == (4,)
    assert tr.nodes["f"]["value"].shape == (4, 10, 2)
    assert tr.nodes["obs"]["value"].shape == (4, 10, 2)


def test_forward_is_the_architecture():
    """forward_params computes relu(x W0 + b0) ... by hand; the residual net adds skips."""
    torch.manual_seed(0)
    X = torch.randn(1, 6, 3)
    for cls, residual in ((BayesianMLP, False), (BayesianResNet, True)):
        model = cls(3, 1, hidden=(4, 4))
        params = {}
        for layer in model.layers:
            params[f"{layer.name}.weight"] = torch.randn(1, layer.in_features, layer.out_features)
            params[f"{layer.name}.bias"] = torch.randn(1, layer.out_features)
        h1 = torch.relu(X @ params["layer0.weight"] + params["layer0.bias"][:, None])
        h2 = torch.relu(h1 @ params["layer1.weight"] + params["layer1.bias"][:, None])
        h2 = h1 + h2 if residual else h2
        expected = h2 @ params["output.weight"] + params["output.bias"][:, None]
        assert torch.allclose(model.forward_params(X, params), expected, atol=1e-6)
        assert [layer.residual for layer in model.layers] == [False, residual, False]


def test_priors_per_layer_list_or_dict():
    hc, normal = bp.prior("half-cauchy", "ard"), bp.prior("normal")
    by_list = BayesianMLP(2, 1, hidden=(3,), prior=[normal, hc])
    by_dict = BayesianMLP(2, 1, hidden=(3,), prior={"layer0": normal, "output": hc})
    for model in (by_list, by_dict):
        tr = _trace(model, torch.randn(5, 2))
        assert "layer0.unit_scale" not in tr.nodes and "output.unit_scale" in tr.nodes
    with pytest.raises(InvalidParameterError, match="2 weight matrices"):
        BayesianMLP(2, 1, hidden=(3,), prior=[hc])
    with pytest.raises(InvalidParameterError, match="missing"):
        BayesianMLP(2, 1, hidden=(3,), prior={"layer0": hc})
    with pytest.raises(InvalidParameterError, match="not a bnn_priors prior"):
        BayesianMLP(2, 1, hidden=(3,), prior=[hc, "half-cauchy"])


def test_bias_prior_and_likelihood_options():
    model = BayesianMLP(2, 1, hidden=(3,), bias_scale=0.5, likelihood=GaussianLikelihood(precision=9.0))
    tr = _trace(model, torch.randn(5, 2), torch.randn(5))
    assert float(tr.nodes["layer0.bias"]["fn"].base_dist.scale.reshape(-1)[0]) == pytest.approx(0.5)
    assert "likelihood.precision" not in tr.nodes
    assert float(tr.nodes["obs"]["fn"].base_dist.scale.reshape(-1)[0]) == pytest.approx(1 / 3)
    lik = GaussianLikelihood()
    f, y, tau = torch.randn(2, 8, 1), torch.randn(2, 8, 1), torch.tensor([3.0, 0.5])
    expected = torch.distributions.Normal(f, tau[:, None, None].rsqrt()).log_prob(y).sum((-2, -1))
    assert torch.allclose(lik.log_prob(f, y, tau), expected, atol=1e-5)
    with pytest.raises(InvalidParameterError, match="precision"):
        GaussianLikelihood(precision=-1.0)


def test_resnet_needs_equal_widths():
    with pytest.raises(InvalidParameterError, match="equal width"):
        BayesianResNet(3, 1, hidden=(10, 20))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(in_features=0), "in_features"),
        (dict(hidden=(0,)), "hidden layer width"),
        (dict(activation="swish"), "activation"),
        (dict(bias_scale=float("inf")), "bias_scale"),
        (dict(replicas=0), "replicas"),
    ],
)
def test_bad_arguments_are_clear_errors(kwargs, match):
    args = dict(in_features=2, out_features=1)
    args.update(kwargs)
    with pytest.raises((InvalidParameterError, UnknownNameError), match=match):
        BayesianMLP(**args)


def test_data_checks_name_the_problem():
    model = BayesianMLP(3, 1, replicas=2)
    with pytest.raises(DataError, match="features"):
        model.check_inputs(torch.randn(5, 4))
    with pytest.raises(DataError, match="replicas"):
        model.check_inputs(torch.randn(3, 5, 3))
    with pytest.raises(DataError, match="inf"):
        model.check_inputs(np.array([[1.0, np.inf, 0.0]]))
    with pytest.raises(DataError, match="numbers"):
        model.check_inputs(np.array([["a", "b", "c"]]))
    X = model.check_inputs(torch.randn(5, 3))
    assert X.shape == (2, 5, 3)
    assert model.check_targets(np.zeros(5), X).shape == (2, 5, 1)
    assert model.check_targets(np.zeros((2, 5)), X).shape == (2, 5, 1)
    assert model.check_targets(np.zeros((5, 1)), X).shape == (2, 5, 1)  # a column vector
    with pytest.raises(DataError, match="y has shape"):
        model.check_targets(np.zeros((3, 5)), X)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fit_and_predict_on_cuda():
    model = BayesianResNet(2, 1, hidden=(8, 8), prior=bp.prior("half-cauchy", "ard-add"), replicas=3)
    X, y = torch.randn(3, 40, 2), torch.randn(3, 40)
    posterior = SVI(steps=50, device="cuda", progress=False).fit(model, X, y)
    assert model.device.type == "cuda"
    assert posterior.evaluate(X, y)["rmse"].shape == (3,)
