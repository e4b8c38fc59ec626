"""``Posterior.to_arviz`` for every backend: the same groups, ArviZ's tools across backends.

Four small fits of one data set (SVI, MAP by SVI's ``map`` guide with EM scales, MC
dropout, NUTS) are converted and checked: groups and shapes, the log-likelihood
against ``evaluate`` on the same draws, ``az.loo`` on each, ``az.compare`` of SVI
against MC dropout, and that converting leaves ``predict``'s random numbers alone.
"""

from __future__ import annotations

import pickle
import warnings

import arviz as az
import numpy as np
import pytest
import torch
from scipy.special import logsumexp

import bnn_priors as bp
from bnn_priors.errors import DataError, InvalidParameterError
from inference import NUTS, SVI, MCDropout
from models import BayesianMLP

N, S = 40, 200
BACKENDS = ("svi", "map", "mc-dropout", "nuts")


def _data(n=N, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(n, 1, generator=g) * 3 - 1.5
    y = torch.sin(2 * X[:, 0]) + 0.1 * torch.randn(n, generator=g)
    return X, y


def _fit(name: str, replicas: int = 1):
    X, y = _data()
    if replicas > 1:
        X, y = torch.stack([X] * replicas), torch.stack([y * (r + 1) for r in range(replicas)])
    if name == "svi":
        return SVI(steps=600, lr=0.02, progress=False).fit(BayesianMLP(1, hidden=(8,), prior=bp.prior("half-cauchy"), replicas=replicas), X, y)
    if name == "map":
        backend = SVI(guide="map", scale_updates="em", steps=600, lr=0.02, progress=False)
        return backend.fit(BayesianMLP(1, hidden=(8,), prior=bp.prior("inverse-nakagami")), X, y)
    if name == "mc-dropout":
        return MCDropout(epochs=150, batch_size=20, lr=0.01, progress=False).fit(
            BayesianMLP(1, hidden=(8,), prior=bp.prior("bernoulli", p=0.1)), X, y
        )
    backend = NUTS(num_samples=60, warmup=60, num_chains=1, max_tree_depth=4, jit_compile=False, progress=False)
    return backend.fit(BayesianMLP(1, hidden=(5,), prior=bp.prior("half-cauchy")), X, y)


@pytest.fixture(scope="module")
def posteriors():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {name: _fit(name) for name in BACKENDS}


@pytest.fixture(scope="module")
def idatas(posteriors):
    X, y = _data()
    return {name: post.to_arviz(X, y, num_samples=S) for name, post in posteriors.items()}


def _loo(idata):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pareto k warnings of small fits
        return az.loo(idata, pointwise=True)


# ------------------------------------------------------------- groups and shapes
@pytest.mark.parametrize("name", BACKENDS)
def test_the_same_groups_and_shapes_for_every_backend(name, posteriors, idatas):
    post, idata = posteriors[name], idatas[name]
    expected = {"posterior", "posterior_predictive", "log_likelihood", "observed_data", "constant_data"}
    assert set(idata.groups()) == expected | ({"sample_stats"} if name == "nuts" else set())
    C, D = (1, 60) if name == "nuts" else (1, S)
    width = 5 if name == "nuts" else 8
    p = idata.posterior
    assert p["layer0.weight"].shape == (C, D, 1, width) and p["layer0.bias"].shape == (C, D, width)
    assert p["output.weight"].shape == (C, D, width, 1) and p["likelihood.precision"].shape == (C, D)
    if name != "map":  # bernoulli noise, half-cauchy scales: ARD, one per input unit
        assert p["output.unit_scale"].shape == (C, D, width, 1)
    assert idata.log_likelihood["y"].shape == idata.posterior_predictive["y"].shape == (C, D, N)
    assert idata.log_likelihood["y"].dims == ("chain", "draw", "obs")
    np.testing.assert_array_equal(idata.observed_data["y"].values, _data()[1].numpy())
    assert idata.constant_data["X"].shape == (N, 1)
    assert idata.posterior.attrs["backend"] == post.backend and idata.posterior.attrs["draws"]
    if name == "nuts":
        assert idata.sample_stats["diverging"].shape == (C, D)
        np.testing.assert_array_equal(p["output.weight"].values[0], post.samples["output.weight"][:, 0].numpy())


def test_map_is_one_point_said_plainly(idatas):
    idata = idatas["map"]
    assert "one point" in idata.posterior.attrs["draws"]
    w = idata.posterior["layer0.weight"].values
    assert (w == w[:, :1]).all()  # every draw is the point
    ll = idata.log_likelihood["y"].values
    assert (ll == ll[:, :1]).all()
    # The predictive still scatters: observation noise of the fitted precision.
    assert idata.posterior_predictive["y"].values.std(1).min() > 0


def test_mc_dropout_draws_are_the_effective_weights_of_each_pass(posteriors, idatas):
    post, p = posteriors["mc-dropout"], idatas["mc-dropout"].posterior
    M = post.net.weights["output"].detach().numpy()[0]  # (8, 1)
    mask = p["output.unit_scale"].values[0]  # (S, 8, 1): 0 or 1/(1 - p)
    np.testing.assert_allclose(np.unique(mask), [0.0, 1 / 0.9], rtol=1e-6)
    np.testing.assert_allclose(p["output.weight"].values[0], mask * M, rtol=1e-6)
    assert 0.8 < (mask > 0).mean() < 0.97  # about 1 - p of the units survive a pass


# --------------------------------------------------------- the log-likelihood
@pytest.mark.parametrize("name", BACKENDS)
def test_log_likelihood_is_evaluates_on_the_same_draws(name, posteriors, idatas):
    """``evaluate`` averages log mean_s N(y | f_s, 1/tau_s) over points; with the default seed and
    the same number of draws (NUTS: all stored draws, in any order) it uses the draws of ``to_arviz``."""
    post, idata = posteriors[name], idatas[name]
    X, y = _data()
    ll = idata.log_likelihood["y"].values.reshape(-1, N)
    expected = post.evaluate(X, y, num_samples=ll.shape[0])["log_likelihood"]
    assert np.mean(logsumexp(ll, 0) - np.log(ll.shape[0])) == pytest.approx(expected, rel=1e-5, abs=1e-5)


def test_converting_leaves_predict_and_evaluate_unchanged(posteriors):
    X, y = _data()
    for post in posteriors.values():
        before = post.predict(X, num_samples=30)
        post.to_arviz(X, y, num_samples=30)
        after = post.predict(X, num_samples=30)
        np.testing.assert_array_equal(before.samples, after.samples)


def test_seed_and_num_samples():
    post = _fit("svi")
    X, y = _data()
    a = post.to_arviz(X, y, num_samples=50, seed=7)
    b = post.to_arviz(X, y, num_samples=50, seed=7)
    np.testing.assert_array_equal(a.posterior_predictive["y"].values, b.posterior_predictive["y"].values)
    c = post.to_arviz(X, y, num_samples=50, seed=8)
    assert not np.allclose(a.log_likelihood["y"].values, c.log_likelihood["y"].values)
    assert a.posterior["layer0.weight"].shape[:2] == (1, 50)
    assert set(post.to_arviz().groups()) == {"posterior"}  # parameters only
    assert set(post.to_arviz(X).groups()) == {"posterior", "posterior_predictive", "constant_data"}


# ------------------------------------------------------------------ ArviZ's tools
@pytest.mark.parametrize("name", BACKENDS)
def test_loo_on_every_backend(name, idatas):
    loo = _loo(idatas[name])
    assert np.isfinite(loo.elpd_loo) and loo.n_data_points == N
    ll = idatas[name].log_likelihood["y"].values.reshape(-1, N)
    assert loo.elpd_loo <= np.sum(logsumexp(ll, 0) - np.log(ll.shape[0])) + 1e-6  # LOO costs, never gains
    if name == "map":  # a point mass: nothing to reweight, the plug-in log-likelihood
        # zero but for float32 rounding, which differs between CPUs: a few units in the last place of elpd
        rounding = 64 * float(np.finfo(np.float32).eps) * max(1.0, abs(float(ll[0].sum())))
        assert loo.p_loo == pytest.approx(0.0, abs=rounding) and loo.elpd_loo == pytest.approx(ll[0].sum(), rel=1e-6)


def test_compare_ranks_svi_against_mc_dropout(idatas):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = az.compare({"svi": idatas["svi"], "mc-dropout": idatas["mc-dropout"]})
    assert sorted(table.index) == ["mc-dropout", "svi"] and sorted(table["rank"]) == [0, 1]
    loo = {name: _loo(idatas[name]).elpd_loo for name in ("svi", "mc-dropout")}
    best = max(loo, key=loo.get)
    assert table.index[0] == best
    assert table.loc[best, "elpd_diff"] == 0.0
    np.testing.assert_allclose(table["elpd_loo"].loc[list(loo)].values, list(loo.values()))


def test_plot_ppc_draws_observed_and_predicted(idatas):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ax = az.plot_ppc(idatas["svi"], num_pp_samples=20, random_seed=0)
    labels = [line.get_label() for line in np.ravel(ax)[0].get_lines()]
    assert any("Observed" in label for label in labels)
    plt.close("all")


# ---------------------------------------------------------------------- replicas
def test_replicas_are_converted_one_at_a_time():
    post = _fit("svi", replicas=2)
    X, y = _data()
    y2 = torch.stack([y, 2 * y])
    with pytest.raises(InvalidParameterError, match="replica=r"):
        post.to_arviz(X, y2)
    with pytest.raises(InvalidParameterError, match="replica"):
        post.to_arviz(X, y2, replica=2)
    for r in range(2):
        idata = post.to_arviz(X, y2, num_samples=S, replica=r)
        assert idata.posterior.attrs["replica"] == r
        np.testing.assert_array_equal(idata.observed_data["y"].values, y2[r].numpy())
        ll = idata.log_likelihood["y"].values[0]
        expected = post.evaluate(X, y2, num_samples=S)["log_likelihood"][r]
        assert np.mean(logsumexp(ll, 0) - np.log(S)) == pytest.approx(expected, rel=1e-5, abs=1e-5)
    everything = post.to_arviz(num_samples=10)  # parameters only: a replica dimension
    assert everything.posterior["layer0.weight"].dims[:3] == ("chain", "draw", "replica")
    assert everything.posterior["layer0.weight"].shape == (1, 10, 2, 1, 8)


def test_bad_arguments():
    post = _fit("svi")
    X, y = _data()
    with pytest.raises(DataError, match="without X"):
        post.to_arviz(y=y)
    with pytest.raises(InvalidParameterError, match="num_samples"):
        post.to_arviz(X, y, num_samples=0)


def test_every_posterior_pickles(posteriors):
    X, _ = _data()
    for post in posteriors.values():
        again = pickle.loads(pickle.dumps(post))
        np.testing.assert_array_equal(again.predict(X, num_samples=20).samples, post.predict(X, num_samples=20).samples)
        np.testing.assert_array_equal(again.weight_means()["output"], post.weight_means()["output"])
