"""A network's log posterior density, written directly, over flat unconstrained coordinates.

What NUTS samples: the joint density of the model's latent variables given the data,
as ``model(X, y)`` declares it, evaluated without a Pyro trace (as the SVI backend's
direct objective is) and batched over ``R`` replicas times ``K`` chains. A position is
one row of ``D`` numbers; ``C = R * K`` rows, replica-major (row ``r * K + k`` is chain
``k`` of replica ``r``, on that replica's data). Per layer, in order:

* the scales ``<layer>.<kind>`` of a scale-mixture prior, mapped to the real line by
  the bijection of their support (``log`` for positive noise), with the log-Jacobian;
* the weights: ``w`` itself (centred, ``w ~ N(0, std^2)``), or ``z`` with
  ``w = std * z``, ``z ~ N(0, 1)`` (non-centred), ``std = sigma0 * prod_k |lambda_k|``;
* the bias, ``b ~ N(0, bias_scale^2)``;

then ``log tau`` when the noise precision is learned (``tau ~ Gamma(a, b)``, with the
Jacobian ``tau``). :meth:`NetworkDensity.log_density` is ``log p(y, latents)`` in these
coordinates: Pyro's log joint of the (reparametrized) model plus the log-Jacobians.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.distributions import biject_to, constraints
from torch.distributions.transforms import ExpTransform

from models.networks import BayesianNetwork

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def _without_support_checks(distribution):
    """``distribution`` (and the distributions it is built on) with argument checks off.

    A leapfrog step far out (a divergence, the step-size search) can reach a scale of 0 or
    inf; the density is then -inf or NaN, which the sampler treats as a divergence, rather
    than an error.
    """
    d = distribution
    while d is not None:
        d._validate_args = False
        d = getattr(d, "base_dist", None)
    return distribution


def _bijection(support):
    """The map from the real line onto ``support``: ``exp`` for the positive half-line (a lower
    bound of 0, open or closed; ``biject_to`` gives ``exp`` then the identity shift there), else
    ``biject_to``'s."""
    bound = getattr(support, "lower_bound", None)
    if isinstance(bound, (int, float)) and bound == 0 and type(support) in (
        type(constraints.positive), type(constraints.greater_than_eq(0.0))
    ):
        return ExpTransform()
    return biject_to(support)


@dataclass(frozen=True)
class Block:
    """One site's slice of a position: ``q[:, start:start + size]`` reshaped to ``shape``."""

    name: str  # the model's site (the weights' site also when non-centred)
    layer: str
    role: str  # "scale", "weight", "bias" or "precision"
    start: int
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def take(self, q: torch.Tensor) -> torch.Tensor:
        return q[..., self.start:self.start + self.size].reshape(*q.shape[:-1], *self.shape)


