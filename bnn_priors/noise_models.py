"""The five noise models of multiplicative-noise regularization, as priors on scales.

Multiplying a layer's input units by noise, ``h_l = f(h_{l-1} diag(lambda) W)`` with
``lambda_i ~ p(lambda)`` and ``w_ij ~ N(0, sigma0^2)``, is the same model as the
Gaussian scale mixture ``w_ij ~ N(0, lambda_i^2 sigma0^2)`` (Nalisnick et al. 2019,
"Dropout as a Structured Shrinkage Prior"). Each class below is one row of that
paper's table: it gives the noise ``p(lambda)``, the variance prior ``p(lambda^2)``
where that is a named distribution, and the marginal ``p(w)`` where it has a closed
form. Look them up by name with :func:`noise_model`.

A class also holds everything the inference backends need to know about its noise;
they ask it and never test a noise model's type or name:

* ``mean`` (``E[lambda]``, MC dropout's normalisation), ``second_moment``,
  ``discrete`` and ``keep_probability`` (Gal's weight-decay factor);
* :meth:`NoiseModel.sample`: the noise drawn from a :class:`~bnn_priors.random_source.RandomSource`
  (MC dropout's per-replica streams);
* :meth:`NoiseModel.sample_fast`: the same law from a cheaper random stream where the model has
  one (Bernoulli: the gaps between dropped units), for MC dropout's ``fast=True``, and
  :meth:`NoiseModel.sample_fast_groups`, the same for streams whose parameters differ;
* :meth:`NoiseModel.map_variance`: the closed-form scale update of
  ``scale_updates="em"`` where one exists (``has_closed_form_update``), derived in
  its docstring, and whether it is EM's E-step of a proper MAP (``update_is_em_step``).

Adding a noise model takes this one file (and its tests): a subclass of
:class:`NoiseModel` that defines ``name``, ``parameters``, the three table labels,
:meth:`~NoiseModel.noise` and :meth:`~NoiseModel.sample`; that overrides ``mean``,
``second_moment`` or ``discrete`` where what ``noise()`` gives is wrong or
unavailable; and, where they apply, ``variance_prior``, ``marginal``,
``keep_probability``, ``continuous_alternative`` and ``map_variance`` (with
``has_closed_form_update = True``). Then its entry in :data:`NOISE_MODELS`. The
table (``bnn-priors priors`` regenerates the README's copy), the names the command
line accepts, MC dropout, SVI (``scale_updates="em"`` when it has an update) and
NUTS (when it is continuous) take it from there; ``tests/test_noise_models.py``
fits such a class, defined in the test, with the backends as they are.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import pyro.distributions as dist
import torch
from torch.distributions import constraints

from bnn_priors.distributions import InverseNakagami as InverseNakagamiDistribution
from bnn_priors.distributions import Rayleigh as RayleighDistribution
from bnn_priors.errors import InvalidParameterError, lookup
from bnn_priors.random_source import RandomSource

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Parameter:
    """A noise-model parameter: its default, its valid range as a predicate, and that range in words."""

    default: float
    check: Callable[[float], bool]
    valid: str
    doc: str


_POSITIVE = (lambda v: v > 0, "> 0")


class NoiseModel(ABC):
    """A distribution p(lambda) of multiplicative noise, seen as a prior on weight scales."""

    name: ClassVar[str]
    parameters: ClassVar[dict[str, Parameter]]
    noise_label: ClassVar[str]  # p(lambda) in words, for the table
    variance_label: ClassVar[str]  # p(lambda^2) in words
    marginal_label: ClassVar[str]  # p(w) in words
    #: lambda can be exactly zero with positive probability (a spike in p(w)).
    has_atom_at_zero: ClassVar[bool] = False
    #: :meth:`map_variance` exists: ``scale_updates="em"`` can set the scales in closed form.
    has_closed_form_update: ClassVar[bool] = False
    #: The closed-form step is EM's E-step ``1 / E[lambda^-2 | w]`` for the marginal MAP of
    #: the weights, which exists. Otherwise (where there is a step) a point-estimate fit
    #: that alternates it with weight steps climbs the joint density of weights and
    #: scales, which grows without bound as a group of ``J > 2`` weights goes to zero.
    update_is_em_step: ClassVar[bool] = False

    def __init__(self, **params: float):
        unknown = set(params) - set(self.parameters)
        if unknown:
            raise InvalidParameterError(
                f"noise model {self.name!r} has no parameter {', '.join(sorted(unknown))}; "
                f"its parameters are: {', '.join(self.parameters) or 'none'}"
            )
        self.params: dict[str, float] = {}
        for key, spec in self.parameters.items():
            value = params.get(key, spec.default)
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise InvalidParameterError(
                    f"{self.name} parameter {key!r} must be a number, got {value!r}"
                ) from None
            if not (math.isfinite(value) and spec.check(value)):
                raise InvalidParameterError(
                    f"{self.name} parameter {key!r} must be {spec.valid}, got {value!r}"
                )
            self.params[key] = value

    def __getattr__(self, key: str) -> float:
        params = self.__dict__.get("params", {})
        if key in params:
            return params[key]
        raise AttributeError(key)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v:g}" for k, v in self.params.items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.params == other.params  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self), tuple(sorted(self.params.items()))))

    @staticmethod
    def _t(value: float, device=None, dtype=None) -> torch.Tensor:
        return torch.tensor(value, device=device, dtype=dtype or torch.get_default_dtype())

    @abstractmethod
    def noise(self, device=None, dtype=None) -> dist.TorchDistribution:
        """p(lambda): the noise that multiplies units, as a Pyro distribution."""

    def variance_prior(self, device=None, dtype=None) -> dist.TorchDistribution | None:
        """p(lambda^2) as a Pyro distribution, or ``None`` where it is not a named one."""
        return None

    def marginal(self, sigma0: float = 1.0) -> dist.TorchDistribution | None:
        """The marginal prior p(w) of ``w ~ N(0, lambda^2 sigma0^2)``, or ``None`` without a closed form."""
        return None

    @abstractmethod
    def sample(self, source: RandomSource, shape: Shape, dtype: torch.dtype, axis: int = 0) -> torch.Tensor:
        """``lambda ~ p(lambda)`` of ``shape`` for each stream of ``source`` (the stream axis at ``axis``).

        The law of :meth:`noise`, made from ``source``'s standard draws, so that the
        caller decides which generator every number comes from.
        """

    def sample_fast(
        self, source: RandomSource, shape: Shape, dtype: torch.dtype, axis: int = 0, divisor: float = 1.0
    ) -> torch.Tensor:
        """``lambda / divisor`` with the law of :meth:`sample`, from the cheapest stream the model has.

        The default is :meth:`sample` itself (the same numbers), divided by ``divisor``.
        A model may override it with a sampler that needs fewer random numbers: the
        same distribution, a different random stream (:class:`Bernoulli` draws the gaps
        between dropped units). Each stream's numbers must still depend on that stream
        alone, so that a replica drawn in a batch equals the replica drawn alone.
        """
        lam = self.sample(source, shape, dtype, axis)
        return lam if divisor == 1.0 else lam / divisor

    @classmethod
    def sample_fast_groups(
        cls, source: RandomSource, shape: Shape, dtype: torch.dtype, axis: int, groups: Sequence[NoiseGroupDraw]
    ) -> torch.Tensor:
        """:meth:`sample_fast` for streams whose noise models (all of this class) differ: group ``g``'s
        streams draw ``g.noise.sample_fast(source.subset(g.streams), ..., g.divisor)`` and the result
        holds every stream's draws at its place on the stream axis ``axis``; every stream of
        ``source`` is in exactly one group. A class may override it with a cheaper sampler that
        gives the same numbers (:class:`Bernoulli` fills one buffer); a class whose
        :meth:`sample_fast` calls this method must override it (this one calls :meth:`sample_fast`)."""
        _check_groups(groups, source.replicas)
        out = None
        for g in groups:
            part = g.noise.sample_fast(source.subset(g.streams), shape, dtype, axis, g.divisor)
            if out is None:
                full = list(part.shape)
                full[axis] = source.replicas
                out = part.new_empty(full)
            out.index_copy_(axis, g.index_on(part.device), part)
        return out

    @property
    def support(self) -> constraints.Constraint:
        return self.noise().support

    @property
    def discrete(self) -> bool:
        return not self.noise().has_rsample

    @property
    def mean(self) -> float:
        """``E[lambda]`` (``inf`` where it does not exist)."""
        try:
            return float(self.noise().mean)
        except NotImplementedError:
            return math.inf

    @property
    def second_moment(self) -> float:
        """E[lambda^2] (``inf`` where it does not exist)."""
        return float(self.noise().variance + self.noise().mean ** 2)

    @property
    def keep_probability(self) -> float:
        """Gal's factor ``c`` of the weight decay per scale tensor (Gal & Ghahramani 2016): 1 but for dropout."""
        return 1.0

    @property
    def continuous_alternative(self) -> str | None:
        """For discrete noise, a continuous noise model close to it, in words (for refusals); else ``None``."""
        return None

    def map_variance(self, S: torch.Tensor, J: int | float, sigma0: float) -> torch.Tensor:
        """The closed-form type-II MAP ``v* = lambda^2`` of a scale shared by ``J`` weights, elementwise in ``S``.

        Given a mean-field Gaussian ``q(w)``, each scale ``lambda_k`` (shared by a
        group of ``J`` weights) is set to the maximiser over ``u = log v``,
        ``v = lambda_k^2``, of (:meth:`map_objective`)

            g(v) = E_q[log N(w_group | 0, v * c * sigma0^2)] + log p(v) + log v,

        where ``c`` is the product of the group's other squared scales (ARD-ADD),
        ``p(v)`` is the density this noise model induces on ``lambda^2`` and
        ``+ log v`` is the Jacobian of ``u = log v``. The mode is taken in ``log v`` on
        purpose: it is invariant to the choice of scale parametrization, and the mode
        in ``v`` itself is degenerate for ARD-ADD (the horseshoe's ``p(v)`` has a pole
        at zero, so the unit scales collapse to zero while the layer scale runs to
        infinity; in log-space the objective is bounded). With
        ``S = sum_group E_q[w^2] / c`` (``E_q[w^2] = mu^2 + sigma^2``) and
        ``s2 = sigma0^2``,

            g(v) = -(J/2) log v - S / (2 s2 v) + log p(v) + log v + const,

        and a class with ``has_closed_form_update`` returns the root of ``g'(v) = 0``
        (Nalisnick et al. 2019 fit their ARD/ADD networks with such EM steps). The
        tests check every root against numerical optimisation of :meth:`map_objective`.
        """
        raise NotImplementedError(f"the {self.name} noise model has no closed-form scale update")

    def map_objective(self, v: torch.Tensor, S: torch.Tensor, J: int | float, sigma0: float) -> torch.Tensor:
        """``g(v)`` of :meth:`map_variance`, up to an additive constant, for positive continuous noise.

        ``log p(v)`` comes from :meth:`noise` by the change of variables
        ``v = lambda^2``: ``log p_lambda(sqrt v) - log(2 sqrt v)``.
        """
        support = self.noise().support
        if support.is_discrete or bool(support.check(torch.tensor(-1.0))):
            raise NotImplementedError(f"the {self.name} noise is not positive and continuous: no density of lambda^2 here")
        s2 = float(sigma0) ** 2
        J = float(J)
        root = torch.sqrt(v)
        log_prior = self.noise(v.device, v.dtype).log_prob(root) - torch.log(2 * root)
        return -0.5 * J * torch.log(v) - S / (2 * s2 * v) + log_prior + torch.log(v)


