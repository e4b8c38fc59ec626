"""The NUTS backend: fits, replicas, seeding, refusals, diagnostics, parametrizations.

These run Pyro's engine (``engine="pyro"``); the batched engine, the default, is
tested in tests/test_hmc.py. Fits are kept tiny (one hidden layer of 5 units, 40 points, a few dozen draws and a
shallow tree) so the whole file runs in well under a minute on two cores.
"""

from __future__ import annotations

import math
import time
import warnings

import numpy as np
import pyro
import pytest
import torch

import bnn_priors as bp
from bnn_priors.errors import FitDivergedError, InvalidParameterError, UnsupportedCombinationError
from inference.nuts import (
    NUTS,
    NUTSPosterior,
    _check_finite,
    _fill_weights,
    _reparametrized,
    _ReplicaRun,
)
from models import BayesianMLP, BayesianResNet, GaussianLikelihood

TINY = dict(num_samples=15, warmup=15, num_chains=1, max_tree_depth=4, jit_compile=False, progress=False,
            engine="pyro")


def _data(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(n, 1, generator=g) * 3 - 1.5
    y = torch.sin(2 * X[:, 0]) + 0.1 * torch.randn(n, generator=g)
    return X, y


def _mlp(prior="half-cauchy", replicas=1, **kw):
    p = bp.prior(prior) if isinstance(prior, str) else prior
    return BayesianMLP(1, 1, hidden=(5,), prior=p, replicas=replicas, **kw)


@pytest.fixture(scope="module")
def fit1d():
    X, y = _data()
    model = _mlp()
    post = NUTS(num_samples=60, warmup=60, num_chains=1, max_tree_depth=5, jit_compile=True, progress=False, seed=1,
                engine="pyro").fit(model, X, y)
    return model, X, y, post


@pytest.fixture(scope="module")
def batched():
    """R = 2 with two chains and seeds [3, 8], and the same replicas fitted alone."""
    X, y = _data()
    X2 = torch.stack([X, X + 0.1])
    y2 = torch.stack([y, y * 0.5])
    kw = dict(TINY, num_chains=2)
    both = NUTS(seed=[3, 8], **kw).fit(_mlp(replicas=2), X2, y2)
    alone = [NUTS(seed=s, **kw).fit(_mlp(), X2[r], y2[r]) for r, s in enumerate([3, 8])]
    return both, alone, (X2, y2, kw)


# ------------------------------------------------------------------------ fits
def test_fit_beats_prior_and_is_uncertain_away_from_data(fit1d):
    model, X, y, post = fit1d
    assert isinstance(post, NUTSPosterior) and post.backend == "nuts"
    rmse = post.evaluate(X, y, num_samples=60)["rmse"]
    # The prior is symmetric in the weights: its predictive mean is 0, RMSE = rms(y).
    pyro.set_rng_seed(0)
    prior_f = pyro.infer.Predictive(model, num_samples=200)(X)["f"][:, 0, :, 0]
    prior_rmse = float(((prior_f.mean(0) - y) ** 2).mean().sqrt())
    rms_y = float(y.pow(2).mean().sqrt())
    assert rmse < 0.5 * rms_y and rmse < prior_rmse
    far = post.predict(torch.tensor([[-6.0], [6.0]]), num_samples=60).std
    near = post.predict(torch.tensor([[-0.5], [0.0], [0.5]]), num_samples=60).std
    assert far.min() > 2 * near.max()


def test_samples_shapes_and_info(fit1d):
    model, X, y, post = fit1d
    assert post.num_draws == 60
    expect = {
        "layer0.unit_scale": (60, 1, 1, 1),
        "layer0.weight": (60, 1, 1, 5),
        "layer0.bias": (60, 1, 5),
        "output.unit_scale": (60, 1, 5, 1),
        "output.weight": (60, 1, 5, 1),
        "output.bias": (60, 1, 1),
        "likelihood.precision": (60, 1),
    }
    assert {k: tuple(v.shape) for k, v in post.samples.items()} == expect
    assert all(v.device == model.device for v in post.samples.values())
    assert (post.samples["layer0.unit_scale"] > 0).all() and (post.samples["likelihood.precision"] > 0).all()
    f, tau = post.sample_functions(X, num_samples=7)
    assert f.shape == (7, 1, 40, 1) and tau.shape == (7, 1)
    assert post.weight_means()["layer0"].shape == (1, 5)
    info = post.info
    for key in ("seconds", "num_samples", "warmup", "divergences", "parametrization", "ess_per_second"):
        assert key in info
    assert info["num_samples"] == 60 and info["warmup"] == 60 and info["jit_compile"] is True
    assert info["parametrization"] == {"layer0": "non-centered", "output": "non-centered"}
    assert info["seconds"] > 0 and info["ess_per_second"] > 0 and math.isfinite(info["ess_per_second"])
    assert isinstance(info["divergences"], int) and 0 <= info["divergences"] <= 60
    assert 0 < info["mean_accept_prob"][0][0] <= 1 and info["step_size"][0][0] > 0


def test_prediction_draws_cycle_or_subsample(fit1d):
    post = fit1d[3]
    from inference.common import ReplicaRandom

    idx = post._draw_indices(150, ReplicaRandom([5], torch.device("cpu")))[:, 0]
    counts = torch.bincount(idx, minlength=60)
    assert counts.min() == 2 and counts.max() == 3  # 150 = 2 * 60 + 30: every draw used 2 or 3 times
    idx = post._draw_indices(40, ReplicaRandom([5], torch.device("cpu")))[:, 0]
    assert len(set(idx.tolist())) == 40  # no replacement


# -------------------------------------------------------------- replicas, seeds
def test_batched_equals_one_at_a_time(batched):
    both, alone, _ = batched
    assert both.num_draws == 30 and both.num_chains == 2
    for name, t in both.samples.items():
        for r in range(2):
            assert torch.equal(t[:, r], alone[r].samples[name][:, 0])
    assert both.info["divergences"] == sum(a.info["divergences"] for a in alone)
    X2, _, _ = batched[2]
    torch.testing.assert_close(
        both.sample_functions(X2, 10, seed=[4, 9])[0][:, 1],
        alone[1].sample_functions(X2[1], 10, seed=9)[0][:, 0],
    )


def test_same_seed_same_samples_different_seed_differs(batched):
    both, alone, (X2, y2, kw) = batched
    again = NUTS(seed=3, **kw).fit(_mlp(), X2[0], y2[0])
    for name in again.samples:
        assert torch.equal(again.samples[name], alone[0].samples[name])
    seeds_differ = NUTS(seed=4, **kw).fit(_mlp(), X2[0], y2[0])
    assert not torch.equal(seeds_differ.samples["layer0.weight"], alone[0].samples["layer0.weight"])


# --------------------------------------------------------------------- refusals
def test_refuses_bernoulli_before_sampling():
    X, y = _data()
    start = time.perf_counter()
    with pytest.raises(UnsupportedCombinationError, match="MCDropout") as err:
        NUTS(**TINY).fit(_mlp(bp.prior("bernoulli", p=0.2)), X, y)
    assert "'gaussian'" in str(err.value) and "0.25" in str(err.value) and "discrete" in str(err.value)
    assert time.perf_counter() - start < 1.0


def test_refuses_log_uniform_before_sampling():
    X, y = _data()
    model = BayesianMLP(1, 1, hidden=(5,), prior=[bp.prior("normal"), bp.prior("log-uniform")])
    start = time.perf_counter()
    with pytest.raises(UnsupportedCombinationError, match="variational-dropout") as err:
        NUTS(**TINY).fit(model, X, y)
    assert "improper" in str(err.value) and "output" in str(err.value)
    assert time.perf_counter() - start < 1.0
    assert not NUTS().supports(model) and NUTS().supports(_mlp())


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(num_samples=0), dict(num_samples=2.5), dict(warmup=-1), dict(warmup=True), dict(num_chains=0),
        dict(thin=0), dict(target_accept=1.0), dict(target_accept=0), dict(target_accept="high"),
        dict(max_tree_depth=0), dict(max_tree_depth=25), dict(jit_compile="yes"), dict(parametrization="funnel"),
        dict(progress=None), dict(seed=-1), dict(device="tpu"), dict(engine="stan"), dict(init="uniform"),
        dict(init_steps=-1), dict(init_jitter=-0.1), dict(init_jitter=math.nan), dict(init_jitter=True), dict(compile="yes"),
        dict(threads=0), dict(threads=1.5),
    ],
)
def test_invalid_arguments(kwargs):
    with pytest.raises(InvalidParameterError):
        NUTS(**kwargs)


