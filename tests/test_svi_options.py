"""SVI's options beyond the ELBO's defaults: the KL weight, closed-form scales inside the loss, the mode
in the variance, ARD-ADD's released update, point biases, the uniform start, the softplus variance,
the sign-flip sampler and epochs that drop their last partial batch."""

from __future__ import annotations

import math

import pytest
import torch

import bnn_priors as bp
from bnn_priors.errors import InvalidParameterError
from inference import SVI
from inference.common import ReplicaRandom
from inference.svi import _Settings, _Variational, normal_kl
from inference.training import Shuffled
from models import BayesianResNet, GaussianLikelihood

IG33 = {"shape": 3.0, "spread": 1.0}  # lambda^2 ~ InverseGamma(3, 3)
A, B = 3.0, 3.0


@pytest.fixture(autouse=True)
def _float64():
    """These tests compare objectives to 1e-10: float64, for this module's tests only (a default dtype
    set at import would leak into every test collected with it)."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


def _model(inner="ard", replicas=2, precision=20.0):
    edge = bp.prior("inverse-nakagami", "ard", **IG33)
    mid = bp.prior("inverse-nakagami", inner, **IG33)
    return BayesianResNet(3, 1, hidden=(5, 5), prior=[edge, mid, edge],
                          likelihood=GaussianLikelihood(precision=precision), replicas=replicas)


def _q(model, seed=0, **settings):
    rng = ReplicaRandom([seed + r for r in range(model.replicas)], model.device)
    em = settings.get("scale_updates") is not None
    q = _Variational(model, "mean-field", "weight", em, 0.1, rng, _Settings(**settings))
    g = torch.Generator().manual_seed(seed + 7)
    with torch.no_grad():  # away from the start, so that every parameter matters
        for p in q.params.values():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    return q, rng


def _data(R=2, n=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(R, n, 3, generator=g)
    return X, torch.sin(X[..., :1]) + 0.1 * torch.randn(R, n, 1, generator=g)


def _total_kl(q, scales) -> torch.Tensor:
    """The KL of every weight matrix given ``scales``, from q's moments (biases as q has them)."""
    total = 0.0
    for layer in q.model.layers:
        loc, _, var = q.weight_moments_log(layer)
        total = total + normal_kl(loc, var, layer.prior.weight_std(
            {s.kind: scales[s.name] for s in q.sites[layer.name]})).sum((-2, -1))
    return total + q.bias_kl({layer.name: q.bias_moments(layer) for layer in q.model.layers})


# -------------------------------------------------------------- KL weight
@pytest.mark.parametrize("weight", [0.25, 3.0])
def test_kl_weighted_objective_is_the_log_likelihood_minus_the_weighted_kl(weight):
    model = _model()
    X, y = _data()
    q, _ = _q(model, scale_updates="em")
    q.update_scales()
    scales = {k: torch.exp(0.5 * v) for k, v in q.em_log_var.items()}
    kl = _total_kl(q, scales)
    assert (kl > 1).all()
    # the same draws (a fresh stream of the same seeds) with and without the weight
    full = q.elbo(X, y, 16, 4, True, ReplicaRandom([5, 6], model.device))
    weighted = q.elbo(X, y, 16, 4, True, ReplicaRandom([5, 6], model.device), kl_scale=weight)
    loglik = full + kl
    torch.testing.assert_close(weighted, loglik - weight * kl, rtol=1e-12, atol=1e-9)


def test_per_weight_kl_is_the_number_n_over_p():
    model = _model(replicas=1)
    X, y = _data(R=1, n=40)
    P = 3 * 5 + 5 * 5 + 5 * 1
    common = dict(steps=5, batch_size=8, scale_updates="em", seed=3, progress=False)
    a = SVI(kl_weight="per-weight", **common).fit(model, X[0], y[0])
    b = SVI(kl_weight=40 / P, **common).fit(model, X[0], y[0])
    c = SVI(**common).fit(model, X[0], y[0])
    assert a.info["loss_history"] == b.info["loss_history"]
    assert a.info["loss_history"] != c.info["loss_history"]