@dataclass(frozen=True)
class NoiseGroupDraw:
    """Streams of a :class:`~bnn_priors.random_source.RandomSource` that draw one noise model, divided by
    ``divisor`` (``index``: the streams as a tensor on the draws' device, when the caller has one)."""

    noise: NoiseModel
    streams: tuple[int, ...]
    divisor: float = 1.0
    index: torch.Tensor | None = None

    def index_on(self, device) -> torch.Tensor:
        if self.index is not None and self.index.device == torch.device(device):
            return self.index
        return torch.tensor(self.streams, dtype=torch.int64, device=device)


def _check_groups(groups: Sequence[NoiseGroupDraw], R: int) -> None:
    """Every one of the ``R`` streams in exactly one group."""
    streams = [r for g in groups for r in g.streams]
    if len(streams) != R or set(streams) != set(range(R)):
        raise InvalidParameterError(
            f"noise groups must hold each of the source's {R} streams exactly once; they hold {sorted(streams)}"
        )


#: Standard deviations above the mean number of zeros that :func:`gap_draws` covers.
GAP_DRAW_SDS = 6.0


def gap_draws(trials: int, p: float) -> int:
    """Uniform draws per stream for the zeros of ``trials`` Bernoulli trials with drop probability ``p``:
    the mean number of zeros plus :data:`GAP_DRAW_SDS` standard deviations plus 8 (one more than
    the zeros is needed to know that no zero is left). Short by about 1e-9 of the time; then
    :meth:`Bernoulli.sample_fast` draws more for that stream alone."""
    mean = trials * p
    return max(1, math.ceil(mean + GAP_DRAW_SDS * math.sqrt(mean * (1.0 - p)) + 8))