@pytest.mark.parametrize("engine", ["batched", "pyro"])
def test_fit_runs_with_its_threads_and_restores_torchs(monkeypatch, engine):
    """NUTS fits with one torch thread by default (as the training loop), ``threads=None`` leaves
    torch's setting alone, torch's setting is back after the fit, and the runner passes its
    ``--threads`` to NUTS as to the other backends."""
    from bnn_priors.suite.methods import METHODS
    from inference.network_density import NetworkDensity

    seen = []
    potential = NetworkDensity.potential
    monkeypatch.setattr(NetworkDensity, "potential",
                        lambda self, *a, **k: seen.append(torch.get_num_threads()) or potential(self, *a, **k))
    if engine == "pyro":
        seen_pyro = pyro.infer.mcmc.api.MCMC.run
        monkeypatch.setattr(pyro.infer.mcmc.api.MCMC, "run",
                            lambda self, *a, **k: seen.append(torch.get_num_threads()) or seen_pyro(self, *a, **k))
    X, y = _data(20)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for threads, expected in ((None, 2), (1, 1), (2, 2)):
            seen.clear()
            NUTS(threads=threads, **dict(TINY, engine=engine, num_samples=4, warmup=3)).fit(_mlp(), X, y)
            assert seen and set(seen) == {expected}, (threads, seen)
            assert torch.get_num_threads() == 2
        assert NUTS().threads == 1
    finally:
        torch.set_num_threads(before)
    assert METHODS["nuts"].make_backend(10, {}, seed=0, threads=3).threads == 3


