"""Tests of the MC dropout backend (``inference.mc_dropout``).

Fits are tiny (one input, two hidden layers of 32, 120 points) and seeded, so every
check is deterministic; the thresholds leave a margin measured over several data
and fit seeds. The noise models' samplers and means are tested in ``test_noise_models.py``;
here, that the backend normalises and places their draws.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import bnn_priors
from bnn_priors import FitDivergedError, InvalidParameterError, UnsupportedCombinationError
from inference.common import ReplicaRandom
from inference.mc_dropout import (
    MCDropout,
    MCDropoutPosterior,
    _NoisyNet,
    draw_noise,
    keep_probability,
    noisy_linear,
)
from models import BayesianMLP, BayesianResNet, GaussianLikelihood

NOISES = {
    "bernoulli": {"p": 0.1},
    "gaussian": {"alpha": 0.1},
    "rayleigh": {},
    "inverse-nakagami": {"shape": 3.0},
    "half-cauchy": {},
}
STRUCTURES = ("ard", "add", "none", "ard-add")
NORMAL = bnn_priors.prior("normal")


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def gap_data(seed: int = 0, n: int = 120):
    """``sin(2x)`` plus N(0, 0.1^2) noise on ``[-2, -0.6] ∪ [0.6, 2]``: a gap around zero."""
    g = np.random.default_rng(seed)
    x = np.concatenate([g.uniform(-2, -0.6, n // 2), g.uniform(0.6, 2, n // 2)])
    y = np.sin(2 * x) + 0.1 * g.standard_normal(n)
    return x[:, None].astype(np.float32), y.astype(np.float32)


FAR = np.concatenate([np.linspace(-4, -3, 5), np.linspace(3, 4, 5)])[:, None].astype(np.float32)
GAP = np.linspace(-0.4, 0.4, 9)[:, None].astype(np.float32)


def mlp(pr, likelihood=None, replicas=1, hidden=(32, 32)):
    """The input layer has the normal prior: noise on a single input is noise on x itself."""
    return BayesianMLP(1, 1, hidden=hidden, prior=[NORMAL] + [pr] * len(hidden), likelihood=likelihood, replicas=replicas)


# --------------------------------------------------------------------------- fits
@pytest.mark.parametrize("structure", STRUCTURES)
@pytest.mark.parametrize(
    "noise, fast", [(n, False) for n in NOISES if n != "half-cauchy"] + [("bernoulli", True), ("gaussian", True)]
)
def test_fits_a_regression_problem_with_a_gap(noise, fast, structure):
    X, y = gap_data(0)
    Xt, yt = gap_data(10, 200)
    model = mlp(bnn_priors.prior(noise, structure, **NOISES[noise]), GaussianLikelihood(precision=100.0))
    post = MCDropout(epochs=150, batch_size=32, lr=1e-2, seed=0, fast=fast, progress=False).fit(model, X, y)
    assert isinstance(post, MCDropoutPosterior)
    rmse = post.evaluate(Xt, yt, num_samples=200)["rmse"]
    # The prior predictive mean is zero (output weights are symmetric about zero): its RMSE is rms(y).
    assert rmse < 0.75 * float(np.sqrt((yt**2).mean()))
    std_data = post.predict(X, 200).std.mean()
    std_away = max(post.predict(FAR, 200).std.mean(), post.predict(GAP, 200).std.mean())
    assert std_away > 1.3 * std_data
    assert post.info["steps"] == 150 * 4


@pytest.mark.parametrize("structure", STRUCTURES)
def test_half_cauchy_noise_runs_and_warns_about_its_infinite_variance(structure):
    """Half-Cauchy noise has E[lambda^2] = inf: the fit is finite, but the backend says what that means."""
    X, y = gap_data(0)
    model = mlp(bnn_priors.prior("half-cauchy", structure), GaussianLikelihood(precision=100.0))
    with pytest.warns(UserWarning, match=r"E\[lambda\^2\] = inf"):
        post = MCDropout(epochs=20, batch_size=32, lr=1e-2, seed=0, progress=False).fit(model, X, y)
    assert math.isfinite(post.info["final_loss"])
    assert post.info["noise_mean"]["output"] == math.inf
    assert all(np.isfinite(w).all() for w in post.weight_means().values())
    assert np.isfinite(post.predict(X, 50).samples).all()


@pytest.mark.parametrize("structure", STRUCTURES)
def test_fits_a_residual_network(structure):
    X, y = gap_data(1)
    Xt, yt = gap_data(11, 200)
    pr = bnn_priors.prior("bernoulli", structure, p=0.1)
    model = BayesianResNet(1, 1, hidden=(32, 32, 32), prior=[NORMAL, pr, pr, pr], likelihood=GaussianLikelihood(precision=100.0))
    post = MCDropout(epochs=100, batch_size=32, lr=1e-2, seed=1, progress=False).fit(model, X, y)
    assert post.evaluate(Xt, yt, num_samples=100)["rmse"] < 0.75 * float(np.sqrt((yt**2).mean()))
    assert post.predict(FAR, 100).std.mean() > 1.3 * post.predict(X, 100).std.mean()


@pytest.mark.parametrize("structure", ["ard", "ard-add"])
def test_bernoulli_with_p_zero_is_the_normal_prior_fit(structure):
    """p = 0 keeps every unit (noise exactly 1, c = 1): the same trajectory as MAP with weight decay.

    The noise has its own random stream, so the initial weights and batches do not
    depend on the noise model and the two fits agree to the last bit.
    """
    X, y = gap_data(0)
    fits = []
    for pr in (bnn_priors.prior("bernoulli", structure, p=0.0, sigma0=0.7), bnn_priors.prior("normal", sigma0=0.7)):
        model = mlp(pr, GaussianLikelihood(precision=50.0))
        fits.append(MCDropout(epochs=5, batch_size=32, lr=1e-2, seed=4, progress=False).fit(model, X, y))
    a, b = fits
    assert a.info["loss_history"] == b.info["loss_history"]
    assert a.info["weight_decay"] == b.info["weight_decay"]
    for name, w in a.weight_means().items():
        np.testing.assert_array_equal(w, b.weight_means()[name])
    np.testing.assert_array_equal(a.predict(GAP, 5).samples, b.predict(GAP, 5).samples)


# ---------------------------------------------------------------- the objective
def test_weight_decay_is_gals_formula():
    X, y = gap_data(0)
    N, tau = X.shape[0], 50.0
    cases = [
        (bnn_priors.prior("bernoulli", "ard", p=0.2, sigma0=2.0), {}, 0.5, 0.8),
        (bnn_priors.prior("bernoulli", "ard-add", p=0.2, sigma0=2.0), {}, 0.5, 0.64),
        (bnn_priors.prior("bernoulli", "none", p=0.3), {"length_scale": 1e-2}, 1e-2, 0.7),
        (bnn_priors.prior("gaussian", "add", alpha=0.2, sigma0=0.5), {}, 2.0, 1.0),
    ]
    for pr, options, ls, keep in cases:
        model = mlp(pr, hidden=(8,))
        post = MCDropout(epochs=1, precision=tau, progress=False, **options).fit(model, X, y)
        wd = post.info["weight_decay"]
        assert wd["output"] == pytest.approx(ls**2 * keep / (2 * N * tau), rel=1e-12)
        layer0_ls = options.get("length_scale", 1.0)  # the normal prior's sigma0 = 1
        assert wd["layer0"] == pytest.approx(layer0_ls**2 / (2 * N * tau), rel=1e-12)
        assert post.info["keep_probability"]["output"] == pytest.approx(keep)
        assert post.info["precision"] == tau and not post.info["precision_learned"]
    given = MCDropout(epochs=1, weight_decay=3e-4, precision=tau, progress=False).fit(mlp(cases[0][0], hidden=(8,)), X, y)
    assert given.info["weight_decay"] == {"layer0": 3e-4, "output": 3e-4}


def test_loss_is_gals_objective_and_its_likelihood_form():
    """One full batch with a vanishing learning rate: the loss is that of the initial weights."""
    X, y = gap_data(0)
    N = X.shape[0]
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)[:, None]

    def initial_terms(post):
        w = {k: torch.from_numpy(v) for k, v in post.weight_means().items()}
        f = torch.relu(Xt @ w["layer0"]) @ w["output"]  # biases start at zero and barely move
        return float(((yt - f) ** 2).mean()), {k: float((v**2).sum()) for k, v in w.items()}

    backend = dict(epochs=1, batch_size=N, lr=1e-12, progress=False)
    fixed = MCDropout(precision=20.0, **backend).fit(mlp(NORMAL, hidden=(16,)), X, y)
    mse, norms = initial_terms(fixed)
    expected = mse + sum(fixed.info["weight_decay"][k] * norms[k] for k in norms)
    assert fixed.info["final_loss"] == pytest.approx(expected, rel=1e-5)

    lik = GaussianLikelihood(concentration=2.0, rate=0.5)
    model = BayesianMLP(1, 1, hidden=(16,), prior=bnn_priors.prior("normal", sigma0=0.5), likelihood=lik)
    learned = MCDropout(**backend).fit(model, X, y)
    mse, norms = initial_terms(learned)
    tau0 = 2.0 / 0.5  # the prior mean, where tau starts
    log_p = float(lik.precision_prior().log_prob(torch.tensor(tau0)))
    ls = learned.info["length_scale"]
    assert ls == {"layer0": 2.0, "output": 2.0}
    expected = tau0 / 2 * mse - 0.5 * math.log(tau0) - log_p / N + sum(ls[k] ** 2 / (4 * N) * v for k, v in norms.items())
    assert learned.info["final_loss"] == pytest.approx(expected, rel=1e-5)
    # After the epoch tau is the closed-form minimizer given the epoch's squared errors.
    assert learned.info["precision"] == pytest.approx((N + 2 * (2.0 - 1)) / (N * mse + 2 * 0.5), rel=1e-4)
    assert learned.info["weight_decay"]["output"] == pytest.approx(4.0 / (2 * N * learned.info["precision"]), rel=1e-6)


def test_learned_precision_finds_the_noise_level():
    g = np.random.default_rng(3)
    x = g.uniform(-2, 2, 300)
    y = (np.sin(x) + 0.2 * g.standard_normal(300)).astype(np.float32)  # true precision 25
    pr = bnn_priors.prior("bernoulli", "ard", p=0.05)
    model = BayesianMLP(1, 1, hidden=(32,), prior=[NORMAL, pr])
    post = MCDropout(epochs=60, batch_size=32, lr=1e-2, seed=3, progress=False).fit(model, x[:, None], y)
    assert post.info["precision_learned"]
    assert 0.7 * 25 < post.info["precision"] < 1.3 * 25
    f, precision = post.sample_functions(x[:5, None], 7)
    assert precision.shape == (7, 1) and torch.allclose(precision, torch.tensor(post.info["precision"]))


# ------------------------------------------------------------------- the noise
def test_noise_placement_per_structure():
    rng = ReplicaRandom([1, 2], torch.device("cpu"))
    R, B, n_in, n_out = 2, 6, 5, 3
    shapes = {
        "ard": {"unit_scale": (R, B, n_in)},
        "add": {"layer_scale": (R, B, 1)},
        "none": {"weight_scale": (R, n_in, n_out)},
        "ard-add": {"unit_scale": (R, B, n_in), "layer_scale": (R, B, 1)},
    }
    for structure, expected in shapes.items():
        noise = draw_noise(bnn_priors.prior("gaussian", structure, alpha=0.5), n_in, n_out, rng, torch.float32, B)
        assert {k: tuple(v.shape) for k, v in noise.items()} == expected
    # With particles or prediction samples in front, and one draw shared by all points.
    noise = draw_noise(bnn_priors.prior("rayleigh", "ard-add"), n_in, n_out, rng, torch.float32, 1, lead=(4,))
    assert noise["unit_scale"].shape == (4, R, 1, n_in) and noise["layer_scale"].shape == (4, R, 1, 1)
    assert draw_noise(NORMAL, n_in, n_out, rng, torch.float32, B) == {}

    # What the layer computes: a scalar per point for "add", a factor per unit for "ard".
    h = torch.randn(R, B, n_in)
    M, b = torch.randn(R, n_in, n_out), torch.randn(R, n_out)
    add = draw_noise(bnn_priors.prior("gaussian", "add", alpha=0.5), n_in, n_out, rng, torch.float32, B)
    z = add["layer_scale"]
    torch.testing.assert_close(noisy_linear(h, M, b, add), z * (h @ M) + b[:, None, :])
    assert not torch.allclose(z[:, 0], z[:, 1])  # each point its own scalar
    ard = draw_noise(bnn_priors.prior("bernoulli", "ard", p=0.5), n_in, n_out, rng, torch.float32, B)
    u = ard["unit_scale"]
    assert set(u.unique().tolist()) <= {0.0, 2.0}  # inverted dropout: kept units scaled by 1/(1-p)
    torch.testing.assert_close(noisy_linear(h, M, b, ard), (h * u) @ M + b[:, None, :])
    none = draw_noise(bnn_priors.prior("gaussian", "none"), n_in, n_out, rng, torch.float32, B)
    torch.testing.assert_close(noisy_linear(h, M, b, none), h @ (M * none["weight_scale"]) + b[:, None, :])


def test_add_on_a_residual_layer_is_stochastic_depth():
    """With zero biases, ReLU and Bernoulli "add" noise: h_l = h_{l-1} + z relu(h_{l-1} W), z in {0, 1/(1-p)}."""
    pr = bnn_priors.prior("bernoulli", "add", p=0.5)
    model = BayesianResNet(3, 1, hidden=(4, 4), prior=[NORMAL, pr, NORMAL])
    net = _NoisyNet(model, ReplicaRandom([0], torch.device("cpu")))
    X = torch.randn(1, 10, 3)
    noise = net.draw(ReplicaRandom([5], torch.device("cpu")), points=10)
    z = noise["layer1"]["layer_scale"]  # (1, 10, 1)
    assert set(z.unique().tolist()) == {0.0, 2.0}
    W = {k: v.detach() for k, v in net.weights.items()}
    h1 = torch.relu(X @ W["layer0"])
    h2 = h1 + z * torch.relu(h1 @ W["layer1"])
    torch.testing.assert_close(net.forward(X, noise).detach(), h2 @ W["output"])


@pytest.mark.parametrize("noise", list(NOISES))
def test_noise_is_divided_by_its_mean_where_that_is_finite(noise):
    model = bnn_priors.noise_model(noise, **NOISES[noise])
    rng = ReplicaRandom([11], torch.device("cpu"))
    normalized = draw_noise(bnn_priors.prior(model, "ard"), 200, 1, rng, torch.float64, 1000)["unit_scale"]
    raw = model.sample(ReplicaRandom([11], torch.device("cpu")), (1000, 200), torch.float64)
    if noise == "half-cauchy":  # infinite mean: used as is
        torch.testing.assert_close(normalized, raw, rtol=0, atol=0)
        return
    torch.testing.assert_close(normalized, raw / model.mean, rtol=0, atol=0)
    assert float(normalized.mean()) == pytest.approx(1.0, abs=0.01)


def test_keep_probability():
    assert keep_probability(bnn_priors.prior("bernoulli", "ard", p=0.25)) == 0.75
    assert keep_probability(bnn_priors.prior("bernoulli", "ard-add", p=0.25)) == 0.75**2
    assert keep_probability(bnn_priors.prior("rayleigh", "ard")) == 1.0
    assert keep_probability(NORMAL) == 1.0


# ------------------------------------------------------- replicas and seeding
def test_batched_replicas_equal_single_fits():
    X, y = gap_data(2)
    pr = bnn_priors.prior("inverse-nakagami", "ard-add", shape=3.0)
    backend = dict(epochs=8, batch_size=32, lr=1e-2, num_particles=2, progress=False)
    batched = MCDropout(seed=[3, 7], **backend).fit(mlp(pr, replicas=2), X, y)
    for r, seed in enumerate((3, 7)):
        single = MCDropout(seed=seed, **backend).fit(mlp(pr), X, y)
        np.testing.assert_allclose(batched.predict(GAP, 20).samples[:, r], single.predict(GAP, 20).samples, atol=1e-5)
        assert batched.info["precision"][r] == pytest.approx(single.info["precision"], rel=1e-5)
        np.testing.assert_allclose(batched.weight_means()["output"][r], single.weight_means()["output"], atol=1e-5)


def test_fast_batched_replicas_equal_single_fits(monkeypatch):
    """``fast=True``: a replica in a batch is still the replica alone, also when its Bernoulli gap
    draws run short (forced here) and it draws more from its own stream."""
    monkeypatch.setattr(bnn_priors.noise_models, "GAP_DRAW_SDS", -4.0)
    X, y = gap_data(2)
    pr = bnn_priors.prior("bernoulli", "ard-add", p=0.2)
    backend = dict(epochs=8, batch_size=32, lr=1e-2, num_particles=2, fast=True, progress=False)
    batched = MCDropout(seed=[3, 7, 9], **backend).fit(mlp(pr, replicas=3), X, y)
    for r, seed in enumerate((3, 7, 9)):
        single = MCDropout(seed=seed, **backend).fit(mlp(pr), X, y)
        np.testing.assert_allclose(batched.predict(GAP, 20).samples[:, r], single.predict(GAP, 20).samples, atol=1e-5)
        assert batched.info["precision"][r] == pytest.approx(single.info["precision"], rel=1e-5)


@pytest.mark.parametrize("fast", [False, True])
def test_replicas_with_noise_of_their_own_equal_single_fits(fast):
    """``noise_params``: each replica fits as it fits alone with its noise model as the prior's, the
    keep probability of Gal's weight decay included (no ``weight_decay`` given here)."""
    X, y = gap_data(3)
    ps = [0.05, 0.3, 0.05, 0.15]
    backend = dict(epochs=6, batch_size=32, lr=1e-2, fast=fast, progress=False)
    batched = MCDropout(seed=[3, 7, 9, 11], noise_params={"p": ps}, **backend).fit(
        mlp(bnn_priors.prior("bernoulli", "ard", p=0.5), replicas=4), X, y)
    assert batched.info["noise_params"] == {"p": ps}
    assert batched.info["noise_mean"]["layer1"] == pytest.approx([1 - p for p in ps])
    assert batched.info["keep_probability"]["layer1"] == pytest.approx([1 - p for p in ps])
    for r, (seed, p) in enumerate(zip((3, 7, 9, 11), ps)):
        single = MCDropout(seed=seed, **backend).fit(mlp(bnn_priors.prior("bernoulli", "ard", p=p)), X, y)
        np.testing.assert_allclose(batched.weight_means()["layer1"][r],
                                   single.weight_means()["layer1"], atol=1e-5)
        np.testing.assert_allclose(batched.predict(GAP, 20).samples[:, r], single.predict(GAP, 20).samples, atol=1e-5)
        assert batched.info["precision"][r] == pytest.approx(single.info["precision"], rel=1e-5)
        assert batched.info["weight_decay"]["layer1"][r] == pytest.approx(single.info["weight_decay"]["layer1"], rel=1e-5)


