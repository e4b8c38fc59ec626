"""Tests of the layer priors (``bnn_priors.prior``), the structures and the table.

The marginals of the hierarchical form (the Pyro sites ``sample_weights`` declares)
are checked against their closed forms, the expanded form ``lambda * z`` against
the hierarchical one, and the structures both through the Pyro trace (site names,
shapes, the weight site's scale) and statistically. Statistical tests use a fixed
seed (``BNN_PRIORS_TEST_SEED`` overrides it, to check they are not flaky); each one
also checks that a wrong law is rejected, so that it has power.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from scipy import stats

import bnn_priors
from bnn_priors import (
    PRIOR_NAMES,
    STRUCTURES,
    InvalidParameterError,
    LogUniformPrior,
    NormalPrior,
    ScaleMixturePrior,
    UnknownNameError,
    noise_model,
    prior,
)
from bnn_priors.distributions import ImproperLogUniform

SEED = int(os.environ.get("BNN_PRIORS_TEST_SEED", "20190"))
NAMES = ("bernoulli", "gaussian", "rayleigh", "inverse-nakagami", "half-cauchy")
PASS, FAIL = 1e-3, 1e-6  # KS p-value thresholds: the right law passes, a wrong one fails
# Scale-site shapes of a (5, 7) layer under each structure.
SITE_SHAPES = {
    "none": {"weight_scale": (5, 7)},
    "ard": {"unit_scale": (5, 1)},
    "add": {"layer_scale": (1, 1)},
    "ard-add": {"unit_scale": (5, 1), "layer_scale": (1, 1)},
}

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(autouse=True)
def _seed():
    pyro.set_rng_seed(SEED)  # seeds torch, numpy and random


def _np(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().to(torch.float64).numpy().ravel()


def _flat_weights(name, sigma0, n=100_000, **params) -> np.ndarray:
    """``n`` independent prior weights (structure ``none``) from the hierarchical form."""
    p = prior(name, structure="none", sigma0=sigma0, **params)
    return _np(p.sample_weights(20, 25, (n // 500,)))


# --------------------------------------------------------------------------- table


def test_table_has_one_row_per_noise_model_with_the_paper_labels():
    t = bnn_priors.table()
    assert isinstance(t, pd.DataFrame)
    assert t.shape[0] == 5
    assert list(t.index) == list(NAMES)
    assert t.index.name == "name"
    expected = {
        "bernoulli": ("Bernoulli", "Bernoulli", "spike-and-slab"),
        "gaussian": ("Gaussian", None, "generalized hyperbolic"),
        "rayleigh": ("Rayleigh", "exponential", "Laplace"),
        "inverse-nakagami": ("inverse Nakagami", "inverse gamma", "Student-t"),
        "half-cauchy": ("half-Cauchy", None, "horseshoe"),
    }
    for name, (noise, variance, marginal) in expected.items():
        row = t.loc[name]
        assert row["noise p(λ)"] == noise
        if variance is not None:
            assert row["variance prior p(λ²)"] == variance
        assert row["marginal prior p(w)"] == marginal
    # the Pyro distribution columns follow the classes (empty where there is no closed form)
    assert t.loc["rayleigh", "p(λ) distribution"] == "Rayleigh"
    assert t.loc["rayleigh", "p(λ²) distribution"] == "Exponential"
    assert t.loc["rayleigh", "p(w) distribution"] == "Laplace"
    assert t.loc["inverse-nakagami", "p(λ²) distribution"] == "InverseGamma"
    assert t.loc["inverse-nakagami", "p(w) distribution"] == "StudentT"


def test_readme_table_is_the_generated_table():
    """The README's noise-model table (between its ``table:begin`` and ``table:end`` markers) is
    ``bnn_priors.table()``'s first four columns, cell for cell, in the table's row order."""
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    block = text.split("<!-- table:begin", 1)[1].split("<!-- table:end", 1)[0]
    lines = [line for line in block.splitlines() if line.startswith("|")]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    t = bnn_priors.table()
    columns = ["noise p(λ)", "variance prior p(λ²)", "marginal prior p(w)", "parameters (default)"]
    assert cells[0] == ["name", *columns]
    assert set(cells[1][0]) <= set("-: ")  # the header's separator row
    assert [row[0] for row in cells[2:]] == list(t.index)
    for row in cells[2:]:
        assert row[1:] == [str(t.loc[row[0], c]) for c in columns], row[0]
    assert t.loc["half-cauchy", "p(λ) distribution"] == "HalfCauchy"
    assert t.loc["half-cauchy", "p(λ²) distribution"] == ""
    assert t.loc["gaussian", "p(w) distribution"] == ""
    assert "p=0.1" in t.loc["bernoulli", "parameters (default)"]
    assert "shape=2" in t.loc["inverse-nakagami", "parameters (default)"]


# --------------------------------------------------------------------------- marginals


def test_rayleigh_marginal_is_laplace():
    scale, sigma0 = 1.3, 0.8
    w = _flat_weights("rayleigh", sigma0, scale=scale)
    b = scale * sigma0
    assert stats.kstest(w, stats.laplace(scale=b).cdf).pvalue > PASS
    assert stats.kstest(w, stats.laplace(scale=1.5 * b).cdf).pvalue < FAIL
    assert stats.kstest(w, stats.laplace(scale=1.08 * b).cdf).pvalue < FAIL
    assert stats.kstest(w, stats.norm(scale=math.sqrt(2) * b).cdf).pvalue < FAIL  # same variance
    marginal = noise_model("rayleigh", scale=scale).marginal(sigma0)
    assert isinstance(marginal, dist.Laplace)
    assert float(marginal.loc) == 0.0
    assert float(marginal.scale) == pytest.approx(b, rel=1e-6)
    assert stats.ks_2samp(w, _np(marginal.sample((50_000,)))).pvalue > PASS


def test_inverse_nakagami_marginal_is_student_t():
    shape, spread, sigma0 = 1.5, 2.0, 0.8
    w = _flat_weights("inverse-nakagami", sigma0, shape=shape, spread=spread)
    df, scale = 2 * shape, sigma0 / math.sqrt(spread)
    assert stats.kstest(w, stats.t(df=df, scale=scale).cdf).pvalue > PASS
    assert stats.kstest(w, stats.t(df=2 * df, scale=scale).cdf).pvalue < FAIL
    assert stats.kstest(w, stats.t(df=df / 2, scale=scale).cdf).pvalue < FAIL
    assert stats.kstest(w, stats.t(df=df, scale=1.1 * scale).cdf).pvalue < FAIL
    assert stats.kstest(w, stats.t(df=df, scale=sigma0).cdf).pvalue < FAIL  # spread ignored
    marginal = noise_model("inverse-nakagami", shape=shape, spread=spread).marginal(sigma0)
    assert float(marginal.df) == pytest.approx(df)
    assert float(marginal.scale) == pytest.approx(scale, rel=1e-6)


def test_half_cauchy_marginal_is_the_horseshoe():
    scale, sigma0 = 1.3, 0.8
    w = _flat_weights("half-cauchy", sigma0, scale=scale)
    rng = np.random.default_rng(SEED)
    n = 100_000
    lam = stats.halfcauchy(scale=scale).rvs(n, random_state=rng)
    direct = lam * rng.normal(0.0, sigma0, n)
    assert stats.ks_2samp(w, direct).pvalue > PASS
    # The horseshoe has a pole at zero: it is not the Cauchy of the same scale,
    assert stats.kstest(w, stats.cauchy(scale=scale * sigma0).cdf).pvalue < FAIL
    # nor the Student-t with 1 dof scaled to match its median absolute value.
    matched = np.median(np.abs(direct)) / stats.cauchy.ppf(0.75)
    assert stats.kstest(w, stats.cauchy(scale=matched).cdf).pvalue < FAIL
    # nor the horseshoe of a wrong scale
    assert stats.ks_2samp(w, 1.2 * direct).pvalue < FAIL


def test_bernoulli_marginal_is_spike_and_slab():
    p, sigma0 = 0.3, 0.7
    w = _flat_weights("bernoulli", sigma0, p=p)
    n = w.size
    zero = w == 0.0
    assert abs(zero.mean() - p) < 4.5 * math.sqrt(p * (1 - p) / n)
    slab = w[~zero]
    assert stats.kstest(slab, stats.norm(scale=sigma0).cdf).pvalue > PASS
    assert stats.kstest(slab, stats.norm(scale=1.08 * sigma0).cdf).pvalue < FAIL
    # p = 0 is a plain Gaussian prior: no zeros at all
    assert np.count_nonzero(_flat_weights("bernoulli", sigma0, n=20_000, p=0.0) == 0.0) == 0


def _normal_moment(k: int, mu: float, var: float) -> float:
    """E[X^k] for X ~ N(mu, var)."""

    def double_factorial(j: int) -> int:
        return math.prod(range(j, 0, -2)) if j > 0 else 1

    return sum(
        math.comb(k, j) * mu ** (k - j) * var ** (j // 2) * double_factorial(j - 1)
        for j in range(0, k + 1, 2)
    )


def test_gaussian_marginal_variance_and_kurtosis():
    """w = lambda z, lambda ~ N(1, alpha), z ~ N(0, sigma0^2): E[w^k] = E[lambda^k] E[z^k].

    Var(w) = sigma0^2 (1 + alpha), kurtosis = 3 (1 + 6 alpha + 3 alpha^2) / (1 + alpha)^2;
    the tolerances are 5 standard errors of the moment estimators (delta method).
    """
    alpha, sigma0, n = 0.5, 0.7, 200_000
    w = _flat_weights("gaussian", sigma0, n=n, alpha=alpha)
    mu = {
        k: _normal_moment(k, 1.0, alpha) * _normal_moment(k, 0.0, sigma0**2) for k in (2, 4, 6, 8)
    }
    variance = sigma0**2 * (1 + alpha)
    kurtosis = 3 * (1 + 6 * alpha + 3 * alpha**2) / (1 + alpha) ** 2
    assert mu[2] == pytest.approx(variance) and mu[4] / mu[2] ** 2 == pytest.approx(kurtosis)

    m2, m4 = np.mean(w**2), np.mean(w**4)  # the mean is known to be zero
    se_m2 = math.sqrt((mu[4] - mu[2] ** 2) / n)
    assert abs(np.var(w) - variance) < 5 * se_m2
    cov = (
        np.array(
            [
                [mu[4] - mu[2] ** 2, mu[6] - mu[2] * mu[4]],
                [mu[6] - mu[2] * mu[4], mu[8] - mu[4] ** 2],
            ]
        )
        / n
    )
    grad = np.array([-2 * mu[4] / mu[2] ** 3, 1 / mu[2] ** 2])
    se_kurtosis = math.sqrt(grad @ cov @ grad)
    assert abs(m4 / m2**2 - kurtosis) < 5 * se_kurtosis
    assert kurtosis - 3 > 10 * se_kurtosis  # the test tells it apart from a Gaussian
    # alpha read as a standard deviation instead of a variance would be caught
    assert abs(sigma0**2 * (1 + alpha**2) - variance) > 10 * se_m2


def test_normal_prior_has_no_scales_and_samples_n0_sigma0():
    sigma0 = 0.6
    p = prior("normal", sigma0=sigma0)
    assert isinstance(p, NormalPrior) and p.proper and p.scale_shapes(5, 7) == {}
    tr = poutine.trace(p.sample_weight).get_trace("layer", 5, 7)
    sites = [k for k, v in tr.nodes.items() if v["type"] == "sample"]
    assert sites == ["layer.weight"]
    w = _np(p.sample_weights(20, 25, (100,)))
    assert stats.kstest(w, stats.norm(scale=sigma0).cdf).pvalue > PASS
    assert stats.kstest(w, stats.norm(scale=1.1 * sigma0).cdf).pvalue < FAIL
    with pytest.raises(InvalidParameterError, match="scale"):
        prior("normal", scale=1.0)
    # it has no shared scales: structure 'none' (or none given) only
    assert prior("normal", structure="none", sigma0=sigma0).structure == "none"
    for structure in ("ard", "add", "ard-add"):
        with pytest.raises(InvalidParameterError, match="'none'"):
            prior("normal", structure=structure)
    with pytest.raises(UnknownNameError, match="add, ard, ard-add, none"):
        prior("normal", structure="rows")


# --------------------------------------------------------------------------- expanded vs hierarchical


def _stats(w: torch.Tensor) -> dict[str, np.ndarray]:
    """Per-matrix statistics (independent across samples): one weight and the mean |w|."""
    return {"w00": _np(w[:, 0, 0]), "mean|w|": _np(w.abs().mean((-2, -1)))}


@pytest.mark.parametrize("structure", list(STRUCTURES))
@pytest.mark.parametrize("name", NAMES)
def test_expanded_and_hierarchical_forms_agree(name, structure):
    p = prior(name, structure=structure, sigma0=0.7)
    n = 4000
    hierarchical = p.sample_weights(3, 4, (n,))
    expanded = p.expanded_weights(3, 4, (n,))
    assert hierarchical.shape == expanded.shape == (n, 3, 4)
    a, b = _stats(hierarchical), _stats(expanded)
    for key in a:
        assert stats.ks_2samp(a[key], b[key]).pvalue > PASS, key


def test_expanded_versus_hierarchical_comparison_has_power():
    n = 4000
    reference = _stats(prior("rayleigh", structure="none", sigma0=0.7).sample_weights(3, 4, (n,)))
    wrong_sigma0 = _stats(
        prior("rayleigh", structure="none", sigma0=0.7 * 1.15).expanded_weights(3, 4, (n,))
    )
    assert stats.ks_2samp(reference["mean|w|"], wrong_sigma0["mean|w|"]).pvalue < FAIL
    wrong_structure = _stats(
        prior("rayleigh", structure="add", sigma0=0.7).expanded_weights(3, 4, (n,))
    )
    assert stats.ks_2samp(reference["mean|w|"], wrong_structure["mean|w|"]).pvalue < FAIL


# --------------------------------------------------------------------------- structures: Pyro sites


@pytest.mark.parametrize("structure", list(STRUCTURES))
@pytest.mark.parametrize("name", NAMES)
def test_structure_sites_and_weight_scale(name, structure):
    sigma0 = 0.7
    p = prior(name, structure=structure, sigma0=sigma0)
    assert p.scale_shapes(5, 7) == SITE_SHAPES[structure]
    tr = poutine.trace(p.sample_weight).get_trace("layer", 5, 7)
    sites = {k: v for k, v in tr.nodes.items() if v["type"] == "sample"}
    scale_sites = {k for k in sites if k not in ("layer.weight", "layer.weight_z")}
    assert scale_sites == {f"layer.{kind}" for kind in SITE_SHAPES[structure]}

    std = torch.full((5, 7), sigma0)
    for kind, shape in SITE_SHAPES[structure].items():
        site = sites[f"layer.{kind}"]
        assert tuple(site["value"].shape) == shape
        assert site["fn"].event_shape == shape and site["fn"].batch_shape == ()
        assert not site["is_observed"]
        std = std * site["value"].abs()

    weight = sites["layer.weight"]
    assert tuple(weight["value"].shape) == (5, 7)
    if name == "bernoulli":
        # declared non-centred: w = std * z (N(0, 0) has no density)
        z = sites["layer.weight_z"]["value"]
        torch.testing.assert_close(weight["value"], std * z)
    else:
        fn = weight["fn"]
        assert fn.event_shape == (5, 7) and fn.batch_shape == ()
        torch.testing.assert_close(fn.base_dist.scale.expand(5, 7), std)
        torch.testing.assert_close(fn.base_dist.loc.expand(5, 7), torch.zeros(5, 7))
        # the trace's density is that of the hierarchy
        noise = noise_model(name).noise()
        expected = sum(
            noise.log_prob(sites[f"layer.{k}"]["value"]).sum() for k in SITE_SHAPES[structure]
        )
        expected = expected + dist.Normal(0.0, std).log_prob(weight["value"]).sum()
        torch.testing.assert_close(tr.log_prob_sum(), expected)
        # the sharing pattern of the scales
        if structure == "ard":
            assert bool((std == std[:, :1]).all()) and std[:, 0].unique().numel() == 5
        elif structure == "add":
            assert bool((std == std[0, 0]).all())
        elif structure == "none":
            assert std.unique().numel() == 35
        else:  # ard-add: per-row scale times one layer scale
            unit = sites["layer.unit_scale"]["value"].abs()
            layer = sites["layer.layer_scale"]["value"].abs()
            torch.testing.assert_close(std, (sigma0 * unit * layer).expand(5, 7))


def test_structure_names_are_normalised_and_unknown_ones_listed():
    assert prior("rayleigh", structure="ARD_ADD").structure == "ard-add"
    assert prior("rayleigh", structure=" None ").structure == "none"
    for bad in ("layer", "dropconnect", "ard add"):
        with pytest.raises(ValueError) as excinfo:
            prior("rayleigh", structure=bad)
        assert isinstance(excinfo.value, UnknownNameError)
        message = str(excinfo.value)
        assert repr(bad) in message and "add, ard, ard-add, none" in message
    with pytest.raises(UnknownNameError):
        ScaleMixturePrior(noise_model("rayleigh"), structure="rows")


@pytest.mark.parametrize(
    "noise", ["rayleigh", noise_model("half-cauchy")], ids=["name", "instance"]
)
def test_empty_structure_is_rejected_not_defaulted(noise):
    # An empty structure name is a user mistake (an unset option), not a request for the
    # default: prior("normal", structure="") rejects it, so must the scale mixtures.
    with pytest.raises(UnknownNameError, match="add, ard, ard-add, none"):
        prior("normal", structure="")
    with pytest.raises(UnknownNameError, match="add, ard, ard-add, none"):
        prior(noise, structure="")


@pytest.mark.parametrize("structure", list(STRUCTURES))
@pytest.mark.parametrize("sample_shape", [(), (6,), (2, 3)])
def test_sample_noise_and_weight_shapes(structure, sample_shape):
    p = prior("rayleigh", structure=structure)
    noise = p.sample_noise(5, 7, sample_shape)
    assert {k: tuple(v.shape) for k, v in noise.items()} == {
        k: sample_shape + shape for k, shape in SITE_SHAPES[structure].items()
    }
    assert all(bool((v > 0).all()) for v in noise.values())
    assert p.sample_weights(5, 7, sample_shape).shape == sample_shape + (5, 7)
    assert p.expanded_weights(5, 7, sample_shape).shape == sample_shape + (5, 7)
    assert prior("normal").sample_weights(5, 7, sample_shape).shape == sample_shape + (5, 7)


def test_sample_weights_draws_independent_matrices():
    w = prior("half-cauchy", structure="add").sample_weights(4, 4, (50,))
    assert w.reshape(50, -1).std(0).min() > 0  # not one matrix broadcast 50 times
    assert torch.unique(w[:, 0, 0]).numel() == 50


# --------------------------------------------------------------------------- structures: statistics


def _share(w: torch.Tensor, dims) -> np.ndarray:
    """w[..., 0]^2 / sum of w^2 over ``dims``: Beta(1/2, (k-1)/2) when those k weights share a scale."""
    first = w[:, 0, 0] ** 2 if dims == (-2, -1) else w[:, :, 0] ** 2
    return _np(first / (w**2).sum(dims))


@pytest.mark.parametrize(
    "structure, shares", [("ard", True), ("ard-add", True), ("add", True), ("none", False)]
)
def test_rows_share_one_scale_under_ard(structure, shares):
    # Within a row sharing one scale, w_i0^2 / sum_j w_ij^2 is free of the scale: Beta(1/2, (out-1)/2).
    # Rows are independent given the layer scale, and the ratio does not depend on it.
    n_in, n_out = 16, 8
    w = prior("half-cauchy", structure=structure, sigma0=0.7).sample_weights(n_in, n_out, (400,))
    ratio = _share(w, -1)
    pvalue = stats.kstest(ratio, stats.beta(0.5, (n_out - 1) / 2).cdf).pvalue
    assert (pvalue > PASS) if shares else (pvalue < FAIL)


@pytest.mark.parametrize(
    "structure, shares", [("add", True), ("ard-add", False), ("ard", False), ("none", False)]
)
def test_matrix_shares_one_scale_under_add(structure, shares):
    n_in, n_out = 8, 8
    w = prior("half-cauchy", structure=structure, sigma0=0.7).sample_weights(n_in, n_out, (3000,))
    ratio = _share(w, (-2, -1))
    pvalue = stats.kstest(ratio, stats.beta(0.5, (n_in * n_out - 1) / 2).cdf).pvalue
    assert (pvalue > PASS) if shares else (pvalue < FAIL)


def _within_matrix_kurtosis(w: torch.Tensor) -> np.ndarray:
    w = w.to(torch.float64)
    return _np((w**4).mean((-2, -1)) / (w**2).mean((-2, -1)) ** 2)


def test_add_scales_whole_matrices_which_stay_gaussian_within():
    n_in, n_out, n = 16, 16, 300
    k = n_in * n_out
    add = prior("half-cauchy", structure="add").sample_weights(n_in, n_out, (n,))
    none = prior("half-cauchy", structure="none").sample_weights(n_in, n_out, (n,))
    # w / rms(w) within a matrix is Gaussian under add: E[m4 / m2^2] = 3k / (k + 2) exactly
    kurt_add = _within_matrix_kurtosis(add)
    assert abs(kurt_add.mean() - 3 * k / (k + 2)) < 5 * kurt_add.std() / math.sqrt(n)
    assert _within_matrix_kurtosis(none).mean() > 10
    # the matrix's overall scale varies a lot from sample to sample under add, little under none
    # (Rayleigh noise: lambda^2 is exponential, sd(log lambda^2) = pi / sqrt(6))
    spread = {
        s: np.std(
            np.log(
                _np(
                    (prior("rayleigh", structure=s).sample_weights(n_in, n_out, (n,)) ** 2).mean(
                        (-2, -1)
                    )
                )
            )
        )
        for s in ("add", "none")
    }
    assert spread["add"] == pytest.approx(math.pi / math.sqrt(6), rel=0.2)
    assert spread["add"] > 4 * spread["none"]


def test_ard_row_norms_vary_more_than_column_norms_and_than_under_none():
    n_in, n_out, n = 32, 16, 200

    def between_variance(structure, dim):
        w = prior("rayleigh", structure=structure).sample_weights(n_in, n_out, (n,))
        log_norms = torch.log(w.to(torch.float64).norm(dim=dim))  # (n, rows or columns)
        return float(log_norms.var(dim=-1).mean())

    rows_ard, rows_none = between_variance("ard", -1), between_variance("none", -1)
    columns_ard = between_variance("ard", -2)
    assert rows_ard > 3 * rows_none
    assert rows_ard > 3 * columns_ard


# --------------------------------------------------------------------------- prior(): errors


def test_unknown_prior_lists_all_prior_names():
    with pytest.raises(UnknownNameError) as excinfo:
        prior("laplace")
    message = str(excinfo.value)
    for name in PRIOR_NAMES:
        assert name in message
    assert set(PRIOR_NAMES) == set(NAMES) | {"normal", "log-uniform"}


@pytest.mark.parametrize("sigma0", [0.0, -1.0, math.nan, math.inf, "abc", None])
@pytest.mark.parametrize("name", ["rayleigh", "half-cauchy", "normal"])
def test_invalid_sigma0_raises(name, sigma0):
    with pytest.raises(InvalidParameterError, match="sigma0"):
        prior(name, sigma0=sigma0)


def test_noise_parameters_are_passed_and_checked():
    p = prior("inverse-nakagami", structure="add", sigma0=2.0, shape=3.0, spread=0.5)
    assert isinstance(p, ScaleMixturePrior)
    assert p.noise == noise_model("inverse-nakagami", shape=3.0, spread=0.5)
    assert (p.structure, p.sigma0, p.name) == ("add", 2.0, "inverse-nakagami")
    assert p.describe() == "inverse-nakagami/add"
    assert (
        repr(p)
        == "ScaleMixturePrior(InverseNakagami(shape=3, spread=0.5), structure='add', sigma0=2)"
    )
    with pytest.raises(InvalidParameterError, match="'scale'"):
        prior("rayleigh", scale=-1.0)
    with pytest.raises(InvalidParameterError, match="scale"):
        prior("rayleigh", p=0.5)
    model = noise_model("half-cauchy", scale=0.3)
    assert prior(model, structure="none").noise is model
    with pytest.raises(InvalidParameterError):
        prior(model, scale=1.0)
    with pytest.raises(InvalidParameterError, match="NoiseModel"):
        ScaleMixturePrior("rayleigh")
    assert prior("rayleigh").structure == "ard"  # the default structure


@pytest.mark.parametrize("features", [(0, 3), (3, -1), (2.5, 3), (True, 3), ("3", 3)])
def test_invalid_layer_sizes_raise(features):
    p = prior("rayleigh")
    with pytest.raises(InvalidParameterError, match="features"):
        p.sample_weights(*features)
    with pytest.raises(InvalidParameterError, match="features"):
        p.sample_noise(*features)


def test_log_uniform_prior_is_improper():
    p = prior("log-uniform", structure="none")
    assert isinstance(p, LogUniformPrior) and not p.proper
    assert prior("log-uniform").structure == "none" and p.scale_shapes(3, 4) == {}
    with pytest.raises(ValueError, match="improper"):
        p.sample_weights(3, 4)
    with pytest.raises(ValueError, match="improper"):
        prior("log-uniform").sample_weights(3, 4, (10,))
    # one independent scale per weight: the structures that share scales are refused
    for structure in ("ard", "add", "ard-add"):
        with pytest.raises(InvalidParameterError, match="'none'"):
            prior("log-uniform", structure=structure)
    with pytest.raises(UnknownNameError):
        prior("log-uniform", structure="rows")
    with pytest.raises(InvalidParameterError, match="shape"):
        prior("log-uniform", shape=0.5)
    with pytest.raises(InvalidParameterError, match="sigma0"):
        prior("log-uniform", sigma0=2.0)


def test_improper_log_uniform_density():
    d = ImproperLogUniform(event_shape=(3, 4))
    assert d.event_shape == (3, 4) and d.batch_shape == ()
    w = torch.tensor([[0.5, -2.0, 1.0, 3.0], [-0.1, 0.2, 7.0, -1.5], [1.0, 1.0, 1.0, 4.0]])
    torch.testing.assert_close(d.log_prob(w), -w.abs().log().sum())
    batched = d.expand((2,))
    assert batched.batch_shape == (2,) and batched.event_shape == (3, 4)
    torch.testing.assert_close(
        batched.log_prob(torch.stack([w, 2 * w])),
        -torch.stack([w, 2 * w]).abs().log().sum((-2, -1)),
    )
    elementwise = ImproperLogUniform()
    torch.testing.assert_close(elementwise.log_prob(w), -w.abs().log())
    with pytest.raises(NotImplementedError):
        d.sample()


def test_log_uniform_prior_declares_its_density():
    p = prior("log-uniform")
    # conditioned on weights, its density is -sum log|w| (up to a constant)
    w = torch.tensor([[0.5, -2.0, 1.0, 3.0], [-0.1, 0.2, 7.0, -1.5], [1.0, 1.0, 1.0, 4.0]])
    tr = poutine.trace(poutine.condition(p.sample_weight, data={"layer.weight": w})).get_trace(
        "layer", 3, 4
    )
    torch.testing.assert_close(tr.log_prob_sum(), -w.abs().log().sum())


# --------------------------------------------------------------------------- dtype / device


@pytest.mark.parametrize("name", [*NAMES, "normal"])
def test_sample_weight_respects_dtype(name):
    p = prior(name, structure="ard-add") if name != "normal" else prior("normal")
    tr = poutine.trace(p.sample_weight).get_trace("layer", 3, 4, dtype=torch.float64)
    values = {k: v["value"] for k, v in tr.nodes.items() if v["type"] == "sample"}
    assert values and all(v.dtype == torch.float64 for v in values.values())
    if name != "normal":
        assert all(
            v.dtype == torch.float64
            for v in p.sample_noise(3, 4, (2,), dtype=torch.float64).values()
        )
    assert p.sample_weights(3, 4, (2,)).dtype == torch.get_default_dtype()


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("structure", list(STRUCTURES))
@pytest.mark.parametrize("name", NAMES)
def test_priors_on_cuda(name, structure):
    p = prior(name, structure=structure, sigma0=0.7)
    tr = poutine.trace(p.sample_weight).get_trace("layer", 3, 4, device="cuda")
    assert all(v["value"].device.type == "cuda" for v in tr.nodes.values() if v["type"] == "sample")
    assert all(v.device.type == "cuda" for v in p.sample_noise(3, 4, (2,), device="cuda").values())
    with torch.device("cuda"):  # sample_weights follows the default device
        w = p.sample_weights(3, 4, (500,))
        assert w.device.type == "cuda" and w.shape == (500, 3, 4)
        assert p.expanded_weights(3, 4, (5,)).device.type == "cuda"
    assert torch.isfinite(w).all()