# ------------------------------------------------------------------- diagnostics
def test_diagnostics_single_chain(fit1d):
    post = fit1d[3]
    df = post.diagnostics()
    assert list(df["site"]) == [*post.samples, "f"]  # f: the predictions at the diagnostic inputs
    for col in ("r_hat_max", "ess_bulk_min", "ess_bulk_median", "ess_tail_min", "divergences"):
        assert col in df
    assert np.isfinite(df["r_hat_max"]).all() and (df["r_hat_max"] > 0.9).all()
    assert (df["ess_bulk_min"] > 0).all() and (df["ess_bulk_median"] <= 10 * post.num_draws).all()
    assert (df["divergences"] == post.info["divergences"]).all()
    assert "one chain" in df.attrs["r_hat"]
    per_element = post.diagnostics(elementwise=True)
    assert len(per_element) == sum(v[0, 0].numel() for v in post.samples.values()) + 40  # f at the 40 inputs


def test_diagnostics_and_arviz_with_chains_and_replicas(batched):
    both = batched[0]
    df = both.diagnostics()
    assert sorted(set(df["replica"])) == [0, 1] and "2 chains" in df.attrs["r_hat"]
    assert np.isfinite(df["r_hat_max"]).all() and (df["ess_tail_min"] > 0).all()
    for r in range(2):
        n = sum(len(c) for c in both.divergences[r])
        assert (df[df["replica"] == r]["divergences"] == n).all()
    idata = both.to_arviz()
    w = idata.posterior["layer0.weight"]
    assert w.dims[:3] == ("chain", "draw", "replica") and w.shape == (2, 15, 2, 1, 5)
    assert idata.sample_stats["diverging"].shape == (2, 15, 2)