# ------------------------------------------------------ scales in the loss
@pytest.mark.parametrize("mode, extra", [("variance", 2), ("log-variance", 0)])
def test_in_loss_scales_are_the_closed_form_mode_and_carry_gradients(mode, extra):
    model = _model("add")
    q, _ = _q(model, scale_updates="in-loss", scale_mode=mode)
    moments = {layer.name: q.weight_moments_log(layer) for layer in model.layers}
    scales = q.scales_in_loss(moments)
    # ARD on the input matrix: v_i = (2b + sum_j E[w_ij^2]) / (2a + J + extra), J = 5 outgoing weights
    loc, _, var = moments["layer0"]
    second = loc**2 + var
    v = (2 * B + second.sum(-1, keepdim=True)) / (2 * A + 5 + extra)
    torch.testing.assert_close(scales["layer0.unit_scale"] ** 2, v)
    # ADD on the hidden-to-hidden matrix: one scale over its 25 weights
    loc1, _, var1 = moments["layer1"]
    v1 = (2 * B + (loc1**2 + var1).sum((-2, -1), keepdim=True)) / (2 * A + 25 + extra)
    torch.testing.assert_close(scales["layer1.layer_scale"] ** 2, v1)
    # gradients flow: d v_i / d mu_ij = 2 mu_ij / (2a + J + extra)
    (grad,) = torch.autograd.grad((scales["layer0.unit_scale"] ** 2).sum(), q.params["layer0.weight.loc"])
    torch.testing.assert_close(grad, 2 * loc.detach() / (2 * A + 5 + extra))
    # and the stored values (for predictions and the posterior's scales) are detached copies
    assert not q.em_log_var["layer0.unit_scale"].requires_grad


def test_em_in_the_variance_is_the_mode_for_two_more_weights():
    model = _model("ard")
    q, _ = _q(model, scale_updates="em", scale_mode="variance")
    q.update_scales()
    loc, var = q.weight_moments(model.layers[0])
    v = (2 * B + (loc**2 + var).sum(-1, keepdim=True)) / (2 * A + 5 + 2)
    torch.testing.assert_close(torch.exp(q.em_log_var["layer0.unit_scale"]), v.detach())


def test_ard_add_released_update_follows_the_released_formula():
    model = _model("ard-add")
    q, _ = _q(model, scale_updates="in-loss", scale_mode="variance", ard_add_update="nalisnick2019")
    moments = {layer.name: q.weight_moments_log(layer) for layer in model.layers}
    scales = q.scales_in_loss(moments)
    loc, _, var = moments["layer1"]
    m = (loc**2 + var).sum(-1, keepdim=True)  # moments per row, (R, 5, 1)
    rows, cols = 5, 5
    # models/utils.py ard_add_scale_update with old_tau = 1 (inverse gamma)
    opt_lambda = torch.sqrt((2 * B * 1.0 + m) / (1.0 * 2 * A + 1.0 * cols + 1.0 * 2))
    opt_tau = torch.sqrt((2 * B + (m / opt_lambda).sum((-2, -1), keepdim=True)) / (cols * rows + 2 + 2 * A))
    std = model.layers[1].prior.weight_std({"unit_scale": scales["layer1.unit_scale"],
                                            "layer_scale": scales["layer1.layer_scale"]})
    torch.testing.assert_close(std, opt_lambda * opt_tau)
    # the coordinate sweep is another update: the layer scale divides by the variances
    q2, _ = _q(model, scale_updates="in-loss", scale_mode="variance")
    sweep = q2.scales_in_loss({layer.name: q2.weight_moments_log(layer) for layer in model.layers})
    assert not torch.allclose(sweep["layer1.layer_scale"], scales["layer1.layer_scale"])


# ------------------------------------------------- start, biases, sampler
def test_uniform_start_softplus_variance_and_point_biases():
    model = _model(replicas=3)
    rng = ReplicaRandom([0, 1, 2], model.device)
    q = _Variational(model, "mean-field", "weight", True, 0.1, rng,
                     _Settings("in-loss", bias="point", init="uniform", variance_param="softplus"))
    assert not any(name.endswith("bias.log_std") for name in q.params)
    for layer in model.layers:
        loc = q.params[f"{layer.name}.weight.loc"]
        rho = q.params[f"{layer.name}.weight.rho"]
        assert loc.abs().max() <= 0.05 and loc.abs().max() > 0.04
        assert rho.min() >= -10 and rho.max() <= -6.5 and rho.max() - rho.min() > 2.5
        torch.testing.assert_close(q.params[f"{layer.name}.bias.loc"], torch.full((3, layer.out_features), 0.1))
        _, var = q.weight_moments(layer)
        torch.testing.assert_close(var, torch.nn.functional.softplus(rho))
        b_loc, b_var = q.bias_moments(layer)
        assert (b_var == 0).all()
    assert q.bias_kl({layer.name: q.bias_moments(layer) for layer in model.layers}) == 0.0