class Bernoulli(NoiseModel):
    """Dropout: ``lambda ~ Bernoulli(1 - p)``, unit dropped with probability ``p``.

    ``lambda^2 = lambda`` is Bernoulli too, and p(w) is a spike at zero of mass ``p``
    plus a ``N(0, sigma0^2)`` slab.
    """

    name = "bernoulli"
    parameters = {
        "p": Parameter(0.1, lambda v: 0.0 <= v < 1.0, "in [0, 1)", "drop probability"),
    }
    noise_label = "Bernoulli"
    variance_label = "Bernoulli"
    marginal_label = "spike-and-slab"
    has_atom_at_zero = True

    def noise(self, device=None, dtype=None):
        return dist.Bernoulli(probs=self._t(1.0 - self.p, device, dtype))

    def variance_prior(self, device=None, dtype=None):
        return self.noise(device, dtype)

    def marginal(self, sigma0: float = 1.0):
        weights = torch.tensor([self.p, 1.0 - self.p])
        # The spike is a Normal of vanishing scale; its mass at zero is what matters.
        components = dist.Normal(torch.zeros(2), torch.tensor([1e-12, float(sigma0)]))
        return dist.MixtureSameFamily(dist.Categorical(probs=weights), components)

    def sample(self, source, shape, dtype, axis=0):
        # In place on the fresh uniforms: lt_ writes 1.0 or 0.0 in their dtype, the values of
        # (u < 1 - p).to(dtype) without the boolean tensor and the copy (one pass, not two).
        return source.rand(shape, dtype, axis).lt_(1.0 - self.p)

    def sample_fast(self, source, shape, dtype, axis=0, divisor=1.0):
        """Bernoulli(1 - p) draws / ``divisor`` made from the gaps between the zeros.

        Per stream, the draws of ``shape`` are read as one sequence of ``L`` trials. The
        gaps between successive zeros of i.i.d. Bernoulli(1 - p) trials are i.i.d.
        Geometric(p) on {1, 2, ...}, and ``G = floor(log(1 - u) / log(1 - p)) + 1`` with
        ``u ~ U[0, 1)`` is such a gap (``P(G > k) = (1 - p)^k``). So about ``p L`` uniform
        draws (float64) place the zeros exactly, instead of ``L`` draws, one per trial:
        the same law, a different random stream from :meth:`sample`'s. Every stream draws
        :func:`gap_draws` numbers at once; the rare stream whose zeros run past them
        draws more from itself alone (:meth:`RandomSource.rand_streams`), so a stream's
        numbers never depend on the other streams'. Kept trials hold ``1 / divisor``.
        """
        shape = tuple(shape)
        if self.p == 0.0 or math.prod(shape) == 0:
            # No zeros to place: an empty draw (it moves no stream) gives the streams and device.
            empty = source.rand((0,), dtype, 0)
            ones = torch.empty((empty.shape[0], *shape), dtype=dtype, device=empty.device).fill_(1.0 / divisor)
            return ones.movedim(0, axis)
        streams = tuple(range(source.replicas))
        return type(self).sample_fast_groups(source, shape, dtype, axis, [NoiseGroupDraw(self, streams, divisor)])

    @classmethod
    def sample_fast_groups(cls, source, shape, dtype, axis, groups):
        """:meth:`sample_fast` of several dropout rates in one buffer: each group's streams get the
        numbers :meth:`sample_fast` gives them (its zeros drawn from its streams alone), without a
        buffer per group and the copy into place."""
        shape = tuple(shape)
        L = math.prod(shape)
        R = source.replicas
        if not (len(groups) == 1 and groups[0].streams == tuple(range(R))):
            _check_groups(groups, R)
        device = None
        pieces = []
        fills = []
        for g in groups:
            whole = g.streams == tuple(range(R))  # one group of all the streams, in order
            sub = source if whole else source.subset(g.streams)
            fills.append(1.0 / g.divisor)
            if g.noise.p == 0.0 or L == 0:
                pieces.append(None)
                continue
            positions = cls._zero_positions(sub, L, g.noise.p)
            device = positions[0][1].device
            if not whole:  # the subset's local stream numbers -> the source's
                offsets = g.index_on(device)
                positions = [(offsets[local], pos) for local, pos in positions]
            pieces.append(positions)
        if device is None:  # no zeros anywhere: an empty draw (it moves no stream) gives the device
            device = source.rand((0,), dtype, 0).device
        # One spare element at the end takes the positions past L (cheaper than selecting the others).
        flat = torch.empty(R * L + 1, dtype=dtype, device=device)
        if len(groups) == 1:
            flat.fill_(fills[0])
        else:
            for g, value in zip(groups, fills):
                flat[: R * L].view(R, L).index_fill_(0, g.index_on(device), value)
        for group_pieces in pieces:
            for streams, positions in group_pieces or ():
                index = torch.where(positions < L, positions + streams[:, None] * L, R * L)
                flat.index_fill_(0, index.flatten(), 0.0)
        return flat[: R * L].view(R, *shape).movedim(0, axis)

    @staticmethod
    def _zero_positions(source, L: int, p: float) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The 0-based positions of the zeros among ``L`` trials per stream of ``source``, as
        ``(local streams, increasing positions)`` pieces; positions past ``L - 1`` mean none."""
        log_q = math.log1p(-p)
        K = gap_draws(L, p)

        def zero_positions(u: torch.Tensor, after: torch.Tensor | int) -> torch.Tensor:
            # Gaps past L all mean "no more zeros here": the clamp keeps them (and the sums) in int64.
            gaps = torch.floor(torch.log1p(-u) / log_q).clamp_(max=L).add_(1.0).to(torch.int64)
            return gaps.cumsum(-1).add_(after)

        first = zero_positions(source.rand((K,), torch.float64, 0), -1)  # (R, K), 0-based, increasing
        R, device = first.shape[0], first.device
        pieces = [(torch.arange(R, device=device), first)]
        last = first[:, -1].clone()
        short = (last < L).nonzero().flatten()
        while short.numel():  # rare: a stream with more zeros than K draws reach
            more = zero_positions(source.rand_streams(short.tolist(), (K,), torch.float64), last[short, None])
            pieces.append((short, more))
            last[short] = more[:, -1]
            short = short[more[:, -1] < L]
        return pieces

    @property
    def discrete(self) -> bool:
        return True

    @property
    def mean(self) -> float:
        return 1.0 - self.p

    @property
    def second_moment(self) -> float:
        return 1.0 - self.p

    @property
    def keep_probability(self) -> float:
        """``1 - p``: Gal's weight decay carries the keep probability of dropout."""
        return 1.0 - self.p

    @property
    def continuous_alternative(self) -> str:
        """Gaussian dropout: ``N(1, p / (1 - p))`` has the mean and variance of ``lambda / (1 - p)``."""
        return f"the 'gaussian' noise model with alpha = p / (1 - p) = {self.p / (1.0 - self.p):.4g} (Gaussian dropout)"