def test_to_arviz_single_replica(fit1d):
    import arviz as az

    post = fit1d[3]
    idata = post.to_arviz()
    assert isinstance(idata, az.InferenceData)
    for layer in ("layer0", "output"):
        assert f"{layer}.weight" in idata.posterior
    assert idata.posterior["layer0.weight"].shape == (1, 60, 1, 5)
    assert int(idata.sample_stats["diverging"].sum()) <= post.info["divergences"]
    np.testing.assert_allclose(
        idata.posterior["output.weight"].values[0], post.samples["output.weight"][:, 0].numpy()
    )


# --------------------------------------------------------------- parametrizations
def test_centered_and_non_centered_give_the_same_sites():
    X, y = _data()
    prior = {"layer0": bp.prior("half-cauchy", structure="ard-add"), "output": bp.prior("normal")}
    posts = {
        form: NUTS(parametrization=form, **TINY).fit(BayesianMLP(1, 1, hidden=(5,), prior=prior), X, y)
        for form in ("centered", "non-centered", "auto")
    }
    sites = {form: set(p.samples) for form, p in posts.items()}
    assert sites["centered"] == sites["non-centered"] == sites["auto"]
    assert {"layer0.weight", "output.weight", "layer0.unit_scale", "layer0.layer_scale"} <= sites["centered"]
    assert not any("decentered" in s for s in sites["centered"])
    assert posts["auto"].info["parametrization"] == {"layer0": "non-centered", "output": "centered"}
    for p in posts.values():
        assert p.samples["layer0.weight"].shape == (15, 1, 1, 5) and torch.isfinite(p.samples["layer0.weight"]).all()


def test_non_centered_weights_are_scale_times_z():
    """The replay that recomputes w from the sampled z and scales: w = sigma0 * |lambda| * z."""
    model = BayesianMLP(2, 1, hidden=(3,), prior=bp.prior("gaussian", structure="ard-add", sigma0=0.5),
                        likelihood=GaussianLikelihood(precision=4.0))
    X, y = torch.randn(1, 6, 2), torch.randn(1, 6, 1)
    names = {"layer0.weight", "output.weight"}
    g = torch.Generator().manual_seed(0)
    chains = {}
    for layer in model.layers:
        i, o = layer.in_features, layer.out_features
        chains[f"{layer.name}.unit_scale"] = torch.randn(2, 3, 1, i, 1, generator=g)
        chains[f"{layer.name}.layer_scale"] = torch.randn(2, 3, 1, 1, 1, generator=g)
        chains[f"{layer.name}.weight_decentered"] = torch.randn(2, 3, 1, i, o, generator=g)
        chains[f"{layer.name}.bias"] = torch.randn(2, 3, 1, o, generator=g)
    run = _ReplicaRun(chains=dict(chains), divergences=[[], []])
    _fill_weights(run, _reparametrized(model, names), X, y, names)
    for layer in model.layers:
        expect = 0.5 * chains[f"{layer.name}.unit_scale"].abs() * chains[f"{layer.name}.layer_scale"].abs()
        expect = expect * chains[f"{layer.name}.weight_decentered"]
        torch.testing.assert_close(run.chains[f"{layer.name}.weight"], expect)
        assert f"{layer.name}.weight_decentered" not in run.chains


def test_resnet_with_fixed_precision():
    X, y = _data()
    model = BayesianResNet(1, 1, hidden=(3, 3), prior=bp.prior("rayleigh"), likelihood=GaussianLikelihood(precision=50.0))
    post = NUTS(**dict(TINY, thin=3)).fit(model, X, y)
    assert post.num_draws == 5 and post.info["draws"] == 5  # every third of 15 draws
    assert "likelihood.precision" not in post.samples
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        df = post.diagnostics()  # too short for R-hat: NaN, quietly
    assert df["r_hat_max"].isna().all() and (df["draws"] == 5).all()
    assert set(post.info["parametrization"].values()) == {"non-centered"}
    f, tau = post.sample_functions(X, num_samples=5)
    assert f.shape == (5, 1, 40, 1) and torch.all(tau == 50.0)