@pytest.mark.parametrize("structure", ["ard", "ard-add"])
@pytest.mark.parametrize("lead", [(), (2,)])
@pytest.mark.parametrize("short", [False, True])
def test_grouped_fast_bernoulli_draws_are_each_groups_own(monkeypatch, structure, lead, short):
    """``fast`` masks of several dropout rates come from one buffer (``Bernoulli.sample_fast_groups``):
    the same numbers as each group drawn alone from its streams and put in place, also when the
    gap draws run short (forced) and with a group of p = 0."""
    from inference.mc_dropout import NoiseGroup, draw_grouped_noise

    if short:
        monkeypatch.setattr(bnn_priors.noise_models, "GAP_DRAW_SDS", -4.0)
    prior = bnn_priors.prior("bernoulli", structure, p=0.1)
    rates = [0.05, 0.3, 0.0, 0.05, 0.3, 0.3]
    streams = {p: [r for r, q in enumerate(rates) if q == p] for p in (0.05, 0.3, 0.0)}
    groups = [NoiseGroup(type(prior.noise)(p=p), tuple(rs), torch.tensor(rs)) for p, rs in streams.items()]
    seeds = [11, 12, 13, 14, 15, 16]
    one = ReplicaRandom(seeds, torch.device("cpu"))
    each = ReplicaRandom(seeds, torch.device("cpu"))
    for _ in range(3):  # the streams advance alike
        got = draw_grouped_noise(prior, groups, 7, 5, one, torch.float32, 9, lead, fast=True)
        want = {}
        for g in groups:
            alone = draw_noise(prior, 7, 5, each.subset(g.streams), torch.float32, 9, lead, True, g.noise)
            for kind, t in alone.items():
                want.setdefault(kind, torch.empty_like(got[kind])).index_copy_(len(lead), g.index, t)
        assert got.keys() == want.keys()
        for kind in got:
            assert torch.equal(got[kind], want[kind]), kind
        assert float(got["unit_scale"].select(len(lead), 2).min()) == 1.0  # p = 0: nothing dropped


