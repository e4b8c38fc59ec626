"""Tests of the five noise models (``bnn_priors.noise_model``) and their distributions.

Lookup by name, parameter validation, defaults, and the consistency of ``noise()``,
``variance_prior()``, ``marginal()`` and ``second_moment`` with each other and with
scipy; what the backends ask of a noise model (its sampler, ``mean``, the closed-form
scale updates); and a noise model defined here, outside the package, fitted by the
backends as they are. Statistical tests use a fixed seed (``BNN_PRIORS_TEST_SEED``
overrides it, to check that they are not flaky) and sample sizes chosen so that a
wrong parameter by a few per cent is rejected.
"""

from __future__ import annotations

import math
import os
import pickle

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from scipy import stats
from scipy.optimize import minimize_scalar

import bnn_priors
from bnn_priors import (
    NOISE_MODELS,
    BNNPriorsError,
    InvalidParameterError,
    NoiseModel,
    UnknownNameError,
    UnsupportedCombinationError,
    noise_model,
)
from bnn_priors.distributions import InverseNakagami as InverseNakagamiDist
from bnn_priors.distributions import Rayleigh as RayleighDist
from bnn_priors.noise_models import Parameter
from bnn_priors.random_source import RandomSource
from inference import NUTS, SVI, MCDropout
from inference.common import ReplicaRandom
from models import BayesianMLP, GaussianLikelihood

SEED = int(os.environ.get("BNN_PRIORS_TEST_SEED", "20190"))
NAMES = ("bernoulli", "gaussian", "rayleigh", "inverse-nakagami", "half-cauchy")
N = 40_000  # draws per one-sample KS test
PASS, FAIL = 1e-3, 1e-6  # KS p-value thresholds: the right law passes, a wrong one fails

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(autouse=True)
def _seed():
    pyro.set_rng_seed(SEED)  # seeds torch, numpy and random