class NetworkDensity:
    """The batched log density of ``model`` on data ``X (R, N, in)``, ``y (R, N, out)``.

    Positions come as ``(R * K, D)`` rows, replica-major, any ``K`` (the chains);
    ``noncentered``: the layers whose weights are sampled as ``z``.
    """

    def __init__(self, model: BayesianNetwork, X: torch.Tensor, y: torch.Tensor, noncentered: set[str]):
        self.model, self.noncentered = model, set(noncentered)
        self.X = X[:, None]  # (R, 1, N, in): broadcast over chains
        self.y = y[:, None]
        dev, dt = model.device, model.dtype
        self.blocks: list[Block] = []
        self.noise = {}
        start = 0

        def add(name, layer, role, shape):
            nonlocal start
            self.blocks.append(Block(name, layer, role, start, tuple(shape)))
            start += math.prod(shape)

        for layer in model.layers:
            prior = layer.prior
            for kind, shape in prior.scale_shapes(layer.in_features, layer.out_features).items():
                add(f"{layer.name}.{kind}", layer.name, "scale", shape)
            if prior.noise is not None:
                noise = _without_support_checks(prior.noise.noise(dev, dt))
                self.noise[layer.name] = (noise, _bijection(noise.support))
            add(f"{layer.name}.weight", layer.name, "weight", (layer.in_features, layer.out_features))
            add(f"{layer.name}.bias", layer.name, "bias", (layer.out_features,))
        if model.likelihood.learned:
            add(model.likelihood.site, "likelihood", "precision", ())
        self.dim = start

    @property
    def replicas(self) -> int:
        return self.model.replicas

    def _by_chain(self, t: torch.Tensor, replica: torch.Tensor | None = None) -> torch.Tensor:
        """Rows ``(C, ...)``, replica-major, to ``(R, C / R, ...)``; rows of the given replicas
        (``replica`` ``(A,)``) to ``(1, A, ...)``, each on its own replica's data."""
        if replica is not None:
            return t.unsqueeze(0)
        return t.reshape(self.replicas, -1, *t.shape[1:])

    def _data(self, replica: torch.Tensor | None):
        """``X, y`` broadcastable against :meth:`_by_chain`'s layout."""
        if replica is None:
            return self.X, self.y
        return self.X[replica, 0].unsqueeze(0), self.y[replica, 0].unsqueeze(0)

    def _values(self, q: torch.Tensor, with_log_density: bool, replica: torch.Tensor | None = None):
        """The sites' values ``{site: (R, K, *shape)}`` and, if asked, the log density ``(R, K)``
        without the likelihood."""
        q = self._by_chain(q, replica)
        model = self.model
        values: dict[str, torch.Tensor] = {}
        total = torch.zeros(q.shape[:2], device=q.device, dtype=q.dtype)
        blocks = iter(self.blocks)
        for layer in model.layers:
            scales = {}
            block = next(blocks)
            while block.role == "scale":
                u = block.take(q)
                noise, transform = self.noise[layer.name]
                lam = transform(u)
                if with_log_density:
                    total = total + (noise.log_prob(lam) + transform.log_abs_det_jacobian(u, lam)).sum((-2, -1))
                values[block.name] = lam
                scales[block.name.rsplit(".", 1)[1]] = lam
                block = next(blocks)
            std = layer.prior.weight_std(scales)
            v = block.take(q)
            if layer.name in self.noncentered:
                w = std * v
                if with_log_density:
                    total = total - (0.5 * v**2 + _HALF_LOG_2PI).sum((-2, -1))
            else:
                w = v
                if with_log_density:
                    log_std = torch.log(std) if torch.is_tensor(std) else math.log(std)
                    total = total - (0.5 * (w / std) ** 2 + log_std + _HALF_LOG_2PI).sum((-2, -1))
            values[block.name] = w
            block = next(blocks)
            b = block.take(q)
            values[block.name] = b
            if with_log_density:
                s = model.bias_scale
                total = total - (0.5 * (b / s) ** 2 + math.log(s) + _HALF_LOG_2PI).sum(-1)
        lik = model.likelihood
        if lik.learned:
            z = next(blocks).take(q)
            values[lik.site] = z.exp()
            if with_log_density:
                a, r = lik.concentration, lik.rate
                total = total + a * math.log(r) - math.lgamma(a) + a * z - r * z.exp()
        return values, total

    def network(self, X: torch.Tensor, values: dict[str, torch.Tensor]) -> torch.Tensor:
        """``f`` of shape ``(R, K, N, out)`` at inputs ``X (R, 1, N, in)`` for the sites' values."""
        return self.model.forward_params(X, values)

    def log_density(self, q: torch.Tensor, replica: torch.Tensor | None = None) -> torch.Tensor:
        """``log p(y, latents)`` in the unconstrained coordinates, per row: shape ``(C,)``.

        ``replica`` ``(A,)``: the rows are any ``A`` positions, row ``i`` on the data of replica
        ``replica[i]`` (a subset of the chains, for :class:`inference.hmc.BatchedNUTS`).
        """
        values, total = self._values(q, True, replica)
        lik = self.model.likelihood
        tau = values[lik.site] if lik.learned else torch.tensor(lik.precision, device=q.device, dtype=q.dtype)
        X, y = self._data(replica)
        f = self.network(X, values)
        return (total + lik.log_prob(f, y, tau)).reshape(-1)

    def potential(self, q: torch.Tensor, replica: torch.Tensor | None = None) -> torch.Tensor:
        """``U(q) = -log p(y, latents)``: what the sampler moves on."""
        return -self.log_density(q, replica)

    def sites(self, q: torch.Tensor) -> dict[str, torch.Tensor]:
        """The model's sites for positions ``(R * M, D)``, replica-major: ``{site: (R, M, *shape)}``
        (weights as ``w``)."""
        return self._values(q, with_log_density=False)[0]

    def prior_draw(self, rng, bound: float | None = None) -> torch.Tensor:
        """One position per row drawn from the prior, from ``rng``'s per-row streams (a ``RandomSource``).

        ``bound``: clip the unconstrained scales and log precision to ``[-bound, bound]`` (as
        drawn, before the weights that depend on them): a heavy-tailed prior's extreme draws
        (a half-Cauchy scale of e^8) start a network whose outputs are thousands of standard
        deviations off, where no short fit recovers. The same random numbers are drawn.
        """
        model = self.model
        dt = model.dtype
        parts = []
        for layer in model.layers:
            scales = {}
            for block in self.blocks:
                if block.layer != layer.name:
                    continue
                if block.role == "scale":
                    noise, transform = self.noise[layer.name]
                    lam = layer.prior.noise.sample(rng, block.shape, dt).to(model.device)
                    if noise.support is not constraints.real:
                        lam = lam.clamp_min(torch.finfo(dt).tiny)  # a positive scale drawn as 0 in float
                    u = transform.inv(lam)
                    if bound is not None:
                        u = u.clamp(-bound, bound)
                        lam = transform(u)
                    scales[block.name.rsplit(".", 1)[1]] = lam
                    parts.append(u.reshape(lam.shape[0], -1))
                elif block.role == "weight":
                    z = rng.randn(block.shape, dt)
                    if layer.name not in self.noncentered:
                        z = z * layer.prior.weight_std(scales)
                    parts.append(z.reshape(z.shape[0], -1))
                else:
                    b = model.bias_scale * rng.randn(block.shape, dt)
                    parts.append(b.reshape(b.shape[0], -1))
        lik = model.likelihood
        if lik.learned:
            tau = rng.standard_gamma((), lik.concentration, dt) / lik.rate
            log_tau = tau.clamp_min(torch.finfo(dt).tiny).log()
            parts.append((log_tau if bound is None else log_tau.clamp(-bound, bound)).reshape(-1, 1))
        return torch.cat(parts, -1)
