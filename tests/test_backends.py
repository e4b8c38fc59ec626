"""Every (noise model x structure x backend): a fit that learns, or one clear refusal.

The problem: a 1-D regression with a gap in the inputs. A supported combination must
beat the prior predictive's test RMSE and predict more spread away from the data
than on it. An unsupported one must raise one ``UnsupportedCombinationError`` that
says why and what to use instead, before any work.
"""

from __future__ import annotations

import warnings

import numpy as np
import pyro
import pytest
import torch

import bnn_priors as bp
from bnn_priors.errors import UnsupportedCombinationError
from inference import BACKENDS, NUTS, SVI, MCDropout
from models import BayesianMLP


def _problem():
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.rand(30, generator=g) * 1.5 - 2.0, torch.rand(30, generator=g) * 1.5 + 0.5])
    y = torch.sin(2 * x) + 0.1 * torch.randn(60, generator=g)
    x_test = torch.linspace(-3.0, 3.0, 121)
    return x[:, None], y, x_test[:, None], torch.sin(2 * x_test)


X, Y, X_TEST, Y_TEST = _problem()
ON_DATA = ((X_TEST[:, 0].abs() > 0.6) & (X_TEST[:, 0].abs() < 1.9)).numpy()
AWAY = ((X_TEST[:, 0].abs() < 0.2) | (X_TEST[:, 0].abs() > 2.5)).numpy()  # the gap and beyond the data
NOISES = list(bp.NOISE_MODELS)
STRUCTURES = list(bp.STRUCTURES)
# Inverse Nakagami with shape m <= 2 gives lambda^2 infinite variance, and the Monte Carlo
# spread of multiplicative-noise predictions then depends on a few extreme draws.
NOISE_PARAMS = {"inverse-nakagami": {"shape": 3.0}}


def _model(noise: str, structure: str, backend: str = "svi") -> BayesianMLP:
    # Noise on the single input would corrupt x itself: the input layer gets a normal
    # prior, the layers above it the prior under test. NUTS gets a smaller network so
    # that 16 samplers fit in the test budget.
    under_test = bp.prior(noise, structure, **NOISE_PARAMS.get(noise, {}))
    if backend == "nuts":
        return BayesianMLP(1, 1, hidden=(8,), prior=[bp.prior("normal"), under_test])
    return BayesianMLP(1, 1, hidden=(16, 16), prior=[bp.prior("normal"), under_test, under_test])


def _backends():
    out = {
        "svi": lambda: SVI(steps=800, lr=0.03, progress=False, seed=1),
        "mc-dropout": lambda: MCDropout(epochs=300, batch_size=32, lr=0.01, precision=50.0, progress=False, seed=1),
    }
    out["nuts"] = lambda: NUTS(num_samples=60, warmup=60, max_tree_depth=5, jit_compile=False, progress=False, seed=1)
    return out


BACKEND_FACTORIES = _backends()


def _prior_predictive_rmse(model) -> float:
    pyro.set_rng_seed(0)
    f = pyro.infer.Predictive(model, num_samples=200)(X_TEST)["f"].mean(0).reshape(-1)
    return float(((f - Y_TEST) ** 2).mean().sqrt())


def _heavy_tailed_mc_noise(backend: str, noise: str) -> bool:
    # Half-Cauchy noise has infinite variance: the Monte Carlo objective of the expanded form
    # pushes the net to ignore noisy units (the backend warns), so it is checked to run only.
    return backend == "mc-dropout" and noise == "half-cauchy"


@pytest.mark.parametrize("backend", list(BACKEND_FACTORIES))
@pytest.mark.parametrize("structure", STRUCTURES)
@pytest.mark.parametrize("noise", NOISES)
def test_every_combination_learns_or_is_refused(noise, structure, backend):
    model = _model(noise, structure, backend)
    engine = BACKEND_FACTORIES[backend]()
    if not engine.supports(model):
        with pytest.raises(UnsupportedCombinationError) as err:
            engine.fit(model, X, Y)
        message = str(err.value)
        assert "Use " in message and "instead" in message
        assert noise in message
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        posterior = engine.fit(model, X, Y)
    pred = posterior.predict(X_TEST, num_samples=200)
    assert np.isfinite(pred.mean).all() and np.isfinite(pred.std).all()
    if _heavy_tailed_mc_noise(backend, noise):
        return
    rmse = float(np.sqrt(np.mean((pred.mean - Y_TEST.numpy()) ** 2)))
    assert rmse < _prior_predictive_rmse(model)
    assert pred.std[AWAY].mean() > pred.std[ON_DATA].mean()


def test_the_refusals_are_the_expected_ones():
    refused = {
        (name, noise)
        for name, make in BACKEND_FACTORIES.items()
        for noise in NOISES
        if not make().supports(_model(noise, "ard", name))
    }
    assert refused == {("svi", "bernoulli"), ("nuts", "bernoulli")}
    assert set(BACKENDS) == {"svi", "nuts", "mc-dropout"}


def test_log_uniform_goes_to_variational_dropout_only():
    model = BayesianMLP(1, 1, hidden=(16,), prior=bp.prior("log-uniform"))
    assert SVI(guide="variational-dropout").supports(model)
    with pytest.raises(UnsupportedCombinationError, match="variational-dropout"):
        MCDropout(progress=False).fit(model, X, Y)