def _np(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().to(torch.float64).numpy().ravel()


# --------------------------------------------------------------------------- lookup


def test_registry_holds_the_five_models():
    assert set(NOISE_MODELS) == set(NAMES)
    assert bnn_priors.NOISE_MODELS is NOISE_MODELS
    for name in NAMES:
        model = noise_model(name)
        assert isinstance(model, NoiseModel)
        assert type(model) is NOISE_MODELS[name]
        assert model.name == name


@pytest.mark.parametrize(
    "spelling, name",
    [
        ("Rayleigh", "rayleigh"),
        (" half_cauchy ", "half-cauchy"),
        ("INVERSE_NAKAGAMI", "inverse-nakagami"),
        ("Gaussian", "gaussian"),
    ],
)
def test_lookup_normalises_case_spaces_and_underscores(spelling, name):
    assert noise_model(spelling).name == name


def test_lookup_passes_an_instance_through():
    model = noise_model("rayleigh", scale=2.0)
    assert noise_model(model) is model
    with pytest.raises(InvalidParameterError, match="not both"):
        noise_model(model, scale=3.0)


@pytest.mark.parametrize("bad", ["dropconnect", "laplace", "", "rayleigh2"])
def test_unknown_name_lists_the_valid_choices(bad):
    with pytest.raises(ValueError) as excinfo:
        noise_model(bad)
    err = excinfo.value
    assert isinstance(err, UnknownNameError) and isinstance(err, BNNPriorsError)
    message = str(err)
    assert repr(bad) in message
    for name in NAMES:
        assert name in message
    assert err.choices == sorted(NAMES)


# --------------------------------------------------------------------------- parameters


@pytest.mark.parametrize(
    "name, key, value, valid",
    [
        ("bernoulli", "p", 1.0, "in [0, 1)"),
        ("bernoulli", "p", -0.01, "in [0, 1)"),
        ("bernoulli", "p", math.nan, "in [0, 1)"),
        ("gaussian", "alpha", 0.0, "> 0"),
        ("gaussian", "alpha", -1.0, "> 0"),
        ("gaussian", "alpha", math.inf, "> 0"),
        ("rayleigh", "scale", 0.0, "> 0"),
        ("rayleigh", "scale", math.nan, "> 0"),
        ("inverse-nakagami", "shape", -2.0, "> 0"),
        ("inverse-nakagami", "spread", 0.0, "> 0"),
        ("half-cauchy", "scale", -1e-3, "> 0"),
        ("half-cauchy", "scale", -math.inf, "> 0"),
    ],
)
def test_invalid_value_raises_with_the_valid_range(name, key, value, valid):
    with pytest.raises(ValueError) as excinfo:
        noise_model(name, **{key: value})
    assert isinstance(excinfo.value, InvalidParameterError)
    message = str(excinfo.value)
    assert repr(key) in message
    assert valid in message


@pytest.mark.parametrize(
    "name, params",
    [
        ("bernoulli", {"p": 0.0}),
        ("bernoulli", {"p": 0.999}),
        ("gaussian", {"alpha": 1e-6}),
        ("inverse-nakagami", {"shape": 0.5, "spread": 30.0}),
        ("rayleigh", {"scale": "0.5"}),  # numeric strings are numbers (command line)
    ],
)
def test_values_at_the_edge_of_the_range_are_accepted(name, params):
    model = noise_model(name, **params)
    for key, value in params.items():
        assert getattr(model, key) == float(value)


@pytest.mark.parametrize(
    "name, key, listed",
    [
        ("rayleigh", "sigma", ["scale"]),
        ("inverse-nakagami", "m", ["shape", "spread"]),
        ("bernoulli", "alpha", ["p"]),
        ("half-cauchy", "tau", ["scale"]),
    ],
)
def test_unknown_parameter_lists_the_valid_parameters(name, key, listed):
    with pytest.raises(InvalidParameterError) as excinfo:
        noise_model(name, **{key: 1.0})
    message = str(excinfo.value)
    assert key in message
    assert all(param in message for param in listed)


@pytest.mark.parametrize("value", ["abc", None, [0.5], object(), 1j])
def test_non_number_raises(value):
    with pytest.raises(ValueError, match="must be a number"):
        noise_model("rayleigh", scale=value)


DEFAULTS = {
    "bernoulli": {"p": 0.1},
    "gaussian": {"alpha": 0.25},
    "rayleigh": {"scale": math.sqrt(0.5)},
    "inverse-nakagami": {"shape": 2.0, "spread": 1.0},
    "half-cauchy": {"scale": 1.0},
}


@pytest.mark.parametrize("name", NAMES)
def test_defaults(name):
    model = noise_model(name)
    assert model.params == pytest.approx(DEFAULTS[name], rel=1e-12)
    assert set(model.parameters) == set(DEFAULTS[name])
    for key, value in DEFAULTS[name].items():
        assert getattr(model, key) == pytest.approx(value, rel=1e-12)
        assert model.parameters[key].default == pytest.approx(value, rel=1e-12)
    with pytest.raises(AttributeError):
        model.no_such_parameter  # noqa: B018


def test_equality_hash_repr_and_pickle():
    a = noise_model("inverse-nakagami", shape=3.0)
    b = noise_model("inverse_nakagami", shape=3, spread=1.0)
    assert a == b and hash(a) == hash(b)
    assert a != noise_model("inverse-nakagami", shape=3.5)
    assert noise_model("rayleigh", scale=1.0) != noise_model("half-cauchy", scale=1.0)
    assert repr(a) == "InverseNakagami(shape=3, spread=1)"
    for name in NAMES:
        model = noise_model(name)
        clone = pickle.loads(pickle.dumps(model))
        assert clone == model and clone.params == model.params


# --------------------------------------------------------------------------- kind of noise


@pytest.mark.parametrize("name", NAMES)
def test_discrete_only_for_bernoulli(name):
    model = noise_model(name)
    assert model.discrete is (name == "bernoulli")
    assert model.has_atom_at_zero is (name == "bernoulli")
    if name != "bernoulli":
        assert model.noise().has_rsample


@pytest.mark.parametrize("name", NAMES)
def test_samples_lie_in_the_support(name):
    model = noise_model(name)
    lam = model.noise().sample((2000,))
    assert bool(model.support.check(lam).all())
    if name == "bernoulli":
        assert set(lam.unique().tolist()) == {0.0, 1.0}
    elif name == "gaussian":
        assert bool((lam < 0).any())  # Gaussian dropout noise can flip signs
    else:
        assert bool((lam > 0).all())


# --------------------------------------------------------------------------- p(lambda)

# (name, params, transform of the samples, the scipy law of the transformed samples,
#  a slightly wrong law that must be rejected)
NOISE_LAWS = [
    ("rayleigh", {"scale": 1.7}, None, stats.rayleigh(scale=1.7), stats.rayleigh(scale=1.7 * 1.05)),
    (
        "half-cauchy",
        {"scale": 0.6},
        None,
        stats.halfcauchy(scale=0.6),
        stats.halfcauchy(scale=0.6 * 1.08),
    ),
    ("gaussian", {"alpha": 0.3}, None, stats.norm(1.0, math.sqrt(0.3)), stats.norm(1.0, 0.3)),
    # 1 / lambda is Nakagami(m, Omega); scipy's nakagami(nu, scale) has E[X^2] = scale^2.
    (
        "inverse-nakagami",
        {"shape": 1.5, "spread": 2.5},
        np.reciprocal,
        stats.nakagami(1.5, scale=math.sqrt(2.5)),
        stats.nakagami(1.5 * 1.15, scale=math.sqrt(2.5)),
    ),
]


@pytest.mark.parametrize(
    "name, params, transform, law, wrong", NOISE_LAWS, ids=[c[0] for c in NOISE_LAWS]
)
def test_noise_matches_scipy(name, params, transform, law, wrong):
    lam = _np(noise_model(name, **params).noise().sample((N,)))
    x = transform(lam) if transform else lam
    assert stats.kstest(x, law.cdf).pvalue > PASS
    assert stats.kstest(x, wrong.cdf).pvalue < FAIL


def test_bernoulli_noise_keeps_units_with_probability_one_minus_p():
    p = 0.3
    lam = _np(noise_model("bernoulli", p=p).noise().sample((N,)))
    dropped = np.mean(lam == 0.0)
    assert abs(dropped - p) < 5 * math.sqrt(p * (1 - p) / N)


# --------------------------------------------------------------------------- p(lambda^2)

# (name, params, scipy law of lambda^2)
VARIANCE_LAWS = [
    # lambda ~ Rayleigh(s): lambda^2 ~ Exponential(rate 1 / (2 s^2)), i.e. mean 2 s^2.
    ("rayleigh", {"scale": 1.3}, stats.expon(scale=2 * 1.3**2)),
    # lambda ~ InverseNakagami(m, Omega): lambda^2 ~ InverseGamma(m, scale m / Omega).
    ("inverse-nakagami", {"shape": 2.5, "spread": 0.7}, stats.invgamma(2.5, scale=2.5 / 0.7)),
    # lambda ~ HalfCauchy(s): lambda^2 / s^2 = (Z1 / Z2)^2 ~ F(1, 1) (not named by the model).
    ("half-cauchy", {"scale": 0.8}, stats.f(1, 1, scale=0.8**2)),
    # lambda ~ N(1, alpha): lambda^2 ~ alpha * chi2_1(noncentrality 1 / alpha).
    ("gaussian", {"alpha": 0.4}, stats.ncx2(1, 1 / 0.4, scale=0.4)),
]


@pytest.mark.parametrize("name, params, law", VARIANCE_LAWS, ids=[c[0] for c in VARIANCE_LAWS])
def test_lambda_squared_follows_the_variance_law(name, params, law):
    model = noise_model(name, **params)
    lam2 = _np(model.noise().sample((N,))) ** 2
    assert stats.kstest(lam2, law.cdf).pvalue > PASS
    # ... and the wrong scale is rejected
    assert stats.kstest(lam2 / 1.25, law.cdf).pvalue < FAIL
    variance_prior = model.variance_prior()
    if variance_prior is not None:
        v = _np(variance_prior.sample((N,)))
        assert stats.kstest(v, law.cdf).pvalue > PASS
        assert stats.ks_2samp(v, lam2).pvalue > PASS


def test_named_variance_priors_have_the_documented_parameters():
    ray = noise_model("rayleigh", scale=1.3).variance_prior()
    assert isinstance(ray, dist.Exponential)
    assert float(ray.rate) == pytest.approx(1 / (2 * 1.3**2), rel=1e-6)
    inv = noise_model("inverse-nakagami", shape=2.5, spread=0.7).variance_prior()
    assert isinstance(inv, dist.InverseGamma)
    assert float(inv.concentration) == pytest.approx(2.5, rel=1e-6)
    assert float(inv.rate) == pytest.approx(
        2.5 / 0.7, rel=1e-6
    )  # InverseGamma's "rate" is its scale
    ber = noise_model("bernoulli", p=0.3).variance_prior()
    assert isinstance(ber, dist.Bernoulli)
    assert float(ber.probs) == pytest.approx(0.7, rel=1e-6)  # lambda^2 = lambda
    assert noise_model("gaussian").variance_prior() is None
    assert noise_model("half-cauchy").variance_prior() is None


# --------------------------------------------------------------------------- densities

POINTS = np.array([0.02, 0.1, 0.5, 1.0, 1.7, 3.0, 8.0])


@pytest.mark.parametrize("scale", [0.4, 1.0, 2.3])
def test_rayleigh_log_prob_matches_scipy(scale):
    x = torch.tensor(POINTS, dtype=torch.float64)
    expected = stats.rayleigh(scale=scale).logpdf(POINTS)
    got = RayleighDist(torch.tensor(scale, dtype=torch.float64)).log_prob(x)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10, atol=1e-12)
    via_model = noise_model("rayleigh", scale=scale).noise(dtype=torch.float64).log_prob(x)
    np.testing.assert_allclose(via_model.numpy(), expected, rtol=1e-10, atol=1e-12)
    # float32 parameters, float32 points: same to single precision
    got32 = RayleighDist(scale).log_prob(x.float())
    np.testing.assert_allclose(got32.numpy(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape, spread", [(0.7, 1.0), (2.0, 1.0), (4.5, 0.3)])
def test_inverse_nakagami_log_prob_matches_scipy(shape, spread):
    x = torch.tensor(POINTS, dtype=torch.float64)
    # density of lambda = sqrt(V), V ~ InvGamma(m, scale m / Omega): p(y) = p_V(y^2) * 2y
    expected = stats.invgamma(shape, scale=shape / spread).logpdf(POINTS**2) + np.log(2 * POINTS)
    # ... which is the density of 1 / X, X ~ Nakagami(m, Omega): p(y) = p_X(1 / y) / y^2
    nakagami = stats.nakagami(shape, scale=math.sqrt(spread)).logpdf(1 / POINTS) - 2 * np.log(
        POINTS
    )
    np.testing.assert_allclose(nakagami, expected, rtol=1e-9)
    t = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    got = InverseNakagamiDist(t(shape), t(spread)).log_prob(x)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10, atol=1e-10)
    model = noise_model("inverse-nakagami", shape=shape, spread=spread)
    via_model = model.noise(dtype=torch.float64).log_prob(x)
    np.testing.assert_allclose(via_model.numpy(), expected, rtol=1e-10, atol=1e-10)


def test_rayleigh_distribution_moments_cdf_and_expand():
    d = RayleighDist(torch.tensor(1.3, dtype=torch.float64))
    law = stats.rayleigh(scale=1.3)
    assert float(d.mean) == pytest.approx(law.mean(), rel=1e-12)
    assert float(d.variance) == pytest.approx(law.var(), rel=1e-12)
    x = torch.tensor(POINTS, dtype=torch.float64)
    np.testing.assert_allclose(d.cdf(x).numpy(), law.cdf(POINTS), rtol=1e-10)
    e = d.expand((3, 2))
    assert e.batch_shape == (3, 2) and e.scale.shape == (3, 2)
    assert e.sample((5,)).shape == (5, 3, 2)
    assert e.log_prob(torch.ones(3, 2, dtype=torch.float64)).shape == (3, 2)


def test_inverse_nakagami_distribution_broadcasts_and_expands():
    d = InverseNakagamiDist(torch.tensor([1.0, 2.0, 3.0]), 2.0)
    assert d.batch_shape == (3,) and d.m.shape == d.spread.shape == (3,)
    e = InverseNakagamiDist(2.0, 1.0).expand((4, 3))
    assert e.batch_shape == (4, 3) and e.m.shape == (4, 3)
    assert e.sample((2,)).shape == (2, 4, 3)


def test_rsample_is_reparameterized():
    # Rayleigh samples are scale * (a draw of the unit Rayleigh): d lambda / d scale = lambda / scale.
    scale = torch.tensor(1.7, dtype=torch.float64, requires_grad=True)
    lam = RayleighDist(scale).rsample((1000,))
    lam.sum().backward()
    assert float(scale.grad) == pytest.approx(float(lam.detach().sum()) / 1.7, rel=1e-8)
    # Inverse Nakagami samples scale as spread^(-1/2): d lambda / d spread = -lambda / (2 spread).
    spread = torch.tensor(2.5, dtype=torch.float64, requires_grad=True)
    lam = InverseNakagamiDist(torch.tensor(3.0, dtype=torch.float64), spread).rsample((1000,))
    lam.sum().backward()
    assert float(spread.grad) == pytest.approx(-float(lam.detach().sum()) / (2 * 2.5), rel=1e-8)


# --------------------------------------------------------------------------- E[lambda^2]

# (name, params, exact E[lambda^2] from scipy or by hand)
MOMENTS = [
    ("bernoulli", {"p": 0.3}, 0.7),
    ("gaussian", {"alpha": 0.5}, stats.norm(1.0, math.sqrt(0.5)).moment(2)),
    ("rayleigh", {"scale": 1.3}, stats.rayleigh(scale=1.3).moment(2)),
    # shape > 2 so that lambda^2 has a finite variance and the sample mean a normal error.
    (
        "inverse-nakagami",
        {"shape": 5.0, "spread": 2.0},
        stats.invgamma(5.0, scale=5.0 / 2.0).mean(),
    ),
]


@pytest.mark.parametrize("name, params, exact", MOMENTS, ids=[c[0] for c in MOMENTS])
def test_second_moment_matches_scipy_and_sample_mean(name, params, exact):
    model = noise_model(name, **params)
    assert model.second_moment == pytest.approx(exact, rel=1e-9)
    n = 200_000
    lam2 = _np(model.noise(dtype=torch.float64).sample((n,))) ** 2
    se = lam2.std() / math.sqrt(n)
    assert abs(lam2.mean() - model.second_moment) < 5 * se


@pytest.mark.parametrize("name", ["bernoulli", "gaussian", "rayleigh"])
def test_second_moment_agrees_with_the_distribution_mean_and_variance(name):
    model = noise_model(name)
    generic = NoiseModel.second_moment.fget(model)  # variance + mean^2 of noise()
    assert generic == pytest.approx(model.second_moment, rel=1e-6)


@pytest.mark.parametrize(
    "name, params",
    [
        ("half-cauchy", {}),
        ("half-cauchy", {"scale": 0.01}),
        ("inverse-nakagami", {"shape": 1.0}),
        ("inverse-nakagami", {"shape": 0.5}),
    ],
)
def test_second_moment_is_infinite_where_it_does_not_exist(name, params):
    assert noise_model(name, **params).second_moment == math.inf


def test_inverse_nakagami_second_moment_just_above_one_is_finite():
    assert noise_model("inverse-nakagami", shape=1.25, spread=0.5).second_moment == pytest.approx(
        (1.25 / 0.5) / 0.25
    )


# --------------------------------------------------------------------------- p(w)


def test_rayleigh_marginal_is_the_laplace_of_lambda_times_z():
    scale, sigma0 = 1.3, 0.6
    model = noise_model("rayleigh", scale=scale)
    marginal = model.marginal(sigma0)
    assert isinstance(marginal, dist.Laplace)
    assert float(marginal.loc) == 0.0
    assert float(marginal.scale) == pytest.approx(scale * sigma0, rel=1e-6)
    w = _np(model.noise().sample((N,)) * sigma0 * torch.randn(N))
    law = stats.laplace(loc=float(marginal.loc), scale=float(marginal.scale))
    assert stats.kstest(w, law.cdf).pvalue > PASS
    assert stats.kstest(w, stats.laplace(scale=1.15 * scale * sigma0).cdf).pvalue < FAIL
    assert stats.ks_2samp(w, _np(marginal.sample((N,)))).pvalue > PASS
    x = torch.tensor([-2.0, -0.1, 0.0, 0.3, 4.0])
    np.testing.assert_allclose(marginal.log_prob(x).numpy(), law.logpdf(x.numpy()), rtol=1e-5)


def test_inverse_nakagami_marginal_is_the_student_t_of_lambda_times_z():
    shape, spread, sigma0 = 1.5, 2.0, 0.8
    model = noise_model("inverse-nakagami", shape=shape, spread=spread)
    marginal = model.marginal(sigma0)
    assert isinstance(marginal, dist.StudentT)
    assert float(marginal.df) == pytest.approx(2 * shape)
    assert float(marginal.loc) == 0.0
    assert float(marginal.scale) == pytest.approx(sigma0 / math.sqrt(spread), rel=1e-6)
    w = _np(model.noise().sample((N,)) * sigma0 * torch.randn(N))
    law = stats.t(df=float(marginal.df), scale=float(marginal.scale))
    assert stats.kstest(w, law.cdf).pvalue > PASS
    assert stats.kstest(w, stats.t(df=2 * shape + 2, scale=float(marginal.scale)).cdf).pvalue < FAIL
    assert stats.ks_2samp(w, _np(marginal.sample((N,)))).pvalue > PASS


def test_bernoulli_marginal_is_spike_and_slab():
    p, sigma0 = 0.3, 0.7
    model = noise_model("bernoulli", p=p)
    marginal = model.marginal(sigma0)
    assert isinstance(marginal, dist.MixtureSameFamily)
    np.testing.assert_allclose(marginal.mixture_distribution.probs.numpy(), [p, 1 - p], rtol=1e-6)
    w = _np(marginal.sample((N,)))
    spike = np.abs(w) < 1e-6
    assert abs(spike.mean() - p) < 5 * math.sqrt(p * (1 - p) / N)
    assert stats.kstest(w[~spike], stats.norm(scale=sigma0).cdf).pvalue > PASS
    # lambda * z has the same law
    wz = _np(model.noise().sample((N,)) * sigma0 * torch.randn(N))
    assert abs(np.mean(wz == 0.0) - p) < 5 * math.sqrt(p * (1 - p) / N)
    assert stats.ks_2samp(w[~spike], wz[wz != 0.0]).pvalue > PASS


@pytest.mark.parametrize("name", ["gaussian", "half-cauchy"])
def test_no_closed_form_marginal(name):
    assert noise_model(name).marginal(1.0) is None


# --------------------------------------------------------------------------- the sampler


def _source(*seeds: int) -> ReplicaRandom:
    return ReplicaRandom(list(seeds) or [SEED], torch.device("cpu"))


def test_replica_random_is_a_random_source():
    assert isinstance(_source(), RandomSource)


@pytest.mark.parametrize(
    "name, params, transform, law, wrong", NOISE_LAWS, ids=[c[0] for c in NOISE_LAWS]
)
def test_sampler_follows_the_noise_law(name, params, transform, law, wrong):
    lam = _np(noise_model(name, **params).sample(_source(), (N,), torch.float64))
    x = transform(lam) if transform else lam
    assert stats.kstest(x, law.cdf).pvalue > PASS
    assert stats.kstest(x, wrong.cdf).pvalue < FAIL


def test_bernoulli_sampler_keeps_units_with_probability_one_minus_p():
    p = 0.3
    lam = _np(noise_model("bernoulli", p=p).sample(_source(), (N,), torch.float64))
    assert set(np.unique(lam).tolist()) == {0.0, 1.0}
    assert abs(np.mean(lam == 0.0) - p) < 5 * math.sqrt(p * (1 - p) / N)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("p", [0.05, 0.3, 0.5])
def test_bernoulli_mask_is_the_comparison_of_the_uniforms(dtype, p):
    """The sampler compares the uniforms in place: the mask of ``(u < 1 - p).to(dtype)``, bit for bit,
    also for a uniform equal to ``1 - p`` in the dtype (the comparison's boundary)."""
    lam = noise_model("bernoulli", p=p).sample(_source(1, 2), (4000, 13), dtype)
    u = _source(1, 2).rand((4000, 13), dtype)
    assert lam.dtype == dtype and torch.equal(lam, (u < 1.0 - p).to(dtype))
    boundary = torch.tensor([1.0 - p], dtype=dtype)
    at = torch.cat([boundary, torch.nextafter(boundary, torch.zeros(1, dtype=dtype))])
    assert torch.equal(at.clone().lt_(1.0 - p), (at < 1.0 - p).to(dtype))


@pytest.mark.parametrize("name", NAMES)
def test_sampler_draws_each_replica_from_its_own_stream(name):
    """The stream axis where asked, and replica 1 of a pair gets the numbers it gets alone."""
    model = noise_model(name)
    pair = model.sample(_source(3, 4), (5, 6), torch.float32, axis=1)
    alone = model.sample(_source(4), (5, 6), torch.float32, axis=1)
    assert pair.shape == (5, 2, 6) and pair.dtype == torch.float32
    torch.testing.assert_close(pair[:, 1:], alone, rtol=0, atol=0)


# ------------------------------------------------------------- the fast sampler
def _gaps(trials: np.ndarray, longest: int) -> np.ndarray:
    """From each zero (and from position -1) with room for ``longest`` more trials in its row, the
    distance to the next zero, censored at ``longest + 1``: whether a start counts depends only on
    the past, so each distance up to ``longest`` has exactly its Geometric(p) probability."""
    out = []
    L = trials.shape[1]
    for row in trials:
        zeros = np.flatnonzero(row == 0.0)
        for start in np.concatenate([[-1], zeros]):
            if start + longest < L:
                after = zeros[zeros > start]
                out.append(min(after[0] - start, longest + 1) if after.size else longest + 1)
    return np.asarray(out)


@pytest.mark.parametrize("p", [0.05, 0.3, 0.9])
def test_fast_bernoulli_sampler_follows_the_law_position_by_position(p):
    """Made from geometric gaps, the trials are still i.i.d. Bernoulli: zeros at rate p at every
    position (the first and the last of a stream's sequence included: where an off-by-one of the
    gap construction would show), gaps Geometric(p), neighbours uncorrelated."""
    model = noise_model("bernoulli", p=p)
    streams, shape = 4000, (3, 7)
    lam = model.sample_fast(_source(*(SEED + i for i in range(streams))), shape, torch.float64, 0).numpy()
    assert lam.shape == (streams, *shape) and set(np.unique(lam).tolist()) <= {0.0, 1.0}
    flat = lam.reshape(streams, -1)
    se = math.sqrt(p * (1 - p) / streams)
    rates = (flat == 0.0).mean(0)
    assert np.abs(rates - p).max() < 4.5 * se  # 21 positions, each within 4.5 SE
    assert abs((flat == 0.0).mean() - p) < 5 * se / math.sqrt(flat.shape[1])
    zero = (flat == 0.0).astype(float)
    corr = np.corrcoef(zero[:, :-1].ravel(), zero[:, 1:].ravel())[0, 1]
    assert abs(corr) < 5 / math.sqrt(zero[:, 1:].size)
    gaps = _gaps(flat, 7)
    support = np.arange(1, 8)
    expected = stats.geom(p).pmf(support)
    observed = np.array([(gaps == k).mean() for k in support])
    assert np.abs(observed - expected).max() < 5 * np.sqrt(expected * (1 - expected) / gaps.size).max()


def test_fast_bernoulli_sampler_places_the_stream_axis_and_divides():
    model = noise_model("bernoulli", p=0.2)
    lam = model.sample_fast(_source(1, 2, 3), (4, 5, 6), torch.float32, axis=1, divisor=0.8)
    assert lam.shape == (4, 3, 5, 6) and lam.dtype == torch.float32
    assert set(torch.unique(lam).tolist()) == {0.0, float(torch.tensor(1 / 0.8, dtype=torch.float32))}
    alone = model.sample_fast(_source(2), (4, 5, 6), torch.float32, axis=1, divisor=0.8)
    assert torch.equal(lam[:, 1:2], alone)


def test_fast_bernoulli_sampler_draws_about_p_numbers_per_trial():
    """The point of it: about p L uniforms per stream, not L; the stream moves by exactly that many."""
    model = noise_model("bernoulli", p=0.05)
    source = _source(7)
    model.sample_fast(source, (128, 50), torch.float32)
    used = bnn_priors.noise_models.gap_draws(128 * 50, 0.05)
    assert used < 0.1 * 128 * 50
    after = source.rand((1,), torch.float64)
    fresh = _source(7)
    fresh.rand((used,), torch.float64)
    assert torch.equal(after, fresh.rand((1,), torch.float64))


def test_fast_bernoulli_sampler_draws_more_for_a_short_stream_from_that_stream_alone(monkeypatch):
    """With far too few draws per call every stream runs short, repeatedly: each draws its extra
    numbers from itself, so a stream in a batch still equals the stream alone, and the law holds."""
    monkeypatch.setattr(bnn_priors.noise_models, "GAP_DRAW_SDS", -15.0)
    assert bnn_priors.noise_models.gap_draws(600, 0.3) < 0.2 * 600 * 0.3
    model = noise_model("bernoulli", p=0.3)
    batch = model.sample_fast(_source(*(SEED + r for r in range(500))), (600,), torch.float64)
    for r in (0, 17, 499):
        assert torch.equal(batch[r], model.sample_fast(_source(SEED + r), (600,), torch.float64)[0])
    rate = float((batch == 0).double().mean())
    assert abs(rate - 0.3) < 5 * math.sqrt(0.3 * 0.7 / batch.numel())
    gaps = _gaps(batch.numpy(), 7)  # across the boundaries between a stream's extra draws too
    expected = stats.geom(0.3).pmf(np.arange(1, 8))
    observed = np.array([(gaps == k).mean() for k in range(1, 8)])
    assert np.abs(observed - expected).max() < 5 * np.sqrt(expected * (1 - expected) / gaps.size).max()


def test_fast_bernoulli_sampler_with_p_zero_keeps_everything_and_draws_nothing():
    source = _source(5)
    lam = noise_model("bernoulli", p=0.0).sample_fast(source, (3, 4), torch.float32, divisor=1.0)
    assert torch.equal(lam, torch.ones(1, 3, 4))
    assert torch.equal(source.rand((2,), torch.float32), _source(5).rand((2,), torch.float32))


@pytest.mark.parametrize("name", [n for n in NAMES if n != "bernoulli"])
def test_fast_sampler_of_a_continuous_model_is_its_sampler(name):
    """Only Bernoulli has a cheaper stream: the others give :meth:`sample`'s numbers, divided."""
    model = noise_model(name)
    fast = model.sample_fast(_source(3, 4), (5, 6), torch.float64, axis=1, divisor=2.0)
    torch.testing.assert_close(fast, model.sample(_source(3, 4), (5, 6), torch.float64, axis=1) / 2.0, rtol=0, atol=0)


# --------------------------------------------------------------------------- E[lambda]

# (name, params, E[lambda] from scipy)
MEANS = [
    ("bernoulli", {"p": 0.3}, 0.7),
    ("gaussian", {"alpha": 0.5}, 1.0),
    ("rayleigh", {"scale": 1.3}, stats.rayleigh(scale=1.3).mean()),
    ("inverse-nakagami", {"shape": 3.0, "spread": 2.0}, stats.nakagami(3.0, scale=math.sqrt(2.0)).expect(lambda x: 1 / x)),
]


@pytest.mark.parametrize("name, params, exact", MEANS, ids=[c[0] for c in MEANS])
def test_mean_is_exact_and_the_mean_of_its_own_sampler(name, params, exact):
    model = noise_model(name, **params)
    assert model.mean == pytest.approx(exact, rel=1e-7)
    n = 200_000
    lam = _np(model.sample(_source(), (n,), torch.float64))
    assert abs(lam.mean() - model.mean) < 5 * lam.std() / math.sqrt(n)


@pytest.mark.parametrize("name", ["bernoulli", "gaussian", "rayleigh"])
def test_mean_agrees_with_the_distribution_mean(name):
    model = noise_model(name)
    assert NoiseModel.mean.fget(model) == pytest.approx(model.mean, rel=1e-6)  # the mean of noise()


def test_inverse_nakagami_mean():
    """E[1/X], X ~ Nakagami(m, Omega): the closed form against quadrature, down to m just above 1/2."""
    for m, spread in ((2.0, 1.0), (0.8, 2.0), (0.55, 1.0), (5.0, 0.5)):
        model = noise_model("inverse-nakagami", shape=m, spread=spread)
        nakagami = stats.nakagami(m, scale=math.sqrt(spread))  # scipy's scale is sqrt(Omega)
        assert model.mean == pytest.approx(nakagami.expect(lambda x: 1.0 / x), rel=1e-6)


@pytest.mark.parametrize(
    "name, params", [("half-cauchy", {}), ("inverse-nakagami", {"shape": 0.5}), ("inverse-nakagami", {"shape": 0.2})]
)
def test_mean_is_infinite_where_it_does_not_exist(name, params):
    assert noise_model(name, **params).mean == math.inf


# --------------------------------------------------------------------------- what the backends ask


def test_keep_probability_is_gals_factor_for_dropout_only():
    assert noise_model("bernoulli", p=0.25).keep_probability == 0.75
    for name in NAMES[1:]:
        assert noise_model(name).keep_probability == 1.0


def test_bernoulli_names_gaussian_dropout_with_the_same_mean_and_variance():
    p = 0.2
    bernoulli = noise_model("bernoulli", p=p)
    assert "alpha = p / (1 - p) = 0.25" in bernoulli.continuous_alternative
    gaussian = noise_model("gaussian", alpha=p / (1 - p))
    # lambda / (1 - p) against N(1, alpha): E[.] = 1 and the same E[.^2]
    assert bernoulli.second_moment / bernoulli.mean**2 == pytest.approx(gaussian.second_moment, rel=1e-12)
    assert all(noise_model(name).continuous_alternative is None for name in NAMES[1:])


CLOSED_FORM = [name for name, cls in NOISE_MODELS.items() if cls.has_closed_form_update]


def test_closed_form_updates_are_declared_where_they_exist():
    assert set(CLOSED_FORM) == {"inverse-nakagami", "half-cauchy", "rayleigh"}
    assert [name for name, cls in NOISE_MODELS.items() if cls.update_is_em_step] == ["inverse-nakagami"]
    for name in set(NAMES) - set(CLOSED_FORM):
        with pytest.raises(NotImplementedError, match=f"the {name} noise model has no closed-form scale update"):
            noise_model(name).map_variance(torch.tensor(1.0), 3, 1.0)


@pytest.mark.parametrize(
    "name, params",
    [
        ("inverse-nakagami", {}),
        ("inverse-nakagami", {"shape": 0.7, "spread": 3.0}),
        ("half-cauchy", {}),
        ("half-cauchy", {"scale": 0.3}),
        ("rayleigh", {}),
        ("rayleigh", {"scale": 2.0}),
    ],
)
@pytest.mark.parametrize("S,J", [(0.01, 1), (3.0, 50), (40.0, 13), (1e-4, 2), (7.0, 2500)])
def test_closed_form_scale_update_is_the_numerical_optimum(name, params, S, J):
    """The root of each class against a numerical optimum of g(log v), built from noise() alone."""
    model = noise_model(name, **params)
    S_t = torch.tensor(S, dtype=torch.float64)
    v = float(model.map_variance(S_t, J, 0.7))

    def neg(u):
        return -float(model.map_objective(torch.tensor(math.exp(u), dtype=torch.float64), S_t, J, 0.7))

    best = minimize_scalar(neg, bounds=(-40, 40), method="bounded", options={"xatol": 1e-10})
    assert math.isclose(v, math.exp(best.x), rel_tol=1e-5)
    # and it is a maximum: nearby values are worse
    assert neg(math.log(v)) <= min(neg(math.log(v) + 0.01), neg(math.log(v) - 0.01))


def test_inverse_nakagami_update_is_the_em_step():
    """v* = 1 / E[1/v | w] under the conjugate posterior InverseGamma(a + J/2, b + S / (2 s2))."""
    a, spread, S, J, sigma0 = 2.5, 0.8, torch.tensor([0.3, 4.0], dtype=torch.float64), 7, 0.6
    model = noise_model("inverse-nakagami", shape=a, spread=spread)
    posterior = dist.InverseGamma(torch.tensor(a + J / 2, dtype=torch.float64), a / spread + S / (2 * sigma0**2))
    e_inv = 1 / posterior.sample((400_000,))
    torch.testing.assert_close(model.map_variance(S, J, sigma0), 1 / e_inv.mean(0), rtol=5e-3, atol=0)


# --------------------------------------------------------------------------- a noise model from outside


class LogNormalNoise(NoiseModel):
    """``lambda = exp(s eps)``, ``eps ~ N(0, 1)``: not in the package, written as a user would write it."""

    name = "log-normal"
    parameters = {"s": Parameter(0.5, lambda v: v > 0, "> 0", "standard deviation of log lambda")}
    noise_label = variance_label = "log-normal"
    marginal_label = "unnamed"

    def noise(self, device=None, dtype=None):
        return dist.LogNormal(self._t(0.0, device, dtype), self._t(self.s, device, dtype))

    def sample(self, source, shape, dtype, axis=0):
        return torch.exp(self.s * source.randn(shape, dtype, axis))


def _sine(n: int = 120, seed: int = 0):
    g = np.random.default_rng(seed)
    x = g.uniform(-2, 2, (n, 1))
    return x.astype(np.float32), (np.sin(2 * x[:, 0]) + 0.1 * g.standard_normal(n)).astype(np.float32)


def test_a_new_noise_model_answers_from_its_distribution():
    model = LogNormalNoise(s=0.4)
    assert model.mean == pytest.approx(math.exp(0.4**2 / 2), rel=1e-6)
    assert model.second_moment == pytest.approx(math.exp(2 * 0.4**2), rel=1e-6)
    assert not model.discrete and model.keep_probability == 1.0 and not model.has_closed_form_update
    lam = _np(model.sample(_source(), (N,), torch.float64))
    assert stats.kstest(lam, stats.lognorm(0.4).cdf).pvalue > PASS
    assert stats.kstest(lam, stats.lognorm(0.4 * 1.1).cdf).pvalue < FAIL


def test_a_new_noise_model_is_fitted_by_the_backends_as_they_are():
    """MC dropout draws it with its own sampler, SVI learns its scales, NUTS takes it: no backend knows it."""
    X, y = _sine()
    Xt, yt = _sine(200, seed=10)
    rms = float(np.sqrt((yt**2).mean()))  # the RMSE of the prior predictive mean, zero
    prior = [bnn_priors.prior("normal"), bnn_priors.prior(LogNormalNoise(s=0.3), "ard")]
    model = BayesianMLP(1, 1, hidden=(32,), prior=prior, likelihood=GaussianLikelihood(precision=100.0))
    mcd = MCDropout(epochs=100, batch_size=32, lr=1e-2, seed=0, progress=False).fit(model, X, y)
    assert mcd.info["noise_mean"]["output"] == pytest.approx(math.exp(0.3**2 / 2), rel=1e-6)
    assert mcd.evaluate(Xt, yt)["rmse"] < 0.5 * rms  # 0.24-0.26 of rms over data and fit seeds 0-3
    svi = SVI(steps=800, lr=0.02, seed=0, progress=False).fit(model, X, y)
    assert set(svi.scales()) == {"output.unit_scale"}
    assert svi.evaluate(Xt, yt)["rmse"] < 0.5 * rms  # 0.15-0.18 of rms over seeds 0-3
    assert NUTS().supports(model)


def test_scale_updates_em_refuses_a_noise_model_without_a_closed_form_update():
    X, y = _sine(20)
    model = BayesianMLP(1, 1, hidden=(4,), prior=bnn_priors.prior(LogNormalNoise(), "ard"))
    with pytest.raises(UnsupportedCombinationError) as err:
        SVI(scale_updates="em", steps=5, progress=False).fit(model, X, y)
    message = str(err.value)
    assert "log-normal/ard prior of layer0" in message and "log-normal noise has no closed-form scale update" in message
    assert all(name in message for name in CLOSED_FORM) and "Use scale_updates=None" in message
    assert "\n" not in message


# --------------------------------------------------------------------------- dtype / device


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_is_respected(name, dtype):
    model = noise_model(name)
    noise = model.noise(dtype=dtype)
    lam = noise.sample((7,))
    assert lam.dtype == dtype
    assert noise.log_prob(lam).dtype == dtype
    variance_prior = model.variance_prior(dtype=dtype)
    if variance_prior is not None:
        assert variance_prior.sample((3,)).dtype == dtype
    assert model.noise().sample().dtype == torch.get_default_dtype()


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("name", NAMES)
def test_noise_on_cuda(name):
    model = noise_model(name)
    lam = model.noise(device="cuda").sample((100,))
    assert lam.device.type == "cuda"
    assert model.noise(device="cuda", dtype=torch.float64).sample().dtype == torch.float64
    variance_prior = model.variance_prior(device="cuda")
    if variance_prior is not None:
        assert variance_prior.sample((3,)).device.type == "cuda"