@pytest.mark.parametrize("values", [(-1.0, 1.0), (-1.0, 3.0)])
@pytest.mark.parametrize("fast, compiled", [(False, False), (True, False), (False, True), (True, True)])
def test_sign_flip_sampler_moments(values, fast, compiled):
    """Per point, the pre-activation is ``h mu + b + r_j sum_i h_i s_i sigma_ij`` with ``s``, ``r`` iid on
    the two values (mean ``m``, second moment ``e``): its mean is ``h mu + b + m^2 (h @ sigma)`` and its
    variance ``e ((e - m^2) A + m^2 c^2) - m^4 c^2`` with ``A = (h^2) @ sigma^2`` and ``c = h @ sigma``.
    Signs +-1 give q's local-reparameterization moments; the released {-1, 3} (m = 1, e = 5) move the
    mean by ``h @ sigma`` and give the variance ``20 A + 4 c^2``. The same with the signs from random
    bits (``fast``, 63 a draw) and in the forms of compiled steps (``compiled``: floor, not a comparison)."""
    model = _model(replicas=1)
    q, rng = _q(model, sign_flip=values)
    layer = model.layers[1]
    loc, var = q.weight_moments(layer)
    b_loc, b_var = q.bias_moments(layer)
    h = torch.rand(1, 4, 5, generator=torch.Generator().manual_seed(0)) + 0.5
    with torch.no_grad():
        out = q.sign_flip_linear(h, loc, var, b_loc, torch.zeros_like(b_var), 40000, rng, compiled, fast)
        assert out.shape == (40000, 1, 4, 5)
        m, e = sum(values) / 2, sum(v * v for v in values) / 2
        c, A = h @ var.sqrt(), (h * h) @ var
        mean = h @ loc + b_loc.unsqueeze(-2) + m * m * c
        variance = e * ((e - m * m) * A + m * m * c * c) - m**4 * c * c
        if values == (-1.0, 1.0):
            torch.testing.assert_close(variance, A)
        torch.testing.assert_close(out.mean(0), mean, atol=4 * (variance.max().sqrt() / 200).item(), rtol=0)
        torch.testing.assert_close(out.var(0), variance, rtol=0.05, atol=0)


def test_sign_flip_predictions_use_the_sampler(monkeypatch):
    model = _model(replicas=1)
    X, y = _data(R=1, n=30)
    post = SVI(steps=30, lr=0.01, sign_flip=(-1, 3), bias="point", scale_updates="in-loss", seed=0,
               progress=False).fit(model, X[0], y[0])
    calls = []
    original = _Variational.sign_flip_linear

    def counted(self, h, *args):
        calls.append(h.shape[-1])
        return original(self, h, *args)

    monkeypatch.setattr(_Variational, "sign_flip_linear", counted)
    pred = post.predict(X[0], num_samples=50)
    assert calls == [3, 5, 5]  # every layer's pre-activation, input widths 3, 5, 5
    assert pred.samples.shape[0] == 50 and torch.isfinite(torch.as_tensor(pred.mean)).all()


# --------------------------------------------------------------- epochs
def test_epochs_drop_their_last_partial_batch():
    rng = ReplicaRandom([0, 1], torch.device("cpu"))
    sched = Shuffled(rng, 70, 32, drop_last=True)
    assert sched.steps_per_round == 2 and Shuffled(rng, 70, 32).steps_per_round == 3
    batches = list(sched.round(2))
    rows = torch.cat(batches, dim=1)
    assert [b.shape for b in batches] == [(2, 32), (2, 32)]
    assert all(len(set(r.tolist())) == 64 for r in rows)  # 64 distinct rows per replica, 6 left out
    model = _model(replicas=1)
    X, y = _data(R=1, n=70)
    post = SVI(steps=6, batch_size=32, batches="epochs", drop_last=True, seed=0, progress=False).fit(model, X[0], y[0])
    assert len(post.info["loss_history"]) == 3  # one loss per epoch of two steps


# ------------------------------------------------------------ refusals
@pytest.mark.parametrize("kwargs, match", [
    ({"kl_weight": 0}, "kl_weight must be a positive number or 'per-weight'"),
    ({"kl_weight": "mean"}, "kl_weight"),
    ({"scale_mode": "variance"}, "need scale_updates='em' or 'in-loss'"),
    ({"ard_add_update": "nalisnick2019"}, "need scale_updates"),
    ({"scale_updates": "in-loss", "guide": "map"}, "guide='map' takes scale_updates='em'"),
    ({"variance_param": "softplus", "guide": "variational-dropout"}, "mean-field parametrization"),
    ({"drop_last": True}, "needs batches='epochs'"),
    ({"sign_flip": (1.0,)}, "pair of finite numbers"),
    ({"sign_flip": (-1, math.inf)}, "pair of finite numbers"),
    ({"bias": "none"}, "bias must be one of"),
    ({"init": "glorot"}, "init must be one of"),
])
def test_bad_option_values_are_one_line_errors(kwargs, match):
    with pytest.raises(InvalidParameterError, match=match):
        SVI(**kwargs)

