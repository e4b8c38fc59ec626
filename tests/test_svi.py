"""The SVI backend: its direct objective against Pyro's, its estimators, its guides and updates."""

from __future__ import annotations

import math

import numpy as np
import pyro
import pytest
import torch

import bnn_priors as bp
from bnn_priors.errors import (
    DataError,
    FitDivergedError,
    InvalidParameterError,
    UnsupportedCombinationError,
)
from inference import SVI
from inference.common import ReplicaRandom
from inference.svi import _Variational, log_uniform_kl
from models import BayesianMLP, BayesianResNet, GaussianLikelihood


def _data(R=1, n=40, d=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(R, n, d, generator=g)
    y = torch.sin(X[..., 0]) + 0.1 * torch.randn(R, n, generator=g)
    return X, y


def _variational(model, guide="mean-field", em=False, seed=0, perturb=True):
    q = _Variational(model, guide, "weight", em, 0.3, ReplicaRandom([seed + r for r in range(model.replicas)], model.device))
    if perturb:  # move away from the initial values so every parameter matters
        g = torch.Generator().manual_seed(seed + 100)
        with torch.no_grad():
            for p in q.params.values():
                p.add_(0.2 * torch.randn(p.shape, generator=g))
    return q


PRIORS = [
    bp.prior("half-cauchy", "ard-add"),
    bp.prior("rayleigh", "add"),
    bp.prior("inverse-nakagami", "ard"),
    bp.prior("gaussian", "none"),
    bp.prior("normal", sigma0=0.7),
]


@pytest.mark.parametrize("prior", PRIORS, ids=lambda p: p.describe())
@pytest.mark.parametrize("learned", [True, False])
def test_direct_elbo_equals_pyro_on_the_same_draws(prior, learned):
    """At fixed noise (the same draws), the direct objective is Pyro's log p(y, z) - log q(z)."""
    lik = GaussianLikelihood() if learned else GaussianLikelihood(precision=4.0)
    model = BayesianResNet(2, 1, hidden=(6, 6), prior=prior, likelihood=lik, replicas=2)
    X, y = _data(R=2)
    q = _variational(model)
    for seed in range(3):
        pyro.set_rng_seed(seed)
        guide_tr = pyro.poutine.trace(q.pyro_guide).get_trace(X, y)
        model_tr = pyro.poutine.trace(pyro.poutine.replay(model, trace=guide_tr)).get_trace(X, y)
        pyro_value = model_tr.log_prob_sum() - guide_tr.log_prob_sum()
        samples = {name: site["value"] for name, site in guide_tr.nodes.items() if site["type"] == "sample"}
        direct = q.elbo_from_samples(samples, model.check_inputs(X), model.check_targets(y, model.check_inputs(X)), 40)
        assert direct.shape == (2,)
        assert torch.allclose(direct.sum(), pyro_value, rtol=1e-5, atol=1e-3), (direct.sum(), pyro_value)


def test_em_guide_matches_pyro_too():
    model = BayesianMLP(2, 1, hidden=(5,), prior=bp.prior("half-cauchy", "ard"))
    X, y = _data()
    q = _variational(model, em=True)
    q.update_scales()
    guide_tr = pyro.poutine.trace(q.pyro_guide).get_trace(X, y)
    model_tr = pyro.poutine.trace(pyro.poutine.replay(model, trace=guide_tr)).get_trace(X, y)
    samples = {n: s["value"] for n, s in guide_tr.nodes.items() if s["type"] == "sample"}
    Xc = model.check_inputs(X)
    direct = q.elbo_from_samples(samples, Xc, model.check_targets(y, Xc), 40)
    # The EM scales are point estimates: Pyro's Delta adds log q = 0, the direct form leaves out p(lambda).
    log_p_scales = sum(
        model_tr.nodes[n]["fn"].log_prob(model_tr.nodes[n]["value"]).sum()
        for n in model_tr.nodes
        if n.endswith("unit_scale")
    )
    assert torch.allclose(direct.sum() + log_p_scales, model_tr.log_prob_sum() - guide_tr.log_prob_sum(), rtol=1e-5)


@pytest.mark.parametrize("local_reparam", [True, False])
def test_fast_elbo_is_unbiased_for_the_monte_carlo_elbo(local_reparam):
    """Closed-form KL given the scales and local reparameterization change the variance, not the mean."""
    model = BayesianMLP(2, 1, hidden=(5,), prior=bp.prior("half-cauchy", "ard"))
    X, y = _data()
    Xc = model.check_inputs(X)
    yc = model.check_targets(y, Xc)
    q = _variational(model)
    S = 1500
    rng = ReplicaRandom([1], model.device)
    with torch.no_grad():
        fast = torch.stack([q.elbo(Xc, yc, 40, 1, local_reparam, rng) for _ in range(S)]).squeeze(-1)
        mc = []
        for seed in range(S):
            pyro.set_rng_seed(seed)
            tr = pyro.poutine.trace(q.pyro_guide).get_trace(X, y)
            samples = {n: s["value"] for n, s in tr.nodes.items() if s["type"] == "sample"}
            mc.append(q.elbo_from_samples(samples, Xc, yc, 40))
        mc = torch.stack(mc).squeeze(-1)
    se = math.sqrt(fast.var() / S + mc.var() / S)
    assert abs(float(fast.mean() - mc.mean())) < 4 * se, (fast.mean(), mc.mean(), se)


def test_local_reparameterization_lowers_gradient_variance():
    model = BayesianMLP(4, 1, hidden=(20,), prior=bp.prior("normal"))
    X, y = _data(n=100, d=4)
    Xc = model.check_inputs(X)
    yc = model.check_targets(y, Xc)

    def grad_var(local: bool) -> float:
        q = _variational(model)
        rng = ReplicaRandom([3], model.device)
        grads = []
        for _ in range(300):
            idx = rng.batch_indices(100, 20)
            loss = -q.elbo(Xc[:, idx[0]], yc[:, idx[0]], 100, 1, local, rng).sum()
            (g,) = torch.autograd.grad(loss, q.params["layer0.weight.log_std"])
            grads.append(g.flatten())
        return float(torch.stack(grads).var(0).mean())

    assert grad_var(True) < 0.5 * grad_var(False)


def test_molchanov_kl_approximation_tracks_the_exact_kl_up_to_a_constant():
    """-KL(N(mu, alpha mu^2) || log-uniform) = 0.5 log alpha - E log|1 + sqrt(alpha) eps| + C."""
    g = torch.Generator().manual_seed(0)
    eps = torch.randn(2_000_000, generator=g, dtype=torch.float64)
    log_alphas = torch.linspace(-4, 4, 9, dtype=torch.float64)
    exact = torch.stack([0.5 * la - torch.log((1 + torch.exp(0.5 * la) * eps).abs()).mean() for la in log_alphas])
    approx = -log_uniform_kl(log_alphas)
    offset = approx - exact
    assert float(offset.max() - offset.min()) < 0.03


def test_em_scales_stay_finite_under_ard_add():
    """The log-space MAP keeps ARD-ADD identifiable (the MAP in lambda^2 collapses for the horseshoe)."""
    model = BayesianResNet(1, 1, hidden=(20, 20), prior=bp.prior("half-cauchy", "ard-add"))
    X, y = _data(d=1, n=80)
    post = SVI(steps=400, scale_updates="em", progress=False).fit(model, X, y)
    for name, value in post.scales().items():
        assert torch.isfinite(value).all() and (value > 0).all(), name
        assert float(value.max()) < 1e3, name


def test_variational_dropout_alpha_shapes_and_fit():
    X, y = _data(n=60)
    for alpha, shape in (("weight", (1, 2, 8)), ("unit", (1, 2, 1))):
        model = BayesianMLP(2, 1, hidden=(8,), prior=bp.prior("log-uniform"))
        post = SVI(guide="variational-dropout", alpha=alpha, steps=600, progress=False).fit(model, X, y)
        assert post.variational.params["layer0.weight.log_alpha"].shape == shape
        assert post.evaluate(X, y)["rmse"] < float(y.std())


def test_bernoulli_is_refused_with_the_alternative():
    model = BayesianMLP(2, 1, prior=bp.prior("bernoulli", "ard"))
    with pytest.raises(UnsupportedCombinationError, match="MCDropout"):
        SVI(steps=10).fit(model, *_data())


@pytest.mark.parametrize("prior", [bp.prior("gaussian", "ard"), bp.prior("log-uniform")])
def test_em_refuses_priors_without_closed_form(prior):
    model = BayesianMLP(2, 1, prior=prior)
    with pytest.raises(UnsupportedCombinationError, match="scale_updates"):
        SVI(scale_updates="em", steps=10).fit(model, *_data())


def test_bad_options_and_data_are_clear_errors():
    with pytest.raises(InvalidParameterError, match="guide"):
        SVI(guide="full-rank")
    with pytest.raises(InvalidParameterError, match="steps"):
        SVI(steps=0)
    model = BayesianMLP(2, 1)
    X, y = _data()
    X[0, 3, 1] = float("nan")
    with pytest.raises(DataError, match="NaN"):
        SVI(steps=5, progress=False).fit(model, X, y)
    with pytest.raises(DataError, match="features"):
        SVI(steps=5, progress=False).fit(model, torch.randn(10, 3), torch.randn(10))
    with pytest.raises(DataError, match="y has shape"):
        SVI(steps=5, progress=False).fit(model, torch.randn(10, 2), torch.randn(11))


def test_runaway_fit_stops_with_the_step():
    model = BayesianMLP(2, 1, prior=bp.prior("half-cauchy", "none"))
    with pytest.raises(FitDivergedError, match="step"):
        SVI(steps=300, lr=1e4, progress=False, report_every=50).fit(model, *_data())


def test_same_seed_same_numbers_and_batched_equals_one_at_a_time():
    X, y = _data(R=3)
    prior = bp.prior("inverse-nakagami", "ard")

    def fit(R, seed, Xr, yr):
        model = BayesianMLP(2, 1, hidden=(8,), prior=prior, replicas=R)
        return SVI(steps=150, batch_size=16, progress=False, seed=seed).fit(model, Xr, yr)

    batched = fit(3, [11, 12, 13], X, y).evaluate(X, y)["rmse"]
    single = np.array([fit(1, 11 + r, X[r], y[r]).evaluate(X[r], y[r])["rmse"] for r in range(3)])
    np.testing.assert_allclose(batched, single, rtol=1e-5)
    again = fit(1, 11, X[0], y[0]).evaluate(X[0], y[0])["rmse"]
    assert again == single[0]
    other = fit(1, 99, X[0], y[0]).evaluate(X[0], y[0])["rmse"]
    assert other != single[0]


def test_mini_batch_elbo_is_unbiased_for_the_full_batch_elbo():
    model = BayesianMLP(2, 1, hidden=(5,), prior=bp.prior("rayleigh", "ard"))
    X, y = _data(n=60)
    Xc = model.check_inputs(X)
    yc = model.check_targets(y, Xc)
    q = _variational(model)
    rng = ReplicaRandom([0], model.device)
    with torch.no_grad():
        full = torch.stack([q.elbo(Xc, yc, 60, 1, True, rng) for _ in range(3000)]).squeeze(-1)
        mini = []
        for _ in range(3000):
            idx = rng.batch_indices(60, 15)[0]
            mini.append(q.elbo(Xc[:, idx], yc[:, idx], 60, 1, True, rng))
        mini = torch.stack(mini).squeeze(-1)
    se = math.sqrt(full.var() / 3000 + mini.var() / 3000)
    assert abs(float(full.mean() - mini.mean())) < 4 * se


def test_posterior_predictions_and_pyro_guide():
    X, y = _data(n=50)
    model = BayesianMLP(2, 1, hidden=(10,), prior=bp.prior("half-cauchy", "ard"))
    post = SVI(steps=500, progress=False).fit(model, X[0], y[0])
    pred = post.predict(X[0], num_samples=30)
    assert pred.mean.shape == (50,) and pred.std.shape == (50,) and pred.samples.shape == (30, 50)
    assert (pred.std > 0).all()
    means = post.weight_means()
    assert means["layer0"].shape == (2, 10)
    samples = pyro.infer.Predictive(model, guide=post.guide, num_samples=7)(X[0])
    assert samples["f"].shape == (7, 1, 50, 1)


# ------------------------------------------------------------------ the map guide
def test_map_log_joint_is_pyros_log_density_at_the_point():
    """The map objective is Pyro's log p(y, w, b, tau) at the point estimates, with the EM scales held
    fixed (their prior left out) and the log-Jacobian of tau = e^z added (the mode is taken in log tau)."""
    model = BayesianResNet(2, 1, hidden=(6, 6), prior=bp.prior("inverse-nakagami", "ard-add"), replicas=2)
    X, y = _data(R=2)
    q = _variational(model, guide="map", em=True)
    q.update_scales()
    guide_tr = pyro.poutine.trace(q.pyro_guide).get_trace(X, y)
    model_tr = pyro.poutine.trace(pyro.poutine.replay(model, trace=guide_tr)).get_trace(X, y)
    model_tr.compute_log_prob()
    scales = sum(model_tr.nodes[n]["log_prob"].sum() for n in model_tr.nodes if n.endswith("_scale"))
    tau = model_tr.nodes[model.likelihood.site]["value"]
    Xc = model.check_inputs(X)
    direct = q.log_joint(Xc, model.check_targets(y, Xc), 40)
    assert direct.shape == (2,)
    expected = model_tr.log_prob_sum() - scales + torch.log(tau).sum()
    assert torch.allclose(direct.sum(), expected, rtol=1e-5), (direct.sum(), expected)


def test_map_of_a_linear_model_with_a_normal_prior_is_ridge_regression():
    """No hidden layer, a normal prior and a fixed precision: the MAP is the ridge solution in closed form."""
    g = torch.Generator().manual_seed(3)
    X = torch.randn(80, 3, generator=g)
    y = X @ torch.tensor([1.5, -2.0, 0.5]) + 0.3 + 0.5 * torch.randn(80, generator=g)
    sigma0, tau = 0.4, 4.0
    model = BayesianMLP(3, 1, hidden=(), prior=bp.prior("normal", sigma0=sigma0),
                        likelihood=GaussianLikelihood(precision=tau))
    post = SVI(guide="map", steps=4000, lr=0.02, progress=False).fit(model, X, y)
    A = torch.cat([X, torch.ones(80, 1)], 1).double()  # the bias has its N(0, bias_scale^2) prior
    penalty = torch.diag(torch.tensor([1 / sigma0**2] * 3 + [1 / model.bias_scale**2], dtype=torch.float64))
    exact = torch.linalg.solve(tau * A.T @ A + penalty, tau * A.T @ y.double()).float()
    q = post.variational
    fitted = torch.cat([q.params["output.weight.loc"][0, :, 0], q.params["output.bias.loc"][0]]).detach()
    torch.testing.assert_close(fitted, exact, rtol=1e-3, atol=1e-4)
    pred = post.predict(X[:5], num_samples=4)
    np.testing.assert_array_equal(pred.samples, np.broadcast_to(pred.samples[:1], pred.samples.shape))  # one network
    np.testing.assert_allclose(pred.mean, (A[:5].float() @ exact).numpy(), rtol=1e-3, atol=1e-3)


def test_map_em_reaches_the_em_fixed_point_of_the_student_t_prior():
    """With inverse-gamma variances the closed-form step is EM's E-step E[1/lambda^2 | w] =
    (a + J/2) / (b + sum w^2 / (2 sigma0^2)): at convergence the scales are that of the final weights."""
    noise_prior = bp.prior("inverse-nakagami", "ard", shape=2.0, spread=1.0)
    model = BayesianMLP(2, 1, hidden=(12,), prior=noise_prior)
    X, y = _data(n=80)
    post = SVI(guide="map", scale_updates="em", steps=3000, lr=0.01, progress=False).fit(model, X, y)
    q = post.variational
    a, b, s2 = 2.0, 2.0 / 1.0, noise_prior.sigma0**2
    for layer in model.layers:
        w = q.params[f"{layer.name}.weight.loc"].detach()
        J = w.shape[-1]
        e_inv = (a + J / 2) / (b + (w**2).sum(-1, keepdim=True) / (2 * s2))
        v = torch.exp(q.em_log_var[f"{layer.name}.unit_scale"])
        torch.testing.assert_close(1 / v, e_inv, rtol=2e-3, atol=1e-6)
    assert post.evaluate(X, y)["rmse"] < 0.5 * float(y.std())


def test_map_refuses_what_has_no_map():
    X, y = _data()
    for noise in ("half-cauchy", "rayleigh"):
        with pytest.warns(UserWarning, match="shrinks whole units away"):
            SVI(guide="map", scale_updates="em", steps=5, progress=False).fit(
                BayesianMLP(2, 1, prior=bp.prior(noise, "ard")), X, y)
    with pytest.raises(UnsupportedCombinationError, match="scale_updates='em'"):
        SVI(guide="map", steps=5, progress=False).fit(BayesianMLP(2, 1, prior=bp.prior("half-cauchy", "ard")), X, y)
    with pytest.raises(UnsupportedCombinationError, match="log-uniform"):
        SVI(guide="map", steps=5, progress=False).fit(BayesianMLP(2, 1, prior=bp.prior("log-uniform")), X, y)
    q = _variational(BayesianMLP(2, 1, prior=bp.prior("normal")), guide="map")
    with pytest.raises(InvalidParameterError, match="point estimate"):
        q.elbo_from_samples({}, *_data(), 40)