def test_noise_groups_must_hold_every_stream_once():
    from bnn_priors.noise_models import Bernoulli, NoiseGroupDraw

    source = ReplicaRandom([1, 2, 3], torch.device("cpu"))
    for streams in ([(0, 1)], [(0, 1), (1, 2)]):
        with pytest.raises(InvalidParameterError, match="each of the source's 3 streams exactly once"):
            Bernoulli.sample_fast_groups(source, (4,), torch.float32, 0,
                                         [NoiseGroupDraw(Bernoulli(p=0.1), s) for s in streams])


def test_one_noise_for_all_replicas_replaces_the_priors():
    X, y = gap_data(1)
    backend = dict(epochs=3, batch_size=32, seed=[4, 5], fast=True, progress=False)
    given = MCDropout(noise_params={"p": 0.3}, **backend).fit(mlp(bnn_priors.prior("bernoulli", "ard", p=0.1), replicas=2), X, y)
    prior = MCDropout(**backend).fit(mlp(bnn_priors.prior("bernoulli", "ard", p=0.3), replicas=2), X, y)
    assert given.info["loss_history"] == prior.info["loss_history"]
    assert given.info["noise_params"] == {"p": [0.3, 0.3]} and given.info["keep_probability"]["layer1"] == [0.7, 0.7]