class Gaussian(NoiseModel):
    """Gaussian dropout: ``lambda ~ N(1, alpha)`` (alpha is the variance).

    ``lambda^2`` is a scaled non-central chi-squared with one degree of freedom
    (``alpha * chi2_1(1/alpha)``), not a distribution Pyro names; the marginal is
    in the generalized-hyperbolic family with no closed form here.
    """

    name = "gaussian"
    parameters = {"alpha": Parameter(0.25, *_POSITIVE, "variance of lambda")}
    noise_label = "Gaussian"
    variance_label = "scaled χ² (non-central, 1 dof)"
    marginal_label = "generalized hyperbolic"

    def noise(self, device=None, dtype=None):
        return dist.Normal(self._t(1.0, device, dtype), self._t(self.alpha, device, dtype).sqrt())

    def sample(self, source, shape, dtype, axis=0):
        return 1.0 + math.sqrt(self.alpha) * source.randn(shape, dtype, axis)

    @property
    def mean(self) -> float:
        return 1.0

    @property
    def second_moment(self) -> float:
        return 1.0 + self.alpha


class Rayleigh(NoiseModel):
    """``lambda ~ Rayleigh(scale)``: ``lambda^2 ~ Exponential(rate 1/(2 scale^2))``, p(w) Laplace(scale * sigma0).

    ``E[lambda] = scale sqrt(pi / 2)``.
    """

    name = "rayleigh"
    parameters = {"scale": Parameter(math.sqrt(0.5), *_POSITIVE, "Rayleigh scale")}
    noise_label = "Rayleigh"
    variance_label = "exponential"
    marginal_label = "Laplace"
    has_closed_form_update = True

    def noise(self, device=None, dtype=None):
        return RayleighDistribution(self._t(self.scale, device, dtype))

    def sample(self, source, shape, dtype, axis=0):
        # Inverse CDF: scale sqrt(-2 log(1 - u)).
        return self.scale * torch.sqrt(-2.0 * torch.log1p(-source.rand(shape, dtype, axis)))

    @property
    def mean(self) -> float:
        return self.scale * math.sqrt(math.pi / 2)

    def variance_prior(self, device=None, dtype=None):
        return dist.Exponential(0.5 / self._t(self.scale, device, dtype) ** 2)

    def marginal(self, sigma0: float = 1.0):
        return dist.Laplace(torch.tensor(0.0), torch.tensor(self.scale * float(sigma0)))

    @property
    def second_moment(self) -> float:
        return 2.0 * self.scale**2

    def map_variance(self, S, J, sigma0):
        """Rayleigh(scale r): ``v ~ Exponential(rate k = 1/(2 r^2))``, and (see :meth:`NoiseModel.map_variance`)::

            g'(v) = -(J-2)/(2v) + S/(2 s2 v^2) - k = 0
            k v^2 + ((J-2)/2) v - S/(2 s2) = 0                  (the positive root)

        The constant term is negative, so the quadratic has exactly one positive
        root: the only stationary point of ``g`` on ``v > 0``, a maximum since ``g``
        falls to ``-inf`` at both ends.
        """
        s2 = float(sigma0) ** 2
        J = float(J)
        k = 0.5 / self.scale**2
        h = (J - 2) / 2
        return (-h + torch.sqrt(h * h + 2 * k * S / s2)) / (2 * k)


