"""Stochastic variational inference with reparameterized guides.

The Pyro model of the network is the one declaration of the model. Because the
per-step overhead of a generic tracing framework, not arithmetic, decides the speed
of these small networks, this backend evaluates the same ELBO through a direct,
vectorized objective built from the model's layers and priors:

* the expected log-likelihood over ``num_particles`` particles at once (a leading
  particle axis, no Python loop), with the likelihood of a mini-batch scaled to
  the data size;
* weights by the local reparameterization trick (Kingma et al. 2015: sample each
  unit's pre-activation ``N(h mu, h^2 sigma^2)`` instead of the weights, which
  lowers the gradient variance), or by sampling the weights;
* ``KL(q(w) || p(w | lambda))`` in closed form given the sampled scales, and a
  Monte Carlo ``log q(lambda) - log p(lambda)`` for the scales and the precision.

:meth:`SVIPosterior.guide` is the same variational family written as a Pyro guide;
the tests check that the direct objective and Pyro's ``Trace_ELBO`` give the same
value on the same samples.

Guide families (``guide=``):

``mean-field``
    ``q(w) = N(mu, sigma^2)`` per weight and bias; log-normal (or normal, for
    real-valued Gaussian noise) per scale; log-normal for the precision.
``variational-dropout``
    ``q(w) = N(theta, alpha theta^2)`` with ``alpha`` learned per weight
    (``alpha="weight"``, Kingma et al.'s "uncorrelated" case) or per input unit
    (``alpha="unit"``, the "correlated" one, the ARD case).
``map``
    Point estimates (a Delta guide; unlike Pyro's ``AutoDelta`` the precision's
    mode is taken in ``log tau``): weights, biases and the log-precision maximise
    ``log p(y | w, tau) + log p(w | lambda) + log p(b) + log p(log tau)``; the
    scales need ``scale_updates="em"``, which sets each scale in closed form given
    the current weights, so the gradient steps fit the weights under an adaptive
    (ARD/ADD) weight decay. With inverse-Nakagami noise (an inverse-gamma variance
    prior) and one scale per group (ARD or ADD) the closed-form step is exactly the
    E-step ``E[lambda^-2 | w]`` of the EM for the marginal (Student-t) MAP of the
    weights that Nalisnick et al. (2019) use: its scales have a floor ``b / (a +
    J/2)``. For half-Cauchy and Rayleigh noise the step is the joint mode in
    ``(w, log lambda^2)``, whose profile over a group of ``J > 2`` weights grows
    like ``-(J-2)/2 log sum w^2`` at zero: it shrinks whole units away (the backend
    warns). ``num_particles``, ``local_reparam``, ``init_std`` and ``alpha`` do not
    apply to point estimates.
    Predictions use the one network (no weight uncertainty) and the fitted noise.

Under the improper log-uniform prior (``bnn_priors.prior("log-uniform")``) the
KL of either family is the approximation of Molchanov et al. 2017 ("Variational
Dropout Sparsifies Deep Neural Networks", eq. 14):
``-KL ≈ k1 sigmoid(k2 + k3 log alpha) - 0.5 log(1 + 1/alpha) - k1`` with
``k1, k2, k3 = 0.63576, 1.87320, 1.48695`` and ``alpha = sigma^2 / mu^2``.

``scale_updates="em"`` replaces the variational scales by point estimates set in
closed form at every step (type-II MAP, see :meth:`bnn_priors.NoiseModel.map_variance`;
the noise models with such an update say so in ``has_closed_form_update``).

Objective, start and sampler (options; the defaults are the ELBO above). They exist so
that published code can be followed setting by setting (the ``nalisnick2019-released``
preset of the benchmark runner uses them all) and work with any model and prior:

``kl_weight``
    ``w`` in the loss ``-(E[log p(y | w)] - w KL) / N``: 1 is the ELBO; ``"per-weight"``
    is ``w = N / P`` (``P`` the weights of the weight matrices, biases not counted),
    i.e. the mean log-likelihood per point minus the KL averaged over the weights.
    Every KL term is weighted (weights, scales, precision, biases).
``scale_updates="in-loss"``
    The closed-form scales of ``"em"`` computed from q's current moments inside the
    objective at every step, so that the gradients of the weights' parameters flow
    through them (``"em"`` sets them before the step, as constants).
``scale_mode``
    ``"log-variance"`` (default) takes the mode of the scale's objective in ``log v``;
    ``"variance"`` in ``v``, without the Jacobian: the update for ``J + 2`` weights
    (with an inverse-gamma(a, b) variance prior ``(2b + S) / (2a + J + 2)``).
``ard_add_update``
    ``"sweep"`` (default): a coordinate sweep, each scale of an ARD-ADD layer given the
    other's current value. ``"nalisnick2019"``: the released ``ard_add_scale_update``
    of Nalisnick et al.: the unit scales computed with the layer scale taken as 1, then
    the layer scale from the moments divided by the unit scales' standard deviations.
``bias``
    ``"variational"`` (default: ``q(b)`` Gaussian with the model's ``N(0, bias_scale^2)``
    prior) or ``"point"``: plain parameters without a prior or a KL (maximum likelihood).
``init``, ``variance_param``
    ``init="uniform"`` starts the weight means at ``U(-0.05, 0.05)``, the variances at
    ``softplus(rho)`` with ``rho ~ U(-10, -6.5)`` and the biases at 0.1;
    ``variance_param="softplus"`` makes ``rho`` (variance ``softplus(rho)``) the
    parameter Adam moves instead of ``log sigma`` (mean-field only).
``sign_flip=(a, b)``
    No Gaussian draw: each pre-activation is ``h mu + b + ((h * s) @ sigma) * r`` with
    ``s`` (per point and input unit) and ``r`` (per point and output unit) ``a`` or ``b``
    with probability 1/2, in training and in predictions. ``(-1, 1)`` has q's mean and
    variance per pre-activation; ``(-1, 3)`` is what the released code draws. ArviZ
    conversion still draws weights from ``q``.
``batches="epochs"``, ``drop_last``
    A fresh shuffle every epoch cut into batches of ``batch_size`` (a round of the
    training loop is an epoch), the last partial batch dropped with ``drop_last``;
    the default ``"random"`` draws a fresh random batch every step.

Faster steps (``fast`` and ``compile``; both off by default, and the default stays bit for bit what it
was, so committed results rerun exactly):

``fast=True``
    The sign flips come from random bits (:meth:`~inference.common.ReplicaRandom.bits`: 63 fair
    bits per generator call, where the default takes a uniform per sign) and Adam uses torch's
    fused update: the same law of the flips, other numbers for the same seed, other rounding
    (tested: moments, and fits that learn alike). A replica in a batch still draws the numbers
    it draws alone (the batch's arithmetic rounds as by default); a checkpoint remembers the
    setting and refuses the other. Without ``sign_flip`` only the optimizer changes. Predictions
    draw as by default.
``compile=True``
    The objective and its gradient are compiled by ``torch.compile`` (static shapes, a graph per
    mini-batch shape), checked at their first call against an eager run of the same code, with a
    warning and eager steps after a failure or a disagreement
    (:class:`inference.compiled.CheckedCompile`; that check catches the compiler's errors, and the
    tests compare whole compiled fits with default ones). The objective has no side effects: in-loss
    scales take the last step's values as inputs and return the new ones. The
    per-replica generators cannot be traced, so the objective's draws are recorded once per
    mini-batch shape (:mod:`inference.replayed_draws`), made on the same streams before each
    compiled call and replayed inside it: the random numbers are the eager objective's. The
    compiled objective uses forms that inductor compiles well, the same values up to rounding:
    one ``bmm`` per product over the replicas (:func:`replica_matmul`), sign flips by ``floor``
    instead of a comparison, and relu as ``(x + |x|) / 2`` (inductor's CPU code stores boolean
    masks a byte at a time; on the released code's network they took most of a compiled step;
    its gradient at exactly 0 is 1/2, and an activation of -inf, a fit that has diverged, gives
    NaN). A checkpoint continues across ``compile`` settings (the numbers move by rounding).
    On the ``nalisnick2019-released`` preset's network, ``fast=True, compile=True`` runs a
    step in about 0.4 of the default's time (``benchmarks/replica_throughput.py``, ``released``
    rows, the marginal rate of long fits); compiling takes seconds per fit (tracing, and inductor's
    first compilation of a shape, which its cache keeps for later fits), so it pays for long fits.

The backend asks each layer's prior what it is (its ``noise``, whether it is
``proper``, its ``weight_std`` given the scales) and never tests its type; a prior
that is not Gaussian given its scales brings its KL to a Gaussian ``q(w)`` through
:func:`register_weight_kl`, as Pyro's ``register_kl`` does for pairs of distributions.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from torch.distributions import constraints

from bnn_priors.errors import InvalidParameterError
from bnn_priors.noise_models import NOISE_MODELS, NoiseModel
from bnn_priors.scale_mixture import LogUniformPrior, WeightPrior
from inference.common import (
    InferenceBackend,
    Posterior,
    ReplicaRandom,
    check_bool,
    check_positive_float,
    check_positive_int,
    unsupported,
)
from inference.compiled import CheckedCompile
from inference.replayed_draws import DrawPlan, RecordingRandom, ReplayRandom
from inference.training import (
    Checkpoint,
    FullBatch,
    RandomSubsets,
    Shuffled,
    adam,
    train,
)
from models.networks import BayesianNetwork, Layer

GUIDES = ("mean-field", "variational-dropout", "map")
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
_K1, _K2, _K3 = 0.63576, 1.87320, 1.48695
#: ``init="uniform"``: weight means ``U(-0.05, 0.05)``, ``rho ~ U(-10, -6.5)`` with variance ``softplus(rho)``,
#: biases 0.1 (``init_bnn`` of Nalisnick et al.'s released ``models/utils.py``).
_UNIFORM_LOC, _UNIFORM_RHO, _UNIFORM_BIAS = 0.05, (-10.0, -6.5), 0.1
SCALE_UPDATES = (None, "em", "in-loss")
SCALE_MODES = ("log-variance", "variance")
ARD_ADD_UPDATES = ("sweep", "nalisnick2019")
BIASES = ("variational", "point")
INITS = ("normal", "uniform")
VARIANCE_PARAMS = ("log-std", "softplus")
BATCHES = ("random", "epochs")
#: Signs per draw of ``SVI(fast=True)``'s sign flips (:meth:`ReplicaRandom.bits` has 63 random bits).
_SIGN_BITS = 63


def log_uniform_kl(log_alpha: torch.Tensor) -> torch.Tensor:
    """Molchanov et al. (2017) approximation of ``KL(N(mu, alpha mu^2) || log-uniform)``, elementwise."""
    return -(_K1 * torch.sigmoid(_K2 + _K3 * log_alpha) - 0.5 * torch.nn.functional.softplus(-log_alpha) - _K1)


def normal_kl(loc: torch.Tensor, var: torch.Tensor, prior_std: torch.Tensor | float, log_var=None) -> torch.Tensor:
    """``KL(N(loc, var) || N(0, prior_std^2))``, elementwise (``log_var`` saves a log when known)."""
    log_var = torch.log(var) if log_var is None else log_var
    if torch.is_tensor(prior_std):
        prior_var = prior_std**2
        return 0.5 * ((var + loc**2) / prior_var - 1.0 - log_var + torch.log(prior_var))
    prior_var = float(prior_std) ** 2
    return 0.5 * ((var + loc**2) / prior_var - 1.0 - log_var + math.log(prior_var))


#: ``rule(prior, loc, log_var, var) -> KL(N(loc, var) || p(w))`` elementwise, per weight-prior type.
WeightKL = Callable[[WeightPrior, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
_WEIGHT_KL: dict[type, WeightKL] = {}


def register_weight_kl(prior_type: type):
    """Register the KL of a Gaussian ``q(w)`` to the weight priors of ``prior_type`` (and its subclasses).

    For priors that are not ``N(0, weight_std(scales)^2)`` given their scales (an
    improper prior); the others need no rule: their KL is :func:`normal_kl`. Used as
    a decorator, like Pyro's ``register_kl``.
    """

    def decorator(rule: WeightKL) -> WeightKL:
        _WEIGHT_KL[prior_type] = rule
        return rule

    return decorator


def weight_kl_rule(prior: WeightPrior) -> WeightKL | None:
    """The rule registered for the nearest class of ``prior`` in its hierarchy, or ``None``."""
    for cls in type(prior).__mro__:
        if cls in _WEIGHT_KL:
            return _WEIGHT_KL[cls]
    return None


@register_weight_kl(LogUniformPrior)
def _log_uniform_weight_kl(prior, loc, log_var, var):
    """Molchanov et al.'s approximation, with ``alpha = sigma^2 / mu^2`` per weight."""
    return log_uniform_kl(log_var - torch.log(loc**2))