def test_noise_params_set_each_replicas_noise_in_predictions_too():
    """Replica 0 without dropout (p = 0) predicts one function; replica 1 (p = 0.5) varies between passes."""
    X, y = gap_data(0)
    post = MCDropout(epochs=2, seed=[1, 2], noise_params={"p": [0.0, 0.5]}, progress=False).fit(
        mlp(bnn_priors.prior("bernoulli", "ard", p=0.1), replicas=2), X, y)
    samples = post.predict(GAP, 30).samples  # (S, R, N)
    assert float(np.ptp(samples[:, 0], axis=0).max()) == 0.0
    assert float(samples[:, 1].std(0).mean()) > 0.02


@pytest.mark.parametrize(
    "noise_params, match",
    [({"alpha": 0.1}, "'alpha', which the bernoulli noise of layer1 does not have; its parameters are: p"),
     ({"p": [0.1, 0.2, 0.3]}, "has 3 values for a model with 2 replicas"),
     ({"p": [0.1, 1.5]}, "replica 1: bernoulli parameter 'p' must be in \\[0, 1\\), got 1.5")],
)
def test_noise_params_that_do_not_fit_the_model_are_refused(noise_params, match):
    X, y = gap_data(0)
    with pytest.raises(InvalidParameterError, match=match):
        MCDropout(epochs=1, noise_params=noise_params, progress=False).fit(
            mlp(bnn_priors.prior("bernoulli", "ard"), replicas=2), X, y)


