"""Tests of the evaluation metrics beside RMSE and log-likelihood: sample-MAE and the coverage of
central predictive intervals (``Posterior.evaluation_sums`` / ``evaluate`` and the suite's chunked
``evaluate_metrics``), against posteriors whose predictive distribution is known exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.stats import norm

import bnn_priors
import inference
import models
from bnn_priors.suite import evaluation
from inference.common import Posterior


def known_posterior(offsets, precision: float, replicas: int = 1) -> Posterior:
    """A posterior whose draw ``s`` is ``f_s(x) = x_0 + offsets[s % len(offsets)]`` with noise precision
    ``precision``: its predictive is the equal mixture of ``N(x_0 + offset, 1/precision)``."""
    net = models.BayesianMLP(1, 1, hidden=(2,), prior=bnn_priors.prior("half-cauchy"), replicas=replicas)
    offsets = torch.as_tensor(offsets, dtype=torch.float32)

    def sampler(X, num_samples, rng):
        c = offsets[torch.arange(num_samples) % len(offsets)]
        f = X[..., :1].expand(num_samples, replicas, *X.shape[1:-1], 1) + c[:, None, None, None]
        return f, torch.full((num_samples, replicas), float(precision))

    return Posterior(net, "known", sampler, seeds=range(replicas))


def mixture_data(offsets, sd: float, n: int, seed: int):
    """``n`` points of ``y = x + offsets[k] + sd * e`` with ``k`` uniform: draws from the mixture above."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 1))
    y = x[:, 0] + np.asarray(offsets)[rng.integers(len(offsets), size=n)] + sd * rng.normal(size=n)
    return x.astype(np.float32), y.astype(np.float32)


LEVELS = np.asarray(Posterior.COVERAGE_LEVELS)
N = 4000
BINOMIAL_SE = np.sqrt(LEVELS * (1 - LEVELS) / N)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("offsets", [[0.0], [-2.0, 2.0]])
def test_coverage_of_the_data_generating_predictive_is_the_nominal_level(offsets, seed):
    """Unimodal and strongly bimodal predictives: the exact mixture CDF makes a calibrated predictive
    cover each level's fraction (within 4 binomial SE); a Gaussian summary of the bimodal one would not."""
    sd = 0.5
    x, y = mixture_data(offsets, sd, N, seed)
    cov = known_posterior(offsets, 1 / sd**2).evaluate(x, y, num_samples=20)["coverage"]
    assert cov.shape == LEVELS.shape
    assert np.all(np.abs(cov - LEVELS) < 4 * BINOMIAL_SE), (cov, LEVELS)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_too_narrow_predictive_covers_less_by_the_known_amount(seed):
    """Predictive sd half the true one: the central a interval covers P(|Z| <= z_a / 2) = 2 Phi(z_a / 2) - 1."""
    sd = 0.5
    x, y = mixture_data([0.0], sd, N, seed)
    cov = known_posterior([0.0], 4 / sd**2).evaluate(x, y, num_samples=5)["coverage"]
    expected = 2 * norm.cdf(norm.ppf(0.5 + LEVELS / 2) / 2) - 1
    assert np.all(np.abs(cov - expected) < 4 * np.sqrt(expected * (1 - expected) / N)), (cov, expected)
    assert np.all(cov < LEVELS - 4 * BINOMIAL_SE)


def test_sample_mae_averages_each_draws_absolute_error_in_original_units():
    x, y = mixture_data([-1.0, 1.0], 0.3, 50, seed=3)
    post = known_posterior([-1.0, 0.5, 1.0], 4.0)
    metrics = post.evaluate(x, y, num_samples=6, y_scale=2.5)
    f = x[:, 0][None, :] + np.array([-1.0, 0.5, 1.0, -1.0, 0.5, 1.0])[:, None]  # the 6 draws
    assert metrics["sample_mae"] == pytest.approx(2.5 * np.abs(y[None, :] - f).mean(), rel=1e-6)
    # the RMSE is the predictive mean's: here the draws average to x + 1/6
    assert metrics["rmse"] == pytest.approx(2.5 * np.sqrt(((y - x[:, 0] - 1 / 6) ** 2).mean()), rel=1e-5)
    # a point estimate (every draw the same function): the sample-MAE is the MAE
    point = known_posterior([0.25], 4.0).evaluate(x, y, num_samples=4, y_scale=2.5)
    assert point["sample_mae"] == pytest.approx(2.5 * np.abs(y - x[:, 0] - 0.25).mean(), rel=1e-6)


def test_chunked_evaluation_adds_the_counts_and_sums_of_its_chunks(monkeypatch):
    """The suite's evaluation in chunks of points gives the unchunked coverage counts exactly and the
    sample-MAE to float rounding, per replica; the rows store counts with their levels."""
    g = torch.Generator().manual_seed(0)
    X = torch.randn(2, 61, 3, generator=g)
    y = X[..., 0].sin() + 0.1 * torch.randn(2, 61, generator=g)
    net = models.BayesianMLP(3, 1, hidden=(8,), prior=bnn_priors.prior("half-cauchy"), replicas=2)
    post = inference.SVI(steps=20, seed=[1, 2], progress=False).fit(net, X, y)
    scale = np.array([2.0, 3.0])
    whole = evaluation.evaluate_metrics(post, X.numpy(), y.numpy(), 7, scale, 8)
    monkeypatch.setattr(evaluation, "EVAL_CHUNK_ELEMENTS", 7 * 8 * 10)  # chunks of 10 points
    parts = evaluation.evaluate_metrics(post, X.numpy(), y.numpy(), 7, scale, 8)
    direct = post.evaluate(X, y, num_samples=7, y_scale=scale)
    assert whole.targets == parts.targets == 61 and whole.coverage.shape == (2, len(LEVELS))
    np.testing.assert_array_equal(parts.coverage, whole.coverage)
    np.testing.assert_array_equal(whole.coverage / 61, direct["coverage"])
    np.testing.assert_allclose(parts.sample_mae, whole.sample_mae, rtol=1e-6)
    np.testing.assert_allclose(whole.sample_mae, direct["sample_mae"], rtol=1e-6)
    assert np.all(np.diff(whole.coverage, axis=1) >= 0)  # a wider interval holds every point of a narrower one
    record = json.loads(whole.coverage_json(1))
    assert record == {"levels": LEVELS.tolist(), "inside": whole.coverage[1].tolist(), "targets": 61}