def test_nan_samples_raise_fit_diverged():
    run = _ReplicaRun(chains={"layer0.bias": torch.zeros(1, 4, 1, 3), "layer0.weight": torch.zeros(1, 4, 1, 2, 3)},
                      divergences=[[]])
    _check_finite(run, 0)
    run.chains["layer0.weight"][0, 2, 0, 1, 1] = math.inf
    with pytest.raises(FitDivergedError, match="layer0.weight") as err:
        _check_finite(run, 0)
    assert "step 2" in str(err.value) and "replica 0" in str(err.value)
    with pytest.raises(FitDivergedError, match="step 6"):
        _check_finite(run, 0, thin=3)


def test_a_chain_whose_step_size_collapsed_is_named_in_a_warning(monkeypatch):
    """A chain that ends warm-up with a step size below STUCK_STEP_SIZE barely moves (seen on yacht
    with init="prior": 1.5e-9): the fit warns naming its replica and chain and lists it in info;
    healthy fits list none."""
    from inference import hmc
    from inference.nuts import STUCK_STEP_SIZE

    X, y = _data(n=20)
    X2, y2 = torch.stack([X, X + 0.1]), torch.stack([y, y * 0.5])
    kw = dict(num_samples=5, warmup=25, num_chains=2, max_tree_depth=3, init_steps=10, progress=False, seed=[3, 8])
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        healthy = NUTS(**kw).fit(_mlp(replicas=2), X2, y2)
    assert healthy.info["stuck_chains"] == [[], []]
    assert min(min(s) for s in healthy.info["step_size"]) > STUCK_STEP_SIZE

    final = hmc.DualAveraging.final

    def collapsed(self):  # chain 3 of the four (replica 1, chain 1) ends with a collapsed step size
        eps = final(self).clone()
        eps[3] = 1.5e-9
        return eps

    monkeypatch.setattr(hmc.DualAveraging, "final", collapsed)
    with pytest.warns(RuntimeWarning, match=r"1 chain\(s\) ended warm-up with a step size below 1e-06: "
                                            r"replica 1 chain 1 \(1\.5e-09\)"):
        stuck = NUTS(**kw).fit(_mlp(replicas=2), X2, y2)
    assert stuck.info["stuck_chains"] == [[], [1]]  # per replica: its stuck chains


def test_init_jitter_sets_the_spread_added_to_each_map_start():
    """The start is the MAP fit plus N(0, init_jitter^2) in every unconstrained coordinate, from the
    chains' own streams: the same MAP fit for every jitter, offsets proportional to the jitter."""
    from inference.hmc import ChainRandom, chain_seeds
    from inference.hmc_kernels import Kernels
    from inference.network_density import NetworkDensity

    X, y = _data(n=20)
    model = _mlp()
    density = NetworkDensity(model, X[None], y[None, :, None], {"layer0", "layer1"})
    value_and_grad = Kernels(density.potential).value_and_grad

    def start(jitter):
        backend = NUTS(init_steps=30, init_jitter=jitter, num_chains=4)
        return backend._initial_positions(density, value_and_grad, ChainRandom(chain_seeds([5], 4), torch.device("cpu")))

    at_map, small, large = start(0.0), start(0.1), start(0.5)
    offsets = (small - at_map) / 0.1
    torch.testing.assert_close((large - at_map) / 0.5, offsets, rtol=1e-4, atol=1e-4)
    n = offsets.numel()  # N(0, 1) draws: mean and sd within 4 standard errors
    assert abs(float(offsets.mean())) < 4 / math.sqrt(n) and abs(float(offsets.std()) - 1.0) < 4 / math.sqrt(2 * n)
    assert NUTS().init_jitter == 0.1 and "init_jitter=0.1" in repr(NUTS())
    # checkpoints saved before the option record (init, init_steps): the default keeps that form
    from inference.nuts import _init_identity

    assert _init_identity(NUTS(init_steps=7)) == ("map", 7)
    assert _init_identity(NUTS(init_steps=7, init_jitter=0.0)) == ("map", 7, 0.0)