def test_noise_params_on_a_model_without_noise_are_refused():
    X, y = gap_data(0)
    with pytest.raises(InvalidParameterError, match="no layer of the model has noise"):
        MCDropout(epochs=1, noise_params={"p": 0.1}, progress=False).fit(mlp(NORMAL), X, y)


def test_fast_changes_the_stream_not_the_model():
    """``fast=True`` draws other masks and rounds otherwise: other numbers than the default for the
    same seeds, the same seeds twice give the same fit, and eight seeds of each learn alike (mean
    test RMSE about 0.12 either way, with a standard error near 0.005 each; the bar is 0.03)."""
    X, y = gap_data(0)
    Xt, yt = gap_data(10, 200)
    pr = bnn_priors.prior("bernoulli", "ard", p=0.1)
    seeds = list(range(8))

    def fit(fast):
        model = mlp(pr, GaussianLikelihood(precision=100.0), replicas=len(seeds))
        return MCDropout(epochs=60, batch_size=32, lr=1e-2, seed=seeds, fast=fast, progress=False).fit(model, X, y)

    ref, fast, again = fit(False), fit(True), fit(True)
    assert fast.info["loss_history"] == again.info["loss_history"]
    assert fast.info["loss_history"] != ref.info["loss_history"]
    rmse = [np.asarray(p.evaluate(Xt, yt, num_samples=200)["rmse"]) for p in (ref, fast)]
    assert max(r.mean() for r in rmse) < 0.3 * float(np.sqrt((yt**2).mean()))
    assert abs(rmse[0].mean() - rmse[1].mean()) < 0.03