class InverseNakagami(NoiseModel):
    """``lambda = 1/X``, ``X ~ Nakagami(shape m, spread Omega)``: ``lambda^2 ~ InverseGamma(m, m/Omega)``.

    The marginal is Student-t with ``2m`` degrees of freedom and scale ``sigma0 / sqrt(Omega)``.
    ``E[lambda] = E[1/X] = Gamma(m - 1/2) / Gamma(m) sqrt(m / Omega)`` for ``m > 1/2``
    (infinite otherwise).
    """

    name = "inverse-nakagami"
    parameters = {
        "shape": Parameter(2.0, *_POSITIVE, "Nakagami shape m"),
        "spread": Parameter(1.0, *_POSITIVE, "Nakagami spread Omega"),
    }
    noise_label = "inverse Nakagami"
    variance_label = "inverse gamma"
    marginal_label = "Student-t"
    has_closed_form_update = True
    update_is_em_step = True

    def noise(self, device=None, dtype=None):
        return InverseNakagamiDistribution(self._t(self.shape, device, dtype), self._t(self.spread, device, dtype))

    def sample(self, source, shape, dtype, axis=0):
        # 1/X with X^2 = (Omega/m) G, G ~ Gamma(m, 1); G floored so that 1/X stays finite.
        m, spread = self.shape, self.spread
        g = source.standard_gamma(shape, m, dtype, axis).clamp_min(torch.finfo(dtype).tiny)
        return torch.sqrt(m / (spread * g))

    @property
    def mean(self) -> float:
        m, spread = self.shape, self.spread
        if m <= 0.5:
            return math.inf
        return math.exp(math.lgamma(m - 0.5) - math.lgamma(m)) * math.sqrt(m / spread)

    def variance_prior(self, device=None, dtype=None):
        m = self._t(self.shape, device, dtype)
        return dist.InverseGamma(m, m / self.spread)

    def marginal(self, sigma0: float = 1.0):
        return dist.StudentT(
            torch.tensor(2.0 * self.shape), torch.tensor(0.0), torch.tensor(float(sigma0) / math.sqrt(self.spread))
        )

    @property
    def second_moment(self) -> float:
        # E[lambda^2] = E[InverseGamma(m, m/Omega)] = (m/Omega) / (m - 1) for m > 1.
        return (self.shape / self.spread) / (self.shape - 1.0) if self.shape > 1.0 else math.inf

    def map_variance(self, S, J, sigma0):
        """``v ~ InverseGamma(a, b)`` with ``a = m``, ``b = m / Omega``, and (see :meth:`NoiseModel.map_variance`)::

            g(v)  = -(J/2 + a) log v - (S/(2 s2) + b) / v
            v*    = (b + S/(2 s2)) / (a + J/2)

        The posterior of ``v`` given the group's weights is ``InverseGamma(a + J/2,
        b + S/(2 s2))``, so ``v* = 1 / E[1/v | w]``: EM's E-step for the marginal
        (Student-t) MAP of the weights (``update_is_em_step``), with a floor ``b / (a + J/2)``.
        """
        s2 = float(sigma0) ** 2
        J = float(J)
        a, b = self.shape, self.shape / self.spread
        return (b + S / (2 * s2)) / (a + J / 2)