def replica_matmul(h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``h @ w`` for activations ``h`` of shape ``(R, n, d)`` or ``(S, R, n, d)`` and weights ``w`` of shape
    ``(R, d, k)``: one ``bmm`` over the replicas of ``(S n, d)`` rows each (``torch.matmul`` broadcasts
    ``w`` over the particles, copying it to ``S R`` small products; inductor's CPU code for that is
    several times slower), and for one output unit a product and a sum over the inputs. The values of
    ``h @ w``, rounded differently; ``w`` with a particle axis goes to ``torch.matmul``."""
    if w.dim() != 3:
        return h @ w
    if w.shape[-1] == 1:
        return (h * w.transpose(-1, -2)).sum(-1, keepdim=True)
    if h.dim() == 3:
        return torch.bmm(h, w)
    if h.dim() != 4:
        return h @ w
    S, R, n, d = h.shape
    out = torch.bmm(h.transpose(0, 1).reshape(R, S * n, d), w)
    return out.view(R, S, n, w.shape[-1]).transpose(0, 1)


@dataclass(frozen=True)
class _ScaleSite:
    """One scale tensor of a layer, e.g. ``layer0.unit_scale`` of shape ``(in, 1)``.

    ``prior`` is the noise distribution ``p(lambda)`` on the model's device, built once.
    """

    name: str
    layer: str
    kind: str
    shape: tuple[int, int]
    noise: NoiseModel
    prior: dist.TorchDistribution
    positive: bool


@dataclass(frozen=True)
class _Settings:
    """The choices of :class:`SVI` beyond the guide that change the objective, the start or the sampler
    (each the option of the same name; the defaults are the backend's)."""

    scale_updates: str | None = None
    scale_mode: str = "log-variance"
    ard_add_update: str = "sweep"
    bias: str = "variational"
    init: str = "normal"
    variance_param: str = "log-std"
    sign_flip: tuple[float, float] | None = None


class _Variational:
    """Parameters of the variational family and the direct ELBO."""

    def __init__(self, model: BayesianNetwork, guide: str, alpha: str, em: bool, init_std: float, rng: ReplicaRandom,
                 settings: _Settings = _Settings()):
        self.model, self.guide, self.alpha, self.em = model, guide, alpha, em
        self.settings = settings
        #: the closed-form scales computed inside the objective, differentiated through (``"in-loss"``)
        self.in_loss = settings.scale_updates == "in-loss"
        uniform = settings.init == "uniform"
        dev, dt, R = model.device, model.dtype, model.replicas
        self.params: dict[str, torch.Tensor] = {}
        self.em_log_var: dict[str, torch.Tensor] = {}
        self.sites: dict[str, list[_ScaleSite]] = {}

        def param(name, value):
            self.params[name] = value.to(device=dev, dtype=dt).requires_grad_(True)

        for layer in model.layers:
            shape = (R, layer.in_features, layer.out_features)
            if uniform:  # U(-0.05, 0.05)
                init = (2 * rng.rand(shape[1:], dt) - 1) * _UNIFORM_LOC
            else:
                init = rng.randn(shape[1:], dt) / math.sqrt(layer.in_features)
            param(f"{layer.name}.weight.loc", init)
            if guide == "mean-field" and (uniform or settings.variance_param == "softplus"):
                # rho with variance softplus(rho): U(-10, -6.5), or the value that gives init_std
                if uniform:
                    rho = _UNIFORM_RHO[0] + (_UNIFORM_RHO[1] - _UNIFORM_RHO[0]) * rng.rand(shape[1:], dt)
                else:
                    rho = torch.full(shape, math.log(math.expm1(init_std**2)))
                if settings.variance_param == "softplus":
                    param(f"{layer.name}.weight.rho", rho)
                else:
                    param(f"{layer.name}.weight.log_std", 0.5 * torch.log(torch.nn.functional.softplus(rho)))
            elif guide == "mean-field":
                param(f"{layer.name}.weight.log_std", torch.full(shape, math.log(init_std)))
            elif guide == "variational-dropout":
                a_shape = shape if alpha == "weight" else (R, layer.in_features, 1)
                param(f"{layer.name}.weight.log_alpha", torch.full(a_shape, 2 * math.log(init_std)))
            if uniform:
                param(f"{layer.name}.bias.loc", torch.full((R, layer.out_features), _UNIFORM_BIAS))
            else:
                param(f"{layer.name}.bias.loc", torch.zeros(R, layer.out_features))
            if guide != "map" and settings.bias == "variational":
                param(f"{layer.name}.bias.log_std", torch.full((R, layer.out_features), math.log(init_std)))
            prior = layer.prior
            sites = []
            for kind, s in prior.scale_shapes(layer.in_features, layer.out_features).items():
                noise = prior.noise.noise(dev, dt)
                site = _ScaleSite(
                    f"{layer.name}.{kind}", layer.name, kind, s, prior.noise, noise,
                    positive=noise.support is not constraints.real,
                )
                sites.append(site)
                center = _noise_center(prior.noise)
                if em:
                    self.em_log_var[site.name] = torch.full((R, *s), 2 * math.log(abs(center)), device=dev, dtype=dt)
                else:
                    loc0 = math.log(center) if site.positive else center
                    param(f"{site.name}.loc", torch.full((R, *s), loc0))
                    param(f"{site.name}.log_std", torch.full((R, *s), math.log(0.1)))
            self.sites[layer.name] = sites
        lik = model.likelihood
        if lik.learned:
            param("precision.loc", torch.full((R,), math.log(lik.concentration / lik.rate)))
            if guide != "map":
                param("precision.log_std", torch.full((R,), math.log(0.1)))

    # ------------------------------------------------------------- moments of q(w)
    def weight_moments(self, layer: Layer) -> tuple[torch.Tensor, torch.Tensor]:
        loc, _, var = self.weight_moments_log(layer)
        return loc, var

    def weight_moments_log(self, layer: Layer) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean, log-variance and variance of ``q(w)`` (for ``map``: the point, ``None`` and zeros)."""
        loc = self.params[f"{layer.name}.weight.loc"]
        if self.guide == "map":
            return loc, None, torch.zeros_like(loc)
        if self.guide == "mean-field" and self.settings.variance_param == "softplus":
            var = torch.nn.functional.softplus(self.params[f"{layer.name}.weight.rho"])
            return loc, torch.log(var), var
        if self.guide == "mean-field":
            log_var = 2 * self.params[f"{layer.name}.weight.log_std"]
        else:
            log_var = self.params[f"{layer.name}.weight.log_alpha"] + torch.log(loc**2)
        return loc, log_var, torch.exp(log_var)

    def bias_moments(self, layer: Layer) -> tuple[torch.Tensor, torch.Tensor]:
        loc = self.params[f"{layer.name}.bias.loc"]
        if self.guide == "map" or self.settings.bias == "point":
            return loc, torch.zeros_like(loc)
        return loc, torch.exp(2 * self.params[f"{layer.name}.bias.log_std"])

    # ---------------------------------------------------------------- scales, tau
    def _site_q(self, site: _ScaleSite) -> dist.TorchDistribution:
        loc, std = self.params[f"{site.name}.loc"], self.params[f"{site.name}.log_std"].exp()
        return dist.LogNormal(loc, std) if site.positive else dist.Normal(loc, std)

    def sample_scales(self, S: int, rng: ReplicaRandom) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Scales ``{site: (S, R, *shape)}`` and ``log q - log p`` of the draws, shape ``(S, R)``."""
        R = self.model.replicas
        kl = torch.zeros((S, R), device=self.model.device, dtype=self.model.dtype)
        values: dict[str, torch.Tensor] = {}
        for sites in self.sites.values():
            for site in sites:
                if self.em:
                    values[site.name] = torch.exp(0.5 * self.em_log_var[site.name]).expand(S, R, *site.shape)
                    continue
                loc, log_std = self.params[f"{site.name}.loc"], self.params[f"{site.name}.log_std"]
                eps = rng.randn((S, *site.shape), loc.dtype, axis=1)
                z = loc + log_std.exp() * eps
                value = z.exp() if site.positive else z
                # log q(lambda): the Normal density of z (plus the log-Jacobian -z of lambda = e^z).
                log_q = -0.5 * eps**2 - log_std - _HALF_LOG_2PI - (z if site.positive else 0.0)
                values[site.name] = value
                kl = kl + (log_q - site.prior.log_prob(value)).sum((-2, -1))
        return values, kl

    def sample_precision(self, S: int, rng: ReplicaRandom) -> tuple[torch.Tensor, torch.Tensor]:
        lik, R = self.model.likelihood, self.model.replicas
        dev, dt = self.model.device, self.model.dtype
        if not lik.learned:
            return torch.full((S, R), lik.precision, device=dev, dtype=dt), torch.zeros((S, R), device=dev, dtype=dt)
        if self.guide == "map":
            return self.params["precision.loc"].exp().expand(S, R), torch.zeros((S, R), device=dev, dtype=dt)
        loc, log_std = self.params["precision.loc"], self.params["precision.log_std"]
        eps = rng.randn((S,), dt, axis=1)
        z = loc + log_std.exp() * eps
        tau = z.exp()
        log_q = -0.5 * eps**2 - log_std - _HALF_LOG_2PI - z
        a, b = lik.concentration, lik.rate
        log_p = a * math.log(b) - math.lgamma(a) + (a - 1) * z - b * tau  # Gamma(a, b) density at tau = e^z
        return tau, log_q - log_p

    def prior_std(self, layer: Layer, scales: dict[str, torch.Tensor]) -> torch.Tensor | float:
        return layer.prior.weight_std({s.kind: scales[s.name] for s in self.sites[layer.name]})

    def weight_kl(self, layer: Layer, scales: dict[str, torch.Tensor], moments) -> torch.Tensor:
        """``KL(q(w) || p(w | scales))`` summed over the matrix: shape ``(S, R)`` or ``(R,)``."""
        loc, log_var, var = moments
        rule = weight_kl_rule(layer.prior)
        if rule is not None:
            return rule(layer.prior, loc, log_var, var).sum((-2, -1))
        return normal_kl(loc, var, self.prior_std(layer, scales), log_var).sum((-2, -1))

    def bias_kl(self, bias_moments) -> torch.Tensor:
        total = 0.0
        if self.settings.bias == "point":  # plain parameters: no prior, no KL
            return total
        for loc, var in bias_moments.values():
            total = total + normal_kl(loc, var, self.model.bias_scale).sum(-1)
        return total

    # ------------------------------------------------------------------ the ELBO
    def elbo(self, X, y, data_size: int, S: int, local_reparam: bool, rng: ReplicaRandom,
             kl_scale: float = 1.0, compiled: bool = False, fast: bool = False,
             em_state: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """A Monte Carlo estimate of the ELBO per replica, shape ``(R,)`` (mean over particles).

        ``kl_scale`` multiplies every KL term (weights, scales, precision, biases):
        1 is the ELBO, another value the KL-weighted objective of ``SVI(kl_weight=...)``.
        ``compiled``: the forms that compile well (:func:`replica_matmul`, sign flips without a
        boolean tensor, the activation without a mask): the same draws and the same values up to
        rounding, for ``SVI(compile=True)``. ``fast``: the sign flips from random bits
        (:meth:`ReplicaRandom.bits`, 63 signs a draw), for ``SVI(fast=True)``: the same law, other draws.
        ``em_state``: where in-loss scales keep their values (:meth:`scales_in_loss`'s ``state``).
        """
        mm = replica_matmul if compiled else torch.matmul
        scales, kl_scales = self.sample_scales(S, rng)
        tau, kl_tau = self.sample_precision(S, rng)

        moments = {layer.name: self.weight_moments_log(layer) for layer in self.model.layers}
        bias_moments = {layer.name: self.bias_moments(layer) for layer in self.model.layers}
        if self.in_loss:
            scales = self.scales_in_loss(moments, em_state)

        def linear(layer: Layer, h: torch.Tensor) -> torch.Tensor:
            loc, _, var = moments[layer.name]
            b_loc, b_var = bias_moments[layer.name]
            if self.settings.sign_flip is not None:
                return self.sign_flip_linear(h, loc, var, b_loc, b_var, S, rng, compiled, fast)
            if local_reparam:
                mean = mm(h, loc) + b_loc.unsqueeze(-2)
                std = (mm(h * h, var) + b_var.unsqueeze(-2)).sqrt()
                return mean + std * rng.randn((S, *mean.shape[-2:]), mean.dtype, axis=1)
            w = loc + var.sqrt() * rng.randn((S, *loc.shape[1:]), loc.dtype, axis=1)
            b = b_loc + b_var.sqrt() * rng.randn((S, *b_loc.shape[1:]), loc.dtype, axis=1)
            return h @ w + b.unsqueeze(-2)

        f = self.model.forward_with(X, linear, mask_free=compiled)
        loglik = self.model.likelihood.log_prob(f, y, tau) * (data_size / X.shape[-2])
        kl_w = sum(self.weight_kl(layer, scales, moments[layer.name]) for layer in self.model.layers)
        if kl_scale != 1.0:
            elbo = loglik - kl_scale * (kl_w + kl_scales + kl_tau)
            return elbo.mean(0) - kl_scale * self.bias_kl(bias_moments)
        elbo = loglik - kl_w - kl_scales - kl_tau
        return elbo.mean(0) - self.bias_kl(bias_moments)

    def sign_flip_linear(self, h, loc, var, b_loc, b_var, S: int, rng: ReplicaRandom,
                         compiled: bool = False, fast: bool = False) -> torch.Tensor:
        """The pre-activation under the sign-flip sampler of ``SVI(sign_flip=(a, b))``:
        ``h mu + b + ((h * s) @ sigma) * r`` with ``s`` (per particle, point and input unit) and ``r``
        (per particle, point and output unit) each ``a`` or ``b`` with probability 1/2; a bias with
        spread gets a Gaussian draw per particle. ``compiled``, ``fast``: as :meth:`elbo`'s."""
        low, high = self.settings.sign_flip
        n, d_in, d_out = h.shape[-2], loc.shape[-2], loc.shape[-1]
        mm = replica_matmul if compiled else torch.matmul
        if fast:  # 63 signs per draw: bit j of a row's words is sign j of that (particle, point); high where 0
            d = d_in + d_out
            words = rng.bits((S, n, -(-d // _SIGN_BITS)), axis=1)
            shifts = torch.arange(_SIGN_BITS, device=words.device)
            bit = ((words.unsqueeze(-1) >> shifts) & 1).flatten(-2)[..., :d]
            flips = bit.to(loc.dtype) * (low - high) + high
        else:  # one uniform per sign, s and r in one draw: high where u < 1/2, else low
            u = rng.rand((S, n, d_in + d_out), loc.dtype, axis=1)
            if compiled:  # floor(2u) is 0 where u < 1/2, else 1: the same flips, no boolean tensor
                flips = torch.floor(u * 2.0) * (low - high) + high
            else:
                flips = (u < 0.5).to(u.dtype).mul_(high - low).add_(low)
        s, r = flips[..., :d_in], flips[..., d_in:]
        mean = mm(h, loc) + b_loc.unsqueeze(-2)
        out = mean + mm(h * s, var.sqrt()) * r
        if self.settings.bias == "variational" and self.guide != "map":
            out = out + (b_var.sqrt() * rng.randn((S, *b_loc.shape[1:]), loc.dtype, axis=1)).unsqueeze(-2)
        return out

    def point_params(self) -> dict[str, torch.Tensor]:
        """The ``map`` guide's network: ``{"<layer>.weight": (R, in, out), "<layer>.bias": (R, out)}``."""
        params = {}
        for layer in self.model.layers:
            for part in ("weight", "bias"):
                params[f"{layer.name}.{part}"] = self.params[f"{layer.name}.{part}.loc"]
        return params

    def log_joint(self, X, y, data_size: int) -> torch.Tensor:
        """The ``map`` objective per replica, shape ``(R,)``: ``log p(y | w, tau)`` (a mini-batch scaled
        to ``data_size``) ``+ log p(w | lambda) + log p(b) + log p(log tau)`` at the point estimates, the
        scales held at their closed-form values."""
        model = self.model
        scales = {name: torch.exp(0.5 * v) for name, v in self.em_log_var.items()}
        params = self.point_params()
        total = 0.0
        for layer in model.layers:
            w, b = params[f"{layer.name}.weight"], params[f"{layer.name}.bias"]
            std = self.prior_std(layer, scales)
            log_std = torch.log(std) if torch.is_tensor(std) else math.log(std)
            total = total + (-0.5 * (w / std) ** 2 - log_std - _HALF_LOG_2PI).sum((-2, -1))
            total = total + (-0.5 * (b / model.bias_scale) ** 2 - math.log(model.bias_scale) - _HALF_LOG_2PI).sum(-1)
        lik = model.likelihood
        if lik.learned:
            z = self.params["precision.loc"]
            tau = z.exp()
            a, r = lik.concentration, lik.rate
            # the Gamma(a, r) density of tau = e^z times the Jacobian e^z: the mode is taken in log tau
            total = total + a * math.log(r) - math.lgamma(a) + a * z - r * tau
        else:
            tau = torch.tensor(lik.precision, device=model.device, dtype=model.dtype)
        f = model.forward_params(X, params)
        return total + lik.log_prob(f, y, tau) * (data_size / X.shape[-2])

    def elbo_from_samples(self, samples: dict[str, torch.Tensor], X, y, data_size: int) -> torch.Tensor:
        """``log p(y, z) - log q(z)`` per replica for given draws ``z`` named as the Pyro sites."""
        model, R = self.model, self.model.replicas
        if self.guide == "map":
            raise InvalidParameterError("the map guide is a point estimate: it has no Monte Carlo ELBO (use log_joint)")
        total = torch.zeros(R, device=model.device, dtype=model.dtype)
        scales: dict[str, torch.Tensor] = {}
        for sites in self.sites.values():
            for site in sites:
                value = samples[site.name]
                scales[site.name] = value
                if not self.em:
                    total = total + site.prior.log_prob(value).sum((-2, -1))
                    total = total - self._site_q(site).log_prob(value).sum((-2, -1))
        params = {}
        for layer in model.layers:
            w, b = samples[f"{layer.name}.weight"], samples[f"{layer.name}.bias"]
            params[f"{layer.name}.weight"], params[f"{layer.name}.bias"] = w, b
            loc, var = self.weight_moments(layer)
            total = total - dist.Normal(loc, var.sqrt()).log_prob(w).sum((-2, -1))
            if not layer.prior.proper:
                raise InvalidParameterError(f"the {layer.prior.describe()} prior is improper: its ELBO has no Monte Carlo form")
            std = self.prior_std(layer, scales)
            std = std if torch.is_tensor(std) else torch.tensor(std, device=w.device, dtype=w.dtype)
            total = total + dist.Normal(torch.zeros_like(w), std.expand_as(w)).log_prob(w).sum((-2, -1))
            if self.settings.bias == "variational":  # a plain parameter has no prior and no q term
                b_loc, b_var = self.bias_moments(layer)
                total = total - dist.Normal(b_loc, b_var.sqrt()).log_prob(b).sum(-1)
                total = total + dist.Normal(0.0, model.bias_scale).log_prob(b).sum(-1)
        lik = model.likelihood
        if lik.learned:
            tau = samples[lik.site]
            total = total + lik.precision_prior(tau.device, tau.dtype).log_prob(tau)
            total = total - dist.LogNormal(self.params["precision.loc"], self.params["precision.log_std"].exp()).log_prob(tau)
        else:
            tau = torch.tensor(lik.precision, device=model.device, dtype=model.dtype)
        f = model.forward_params(X, params)
        return total + lik.log_prob(f, y, tau) * (data_size / X.shape[-2])

    # ------------------------------------------------------- closed-form updates
    @torch.no_grad()
    def update_scales(self) -> None:
        """One coordinate-ascent sweep of the closed-form scale updates (:meth:`bnn_priors.NoiseModel.map_variance`)."""
        for layer in self.model.layers:
            if not self.sites[layer.name]:
                continue
            loc, var = self.weight_moments(layer)
            self._sweep(layer, loc**2 + var, self.em_log_var)  # E_q[w^2], (R, in, out)

    def scales_in_loss(self, moments, state: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """``scale_updates="in-loss"``: the closed-form scales as functions of q's current moments, with
        their gradients, shape ``(R, *site shape)``. A sweep over two scales of a layer (ARD-ADD) takes the
        other one's value of the previous step where it has no new one yet; the values are kept (detached)
        for that and for :meth:`SVIPosterior.scales`, in ``state`` (default: ``em_log_var``; a compiled
        objective passes a dict of its own and returns the values, so that it has no side effects)."""
        state = self.em_log_var if state is None else state
        log_var = dict(state)
        for layer in self.model.layers:
            if self.sites[layer.name]:
                loc, _, var = moments[layer.name]
                self._sweep(layer, loc**2 + var, log_var)
        state.update({k: v.detach() for k, v in log_var.items()})
        return {k: torch.exp(0.5 * v) for k, v in log_var.items()}

    def _sweep(self, layer: Layer, second: torch.Tensor, log_var: dict[str, torch.Tensor]) -> None:
        """Set ``log_var`` of every scale of ``layer`` in closed form from ``second = E_q[w^2]``, in order.

        ``scale_mode="variance"`` takes the mode in ``v`` instead of ``log v``: the
        objective of :meth:`bnn_priors.NoiseModel.map_variance` without its Jacobian
        ``+ log v``, which is that objective for ``J + 2`` weights. With
        ``ard_add_update="nalisnick2019"`` a layer with unit and layer scales follows
        Nalisnick et al.'s released ``ard_add_scale_update``: the unit scales as if
        the layer scale were 1, then the layer scale from the moments divided by the
        unit scales' standard deviations ``lambda_i`` (not their variances).
        """
        sites = self.sites[layer.name]
        extra = 2 if self.settings.scale_mode == "variance" else 0
        sigma0 = layer.prior.sigma0
        if self.settings.ard_add_update == "nalisnick2019" and {s.kind for s in sites} == {"unit_scale", "layer_scale"}:
            unit, whole = sorted(sites, key=lambda s: s.kind != "unit_scale")
            rows = second.sum(-1, keepdim=True)  # (R, in, 1)
            v_unit = unit.noise.map_variance(rows, second.shape[-1] + extra, sigma0).clamp_min(1e-30)
            S = (rows / v_unit.sqrt()).sum((-2, -1), keepdim=True)
            v_layer = whole.noise.map_variance(S, second.shape[-2] * second.shape[-1] + extra, sigma0).clamp_min(1e-30)
            log_var[unit.name], log_var[whole.name] = torch.log(v_unit), torch.log(v_layer)
            return
        for site in sites:
            others = torch.ones((), device=second.device, dtype=second.dtype)
            for other in sites:
                if other is not site:
                    others = others * torch.exp(log_var[other.name])
            scaled = second / others
            dims = [d for d, n in zip((-2, -1), site.shape) if n == 1]
            S = scaled.sum(dims, keepdim=True) if dims else scaled
            J = second.shape[-2] * second.shape[-1] // (site.shape[0] * site.shape[1])
            v = site.noise.map_variance(S, J + extra if extra else J, sigma0).clamp_min(1e-30)
            log_var[site.name] = torch.log(v)

    # ------------------------------------------------------------- the posterior
    @torch.no_grad()
    @pyro.validation_enabled(False)
    def sample_functions(self, X: torch.Tensor, S: int, rng: ReplicaRandom) -> tuple[torch.Tensor, torch.Tensor]:
        if self.guide == "map":  # one network: S copies of its output
            tau, _ = self.sample_precision(S, rng)
            f = self.model.forward_params(X, self.point_params())
            return f.expand(S, *f.shape), tau
        self.sample_scales(S, rng)  # unused draws, kept so that the random streams stay as they were
        tau, _ = self.sample_precision(S, rng)
        if self.settings.sign_flip is not None:  # predictions with the sampler of training
            moments = {layer.name: (self.weight_moments(layer), self.bias_moments(layer)) for layer in self.model.layers}

            def linear(layer: Layer, h: torch.Tensor) -> torch.Tensor:
                (loc, var), (b_loc, b_var) = moments[layer.name]
                return self.sign_flip_linear(h, loc, var, b_loc, b_var, S, rng)

            return self.model.forward_with(X, linear), tau
        params = {}
        for layer in self.model.layers:
            loc, var = self.weight_moments(layer)
            b_loc, b_var = self.bias_moments(layer)
            eps = rng.randn((S, *loc.shape[1:]), loc.dtype, axis=1)
            params[f"{layer.name}.weight"] = loc + var.sqrt() * eps
            eps_b = rng.randn((S, *b_loc.shape[1:]), loc.dtype, axis=1)
            params[f"{layer.name}.bias"] = b_loc + b_var.sqrt() * eps_b
        return self.model.forward_params(X, params), tau

    def pyro_guide(self, X=None, y=None, data_size=None):
        """The variational family as a Pyro guide (same sites as the model)."""
        model = self.model
        with pyro.plate("replicas", model.replicas, dim=-1):
            for layer in model.layers:
                for site in self.sites[layer.name]:
                    if self.em:
                        pyro.sample(site.name, dist.Delta(torch.exp(0.5 * self.em_log_var[site.name]), event_dim=2))
                    else:
                        pyro.sample(site.name, self._site_q(site).to_event(2))
                loc, var = self.weight_moments(layer)
                b_loc, b_var = self.bias_moments(layer)
                if self.guide == "map":
                    pyro.sample(f"{layer.name}.weight", dist.Delta(loc, event_dim=2))
                    pyro.sample(f"{layer.name}.bias", dist.Delta(b_loc, event_dim=1))
                    continue
                pyro.sample(f"{layer.name}.weight", dist.Normal(loc, var.sqrt()).to_event(2))
                if self.settings.bias == "point":
                    pyro.sample(f"{layer.name}.bias", dist.Delta(b_loc, event_dim=1))
                else:
                    pyro.sample(f"{layer.name}.bias", dist.Normal(b_loc, b_var.sqrt()).to_event(1))
            if model.likelihood.learned and self.guide == "map":
                pyro.sample(model.likelihood.site, dist.Delta(self.params["precision.loc"].exp()))
            elif model.likelihood.learned:
                pyro.sample(
                    model.likelihood.site,
                    dist.LogNormal(self.params["precision.loc"], self.params["precision.log_std"].exp()),
                )


def _weight_count(model: BayesianNetwork) -> int:
    """The number of weights of the network's weight matrices (biases not counted)."""
    return sum(layer.in_features * layer.out_features for layer in model.layers)


def _check_kl_weight(value) -> float | str:
    """A positive finite number, or ``"per-weight"``."""
    if value == "per-weight":
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
        raise InvalidParameterError(f"kl_weight must be a positive number or 'per-weight', got {value!r}")
    return float(value)


def _check_sign_flip(value, guide: str) -> tuple[float, float] | None:
    """``None``, or two finite numbers (the values a sign draw takes)."""
    if value is None:
        return None
    if guide == "map":
        raise InvalidParameterError("sign_flip perturbs the weights by q's standard deviations: guide='map' has none")
    try:
        pair = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        pair = ()
    if len(pair) != 2 or not all(math.isfinite(v) for v in pair):
        raise InvalidParameterError(f"sign_flip must be None or a pair of finite numbers such as (-1, 1), got {value!r}")
    return pair


def _noise_center(noise: NoiseModel) -> float:
    """A typical value of the noise (its median), where the scale guides start."""
    gen = torch.Generator().manual_seed(0)
    d = noise.noise()
    u = torch.rand(20001, generator=gen, dtype=torch.float64)
    try:
        draws = d.icdf(u.to(torch.get_default_dtype()))
    except NotImplementedError:
        with torch.random.fork_rng():
            torch.manual_seed(0)
            draws = d.sample((20001,))
    center = float(draws.median())
    return center if abs(center) > 1e-6 else 1.0


class SVIPosterior(Posterior):
    """The fitted variational family: predictions, weight means, and the family as a Pyro guide."""

    def __init__(self, model, variational: _Variational, seeds: list[int], info: dict):
        self.variational = variational
        super().__init__(
            model,
            "svi",
            variational.sample_functions,
            seeds=seeds,
            info=info,
            weight_means=lambda: {layer.name: variational.params[f"{layer.name}.weight.loc"] for layer in model.layers},
        )

    @property
    def guide(self):
        """A Pyro guide for ``model`` with the fitted parameters (for ``pyro.infer.Predictive`` and checks)."""
        return self.variational.pyro_guide

    def scales(self) -> dict[str, torch.Tensor]:
        """Posterior typical values of every scale site (medians of q, or the EM point estimates)."""
        v = self.variational
        if v.em:
            return {k: torch.exp(0.5 * t).detach() for k, t in v.em_log_var.items()}
        out = {}
        for sites in v.sites.values():
            for site in sites:
                loc = v.params[f"{site.name}.loc"].detach()
                out[site.name] = loc.exp() if site.positive else loc
        return out

    @torch.no_grad()
    @pyro.validation_enabled(False)
    def _arviz_draws(self, num_samples: int, rng: ReplicaRandom) -> dict[str, torch.Tensor]:
        """Draws from ``q``, in the order :meth:`_Variational.sample_functions` makes them (scales,
        precision, then per layer weights and biases), so the same stream gives the same functions.
        A MAP fit is one point: ``num_samples`` copies of it (the scales are its EM values)."""
        v = self.variational
        scales, _ = v.sample_scales(num_samples, rng)
        tau, _ = v.sample_precision(num_samples, rng)
        draws = dict(scales)
        for layer in self.model.layers:
            loc, var = v.weight_moments(layer)
            b_loc, b_var = v.bias_moments(layer)
            if v.guide == "map":
                draws[f"{layer.name}.weight"] = loc.expand(num_samples, *loc.shape)
                draws[f"{layer.name}.bias"] = b_loc.expand(num_samples, *b_loc.shape)
                continue
            eps = rng.randn((num_samples, *loc.shape[1:]), loc.dtype, axis=1)
            draws[f"{layer.name}.weight"] = loc + var.sqrt() * eps
            eps_b = rng.randn((num_samples, *b_loc.shape[1:]), loc.dtype, axis=1)
            draws[f"{layer.name}.bias"] = b_loc + b_var.sqrt() * eps_b
        draws[self.model.likelihood.site] = tau
        return {k: t.detach().unsqueeze(0) for k, t in draws.items()}  # one chain

    def _arviz_attrs(self) -> dict[str, str]:
        if self.variational.guide == "map":
            return {"draws": "MAP: one point estimate, repeated in every draw (a point mass has no spread)"}
        what = "scales at their EM point estimates, " if self.variational.em else ""
        return {"draws": f"independent draws from the variational posterior q ({what}{self.variational.guide} guide)"}


class SVI(InferenceBackend):
    """Stochastic variational inference: ``SVI(steps=2000).fit(model, X, y)``.

    Parameters: ``guide`` (``"mean-field"``, ``"variational-dropout"`` or ``"map"``), ``alpha``
    (variational dropout's rate sharing: ``"weight"`` or ``"unit"``),
    ``local_reparam`` (local reparameterization trick, default on), ``num_particles``
    (vectorized), ``steps``, ``lr`` (Adam), ``batch_size`` (``None`` for full batch),
    ``scale_updates`` (``None``, ``"em"`` or ``"in-loss"``), ``init_std`` (initial posterior std of
    the weights), ``clip_norm``, ``report_every``, and ``device``, ``seed``,
    ``progress``, ``threads`` (torch threads of the training loop, 1 by default: see
    :mod:`inference.training`).

    Further choices (the module docstring's "Objective, start and sampler"; their defaults
    are the ELBO and the settings above): ``kl_weight`` (a positive number, or
    ``"per-weight"``), ``scale_mode`` (``"log-variance"`` or ``"variance"``),
    ``ard_add_update`` (``"sweep"`` or ``"nalisnick2019"``), ``bias`` (``"variational"``
    or ``"point"``), ``init`` (``"normal"`` or ``"uniform"``), ``variance_param``
    (``"log-std"`` or ``"softplus"``), ``sign_flip`` (``None`` or a pair of numbers),
    ``batches`` (``"random"`` or ``"epochs"``) and ``drop_last``. Faster steps (the module
    docstring's "Faster steps"): ``fast`` and ``compile``.

    Supports every prior whose scales are continuous (Gaussian, Rayleigh, inverse
    Nakagami, half-Cauchy noise; the normal and log-uniform priors) on every model.
    Bernoulli scales are discrete and have no reparameterized guide: use
    ``inference.MCDropout``. ``guide="map"`` supports the normal prior and, with
    ``scale_updates="em"``, the scale mixtures that have closed-form updates.
    """

    name = "svi"
    training_loop = True
    checkpoints = True
    #: Keyword options and their defaults (``device``, ``seed`` and ``progress`` aside): what a caller
    #: such as the benchmark runner may set. Equal to ``__init__``'s defaults (tested).
    options = {
        "guide": "mean-field", "alpha": "weight", "local_reparam": True, "num_particles": 1, "steps": 2000,
        "lr": 0.01, "batch_size": None, "scale_updates": None, "init_std": 0.01, "clip_norm": None,
        "report_every": 100, "kl_weight": 1.0, "scale_mode": "log-variance", "ard_add_update": "sweep",
        "bias": "variational", "init": "normal", "variance_param": "log-std", "sign_flip": None,
        "batches": "random", "drop_last": False, "fast": False, "compile": False,
    }
    #: The option that counts the training budget, and its unit.
    budget_option, budget_unit = "steps", "steps"
    #: Options that take one value per replica (a list) as well as one for all.
    replica_options: tuple[str, ...] = ()

    def __init__(
        self,
        guide: str = "mean-field",
        alpha: str = "weight",
        local_reparam: bool = True,
        num_particles: int = 1,
        steps: int = 2000,
        lr: float = 0.01,
        batch_size: int | None = None,
        scale_updates: str | None = None,
        init_std: float = 0.01,
        clip_norm: float | None = None,
        report_every: int = 100,
        kl_weight: float | str = 1.0,
        scale_mode: str = "log-variance",
        ard_add_update: str = "sweep",
        bias: str = "variational",
        init: str = "normal",
        variance_param: str = "log-std",
        sign_flip: Sequence[float] | None = None,
        batches: str = "random",
        drop_last: bool = False,
        fast: bool = False,
        compile: bool = False,
        device="cpu",
        seed: int = 0,
        progress: bool = True,
        threads: int | None = 1,
    ):
        super().__init__(device, seed, progress, threads)
        if guide not in GUIDES:
            raise InvalidParameterError(f"unknown guide {guide!r}; valid choices are: {', '.join(GUIDES)}")
        if alpha not in ("weight", "unit"):
            raise InvalidParameterError(f"alpha must be 'weight' or 'unit', got {alpha!r}")
        if scale_updates not in SCALE_UPDATES:
            raise InvalidParameterError(f"scale_updates must be None, 'em' or 'in-loss', got {scale_updates!r}")
        for label, value, valid in (
            ("scale_mode", scale_mode, SCALE_MODES), ("ard_add_update", ard_add_update, ARD_ADD_UPDATES),
            ("bias", bias, BIASES), ("init", init, INITS), ("variance_param", variance_param, VARIANCE_PARAMS),
            ("batches", batches, BATCHES),
        ):
            if value not in valid:
                raise InvalidParameterError(f"{label} must be one of {', '.join(map(repr, valid))}, got {value!r}")
        if scale_updates is None and (scale_mode, ard_add_update) != ("log-variance", "sweep"):
            raise InvalidParameterError(
                "scale_mode and ard_add_update shape closed-form scale updates: they need scale_updates='em' or 'in-loss'"
            )
        if scale_updates == "in-loss" and guide == "map":
            raise InvalidParameterError("guide='map' takes scale_updates='em' (scales in-loss need q's variances)")
        if variance_param == "softplus" and guide != "mean-field":
            raise InvalidParameterError(f"variance_param='softplus' is a mean-field parametrization, not {guide!r}'s")
        if bias == "point" and guide == "map":
            raise InvalidParameterError("bias='point' is for a variational guide; guide='map' has point biases with a prior")
        if drop_last and batches != "epochs":
            raise InvalidParameterError("drop_last drops the last partial batch of an epoch: it needs batches='epochs'")
        self.kl_weight = _check_kl_weight(kl_weight)
        self.sign_flip = _check_sign_flip(sign_flip, guide)
        self.scale_mode, self.ard_add_update, self.bias, self.init = scale_mode, ard_add_update, bias, init
        self.variance_param, self.batches, self.drop_last = variance_param, batches, bool(drop_last)
        self.guide, self.alpha, self.local_reparam = guide, alpha, bool(local_reparam)
        self.num_particles = check_positive_int("num_particles", num_particles)
        self.steps = check_positive_int("steps", steps)
        self.lr = check_positive_float("lr", lr)
        self.batch_size = None if batch_size is None else check_positive_int("batch_size", batch_size)
        self.scale_updates = scale_updates
        self.init_std = check_positive_float("init_std", init_std)
        self.clip_norm = None if clip_norm is None else check_positive_float("clip_norm", clip_norm)
        self.report_every = check_positive_int("report_every", report_every)
        self.fast = check_bool("fast", fast)
        self.compile = check_bool("compile", compile)

    def check_model(self, model: BayesianNetwork) -> None:
        for layer in model.layers:
            prior, noise = layer.prior, layer.prior.noise
            what = f"the {prior.describe()} prior of {layer.name}"
            if noise is not None and noise.discrete:
                alternative = noise.continuous_alternative
                raise unsupported(
                    "SVI", what,
                    f"{noise.name} scales are discrete and have no reparameterized guide",
                    "inference.MCDropout (dropout as approximate variational inference)"
                    + (f", or {alternative}" if alternative else ""),
                )
            if not prior.proper and weight_kl_rule(prior) is None:
                raise unsupported(
                    "SVI", what, f"it is improper ({prior.density}) and no KL to a Gaussian q(w) is registered for it",
                    "a proper prior, or register one with inference.svi.register_weight_kl",
                )
            if self.guide == "map" and not prior.proper:
                raise unsupported(
                    "SVI with guide='map'", what,
                    f"it is improper ({prior.density}), and a point estimate needs a proper density to maximise",
                    "guide='variational-dropout' or guide='mean-field'",
                )
            if self.guide == "map" and noise is not None and self.scale_updates != "em":
                raise unsupported(
                    "SVI with guide='map'", what,
                    "a joint MAP of weights and scales collapses to zero scales; the scales need closed-form updates",
                    "scale_updates='em' (or guide='mean-field')",
                )
            if self.scale_updates is not None:
                if not prior.proper:
                    raise unsupported(
                        f"SVI with scale_updates={self.scale_updates!r}", what,
                        f"it is improper ({prior.density}) and declares no scales to update", "scale_updates=None",
                    )
                if noise is not None and not noise.has_closed_form_update:
                    closed = ", ".join(name for name, cls in NOISE_MODELS.items() if cls.has_closed_form_update)
                    raise unsupported(
                        f"SVI with scale_updates={self.scale_updates!r}", what,
                        f"{noise.name} noise has no closed-form scale update (the noise models with one: {closed})",
                        "scale_updates=None (variational scales)",
                    )

    def fit(self, model: BayesianNetwork, X, y, checkpoint: Checkpoint | None = None) -> SVIPosterior:
        """Fit ``model`` to ``(X, y)``; with a :class:`~inference.training.Checkpoint`, save the fit's
        state as it goes and continue from the saved state when there is one."""
        X, y, seeds = self.prepare(model, X, y)
        if self.guide == "map":
            self._warn_pole(model)
        rng = ReplicaRandom(seeds, model.device)
        settings = _Settings(self.scale_updates, self.scale_mode, self.ard_add_update, self.bias, self.init,
                             self.variance_param, self.sign_flip)
        q = _Variational(model, self.guide, self.alpha, self.scale_updates is not None, self.init_std, rng, settings)
        opt = adam(list(q.params.values()), lr=self.lr, fused=self.fast)
        losses: list[float] = []
        N = X.shape[1]
        B = N if self.batch_size is None or self.batch_size >= N else self.batch_size
        if self.batches == "epochs":
            schedule = Shuffled(rng, N, B, drop_last=self.drop_last)
        else:
            schedule = RandomSubsets(rng, N, B, self.report_every) if B < N else FullBatch(self.report_every)
        kl_scale = N / _weight_count(model) if self.kl_weight == "per-weight" else self.kl_weight

        if self.compile:
            # In-loss scales keep the last step's values for the next one: the compiled objective takes them
            # and returns the new ones (a function of its inputs alone, so that CheckedCompile's repeated
            # calls, and the recording pass, leave q as they found it); the step stores them.
            em_keys = sorted(q.em_log_var) if q.in_loss else []

            def objective(Xb, yb, source, em_state):
                """The loss per replica of one mini-batch in the forms that compile well, drawing from ``source``."""
                if q.guide == "map":
                    return -q.log_joint(Xb, yb, N) / N
                return -q.elbo(Xb, yb, N, self.num_particles, self.local_reparam, source, kl_scale, True, self.fast,
                               em_state) / N

            # The objective's draws are taken before the compiled call (DrawPlan.draw: the same calls on
            # the same streams, so the same numbers) and replayed inside it; a plan per batch shape.
            plans: dict[tuple, DrawPlan] = {}

            def replayed(Xb, yb, plan, draws, em_before):
                source = ReplayRandom(rng, plan, draws)
                em_state = dict(zip(em_keys, em_before))
                loss = objective(Xb, yb, source, em_state)
                source.finish()
                return (loss, *(em_state[k] for k in em_keys))

            # warnings point at the caller of fit: step, train, fit, the caller
            run = CheckedCompile(replayed, list(q.params.values()), "SVI", stacklevel=4)

        def step(Xb, yb):
            if q.em and not q.in_loss:
                q.update_scales()
            if not self.compile:  # the default's arithmetic, as it always was
                if q.guide == "map":
                    loss = -q.log_joint(Xb, yb, N).sum() / N
                elif kl_scale != 1.0:
                    loss = -q.elbo(Xb, yb, N, self.num_particles, self.local_reparam, rng, kl_scale,
                                   fast=self.fast).sum() / N
                else:
                    loss = -q.elbo(Xb, yb, N, self.num_particles, self.local_reparam, rng, fast=self.fast).sum() / N
                return loss, loss
            key = (tuple(Xb.shape), tuple(yb.shape))
            if key in plans:
                draws = plans[key].draw(rng)
            else:  # record this shape's draws once; they go through to rng, so they are this step's
                recorder = RecordingRandom(rng)
                with torch.no_grad():
                    objective(Xb, yb, recorder, dict(q.em_log_var))
                plans[key], draws = recorder.plan, recorder.tensors
            out = run(Xb, yb, plans[key], draws, [q.em_log_var[k] for k in em_keys])
            q.em_log_var.update(zip(em_keys, out[1:]))
            loss = out[0].sum()
            return loss, loss

        def end_round(where) -> float:
            losses.append(float(where.last_loss))
            return losses[-1]

        def load_state(saved: dict) -> None:
            if saved.get("fast", False) != self.fast:  # files of before the option hold none: the default
                raise InvalidParameterError(
                    f"the checkpoint was saved by a fit with fast={not self.fast}, and this fit has fast={self.fast}: "
                    "the two draw other random numbers and step otherwise; continue it with the same setting, "
                    "or delete it"
                )
            q.em_log_var.update({k: v.to(model.device) for k, v in saved["em_log_var"].items()})
            losses[:] = saved["losses"]

        # Argument validation off inside the loop: it costs time per step, and a run-away value
        # must surface as a non-finite loss (reported with its step), not as a ValueError.
        with pyro.validation_enabled(False):
            done = train(
                step, X, y, list(q.params.values()), opt, schedule, self.steps,
                backend="SVI",
                hint="a heavy-tailed scale may be running away or the learning rate is too large "
                "(try a smaller lr, clip_norm, or a lighter-tailed prior)",
                end_round=end_round,
                clip_norm=self.clip_norm,
                generators=rng.generators,
                state=lambda: {"em_log_var": dict(q.em_log_var), "losses": list(losses), "fast": self.fast},
                load_state=load_state,
                checkpoint=checkpoint,
                progress=self.progress,
                threads=self.threads,
            )
        info = {
            "steps": self.steps,
            "final_loss": losses[-1],
            "loss_history": losses,
            "seconds": done.seconds,
            "steps_per_second": done.steps_per_second,
            "guide": self.guide,
            "fast": self.fast,
            "compile": bool(self.compile and run.compiled),  # False after a fallback to eager code
        }
        info.update(done.resume_info())
        info.update(done.arithmetic_info())
        return SVIPosterior(model, q, seeds, info)

    @staticmethod
    def _warn_pole(model: BayesianNetwork) -> None:
        proper = ", ".join(name for name, cls in NOISE_MODELS.items() if cls.update_is_em_step)
        for layer in model.layers:
            prior = layer.prior
            if prior.noise is not None and not prior.noise.update_is_em_step:
                warnings.warn(
                    f"SVI(guide='map'): with the {prior.describe()} prior of {layer.name} the closed-form "
                    "scale step is a joint mode of weights and scales, whose objective grows without bound "
                    "as a group of weights goes to zero, so the fit shrinks whole units away; with "
                    f"{proper} noise the step is EM's for a proper MAP (of the marginal), or use "
                    "guide='mean-field'",
                    stacklevel=3,
                )