def test_compiled_steps_give_the_eager_fit_to_rounding():
    """``compile=True`` (inductor): the same objective and gradient, fused; over a short fit the loss
    history stays within float rounding's drift of the eager one, and the same seed repeats."""
    X, y = gap_data(0)
    pr = bnn_priors.prior("bernoulli", "ard", p=0.1)

    def fit(compile):
        model = mlp(pr, GaussianLikelihood(precision=100.0), replicas=2)
        return MCDropout(epochs=3, batch_size=32, lr=1e-2, seed=[1, 2], fast=True, compile=compile,
                         progress=False).fit(model, X, y)

    eager, compiled, again = fit(False), fit(True), fit(True)
    assert compiled.info["compile"] and not eager.info["compile"]
    np.testing.assert_allclose(compiled.info["loss_history"], eager.info["loss_history"], rtol=1e-4)
    assert compiled.info["loss_history"] == again.info["loss_history"]


def test_a_compiler_failure_gives_a_warning_and_the_eager_fit(monkeypatch):
    X, y = gap_data(0)
    pr = bnn_priors.prior("bernoulli", "ard", p=0.1)
    eager = MCDropout(epochs=2, batch_size=32, seed=3, progress=False).fit(mlp(pr), X, y)

    def broken(*args, **kwargs):
        raise RuntimeError("inductor is not available")

    monkeypatch.setattr(torch, "compile", broken)
    with pytest.warns(RuntimeWarning, match=r"MCDropout\(compile=True\): compiling failed"):
        fallen = MCDropout(epochs=2, batch_size=32, seed=3, compile=True, progress=False).fit(mlp(pr), X, y)
    assert not fallen.info["compile"]
    assert fallen.info["loss_history"] == eager.info["loss_history"]