class HalfCauchy(NoiseModel):
    """``lambda ~ HalfCauchy(scale)``: the horseshoe prior (no named variance prior, no closed-form marginal)."""

    name = "half-cauchy"
    parameters = {"scale": Parameter(1.0, *_POSITIVE, "half-Cauchy scale")}
    noise_label = "half-Cauchy"
    variance_label = "unnamed"
    marginal_label = "horseshoe"
    has_closed_form_update = True

    def noise(self, device=None, dtype=None):
        return dist.HalfCauchy(self._t(self.scale, device, dtype))

    def sample(self, source, shape, dtype, axis=0):
        # |Cauchy| by the inverse CDF: |tan(pi (u - 1/2))|, finite for u in [0, 1).
        return self.scale * torch.tan(math.pi * (source.rand(shape, dtype, axis) - 0.5)).abs()

    @property
    def mean(self) -> float:
        return math.inf

    @property
    def second_moment(self) -> float:
        return math.inf

    def map_variance(self, S, J, sigma0):
        """Half-Cauchy(scale t): ``p(v) ∝ v^{-1/2} / (1 + v/t^2)``, and (see :meth:`NoiseModel.map_variance`)::

            g'(v) = -(J-1)/(2v) + S/(2 s2 v^2) - 1/(t^2 + v) = 0
            (J+1) s2 v^2 - (S - (J-1) s2 t^2) v - S t^2 = 0     (the positive root)

        The constant term is negative, so the quadratic has exactly one positive
        root: the only stationary point of ``g`` on ``v > 0``, a maximum since ``g``
        falls to ``-inf`` at both ends.
        """
        s2 = float(sigma0) ** 2
        J = float(J)
        t2 = self.scale**2
        A = (J + 1) * s2
        B = S - (J - 1) * s2 * t2
        return (B + torch.sqrt(B * B + 4 * A * S * t2)) / (2 * A)


NOISE_MODELS: dict[str, type[NoiseModel]] = {
    cls.name: cls for cls in (Bernoulli, Gaussian, Rayleigh, InverseNakagami, HalfCauchy)
}


def noise_model(name: str | NoiseModel, **params: float) -> NoiseModel:
    """Look a noise model up by name: ``noise_model("rayleigh", scale=0.5)``.

    Names: ``bernoulli``, ``gaussian``, ``rayleigh``, ``inverse-nakagami``, ``half-cauchy``.
    An unknown name or parameter raises a :class:`ValueError` listing the valid choices.
    """
    if isinstance(name, NoiseModel):
        if params:
            raise InvalidParameterError("pass parameters either in the noise model or here, not both")
        return name
    return NOISE_MODELS[lookup("noise model", name, NOISE_MODELS)](**params)