@pytest.mark.parametrize("out", [1, 3])
@pytest.mark.parametrize("lead", [(), (2,)])
def test_fast_noisy_linear_is_the_same_sum(out, lead):
    g = torch.Generator().manual_seed(0)
    R, B, n_in = 3, 5, 4
    h = torch.randn(*lead, R, B, n_in, generator=g)
    M, b = torch.randn(R, n_in, out, generator=g), torch.randn(R, out, generator=g)
    noise = {"unit_scale": torch.rand(*lead, R, B, n_in, generator=g), "layer_scale": torch.rand(*lead, R, B, 1, generator=g),
             "weight_scale": torch.rand(R, n_in, out, generator=g)}
    torch.testing.assert_close(noisy_linear(h, M, b, noise, fast=True), noisy_linear(h, M, b, noise))
    assert noisy_linear(h, M, b, noise, fast=True).shape == (*lead, R, B, out)


def test_same_seed_same_predictions():
    X, y = gap_data(0)
    pr = bnn_priors.prior("gaussian", "none", alpha=0.2)

    def fit(seed):
        return MCDropout(epochs=3, batch_size=32, seed=seed, progress=False).fit(mlp(pr), X, y)

    a, b, c = fit(5), fit(5), fit(6)
    np.testing.assert_array_equal(a.predict(GAP, 10).samples, b.predict(GAP, 10).samples)
    assert not np.allclose(a.predict(GAP, 10).samples, c.predict(GAP, 10).samples)
    # Prediction passes are function samples: one noise draw shared by all points of a pass.
    f = a.predict(np.zeros((4, 1), np.float32), 10).samples
    np.testing.assert_array_equal(f, np.repeat(f[:, :1], 4, axis=1))


# ---------------------------------------------------------- refusals and errors
def test_log_uniform_prior_is_refused():
    model = BayesianMLP(1, 1, hidden=(8,), prior=bnn_priors.prior("log-uniform"))
    backend = MCDropout(progress=False)
    assert not backend.supports(model)
    with pytest.raises(UnsupportedCombinationError, match="variational-dropout") as err:
        backend.fit(model, *gap_data(0))
    assert "log-uniform" in str(err.value) and "cannot be drawn" in str(err.value)


def test_divergence_names_the_step_and_a_hint():
    X, y = gap_data(0)
    model = mlp(bnn_priors.prior("gaussian", "ard"), GaussianLikelihood(precision=100.0))
    with pytest.raises(FitDivergedError, match=r"at step \d+.*lower lr"):
        MCDropout(epochs=3, batch_size=32, lr=1e30, progress=False).fit(model, X, y)


def test_divergence_names_the_replica_that_diverged():
    """A weight decay that overflows the loss of replica 1 only: the error names replica 1 alone (the
    replicas' fits are independent; the runner trains the others again without it)."""
    X, y = gap_data(0)
    model = mlp(bnn_priors.prior("bernoulli", "ard"), GaussianLikelihood(precision=100.0), replicas=3)
    with pytest.raises(FitDivergedError, match=r"at step 0 \(replica 1\)") as caught:
        MCDropout(epochs=2, batch_size=32, weight_decay=[1e-4, 1e38, 1e-4], progress=False).fit(model, X, y)
    assert caught.value.replicas == (1,)


@pytest.mark.parametrize(
    "options",
    [{"epochs": 0}, {"batch_size": -1}, {"lr": 0.0}, {"length_scale": -1.0}, {"weight_decay": -1e-3},
     {"precision": float("nan")}, {"num_particles": 1.5}, {"fast": "yes"}, {"fast": 1}, {"compile": "true"},
     {"noise_params": 0.1}, {"noise_params": {}}, {"noise_params": {"p": "x"}}, {"noise_params": {"p": []}},
     {"noise_params": {"p": [0.1, True]}}, {"noise_params": {"p": "0.1"}}],
)
def test_invalid_options(options):
    with pytest.raises(InvalidParameterError):
        MCDropout(**options)


def test_posterior_interface():
    X, y = gap_data(0)
    model = BayesianMLP(1, 2, hidden=(8,), prior=bnn_priors.prior("rayleigh", "ard"), replicas=3)
    Y = np.stack([y, -y], -1)
    post = MCDropout(epochs=2, batch_size=50, progress=False).fit(model, X, Y)
    assert post.backend == "mc-dropout"
    assert post.weight_means()["layer0"].shape == (3, 1, 8)
    assert post.predict(GAP, 6).samples.shape == (6, 3, 9, 2)
    f, precision = post.sample_functions(GAP, 6)
    assert f.shape == (6, 3, 9, 2) and precision.shape == (6, 3)
    for key in ("steps", "seconds", "steps_per_second", "final_loss", "precision", "weight_decay"):
        assert key in post.info
    assert post.info["steps"] == 2 * math.ceil(120 / 50)
    assert len(post.info["precision"]) == 3 and len(post.info["weight_decay"]["output"]) == 3
