"""The five noise models of multiplicative-noise regularization, as priors on scales.

Multiplying a layer's input units by noise, ``h_l = f(h_{l-1} diag(lambda) W)`` with
``lambda_i ~ p(lambda)`` and ``w_ij ~ N(0, sigma0^2)``, is the same model as the
Gaussian scale mixture ``w_ij ~ N(0, lambda_i^2 sigma0^2)`` (Nalisnick et al. 2019,
"Dropout as a Structured Shrinkage Prior"). Each class below is one row of that
paper's table: it gives the noise ``p(lambda)``, the variance prior ``p(lambda^2)``
where that is a named distribution, and the marginal ``p(w)`` where it has a closed
form. Look them up by name with :func:`noise_model`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import pyro.distributions as dist
import torch
from torch.distributions import constraints

from bnn_priors.distributions import InverseNakagami as InverseNakagamiDistribution
from bnn_priors.distributions import Rayleigh as RayleighDistribution
from bnn_priors.errors import InvalidParameterError, UnknownNameError, normalize_name


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

    @property
    def support(self) -> constraints.Constraint:
        return self.noise().support

    @property
    def discrete(self) -> bool:
        return not self.noise().has_rsample

    @property
    def second_moment(self) -> float:
        """E[lambda^2] (``inf`` where it does not exist)."""
        return float(self.noise().variance + self.noise().mean ** 2)


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

    @property
    def discrete(self) -> bool:
        return True

    @property
    def second_moment(self) -> float:
        return 1.0 - self.p


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

    @property
    def second_moment(self) -> float:
        return 1.0 + self.alpha


class Rayleigh(NoiseModel):
    """``lambda ~ Rayleigh(scale)``: ``lambda^2 ~ Exponential(rate 1/(2 scale^2))``, p(w) Laplace(scale * sigma0)."""

    name = "rayleigh"
    parameters = {"scale": Parameter(math.sqrt(0.5), *_POSITIVE, "Rayleigh scale")}
    noise_label = "Rayleigh"
    variance_label = "exponential"
    marginal_label = "Laplace"

    def noise(self, device=None, dtype=None):
        return RayleighDistribution(self._t(self.scale, device, dtype))

    def variance_prior(self, device=None, dtype=None):
        return dist.Exponential(0.5 / self._t(self.scale, device, dtype) ** 2)

    def marginal(self, sigma0: float = 1.0):
        return dist.Laplace(torch.tensor(0.0), torch.tensor(self.scale * float(sigma0)))

    @property
    def second_moment(self) -> float:
        return 2.0 * self.scale**2


class InverseNakagami(NoiseModel):
    """``lambda = 1/X``, ``X ~ Nakagami(shape m, spread Omega)``: ``lambda^2 ~ InverseGamma(m, m/Omega)``.

    The marginal is Student-t with ``2m`` degrees of freedom and scale ``sigma0 / sqrt(Omega)``.
    """

    name = "inverse-nakagami"
    parameters = {
        "shape": Parameter(2.0, *_POSITIVE, "Nakagami shape m"),
        "spread": Parameter(1.0, *_POSITIVE, "Nakagami spread Omega"),
    }
    noise_label = "inverse Nakagami"
    variance_label = "inverse gamma"
    marginal_label = "Student-t"

    def noise(self, device=None, dtype=None):
        return InverseNakagamiDistribution(self._t(self.shape, device, dtype), self._t(self.spread, device, dtype))

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


class HalfCauchy(NoiseModel):
    """``lambda ~ HalfCauchy(scale)``: the horseshoe prior (no named variance prior, no closed-form marginal)."""

    name = "half-cauchy"
    parameters = {"scale": Parameter(1.0, *_POSITIVE, "half-Cauchy scale")}
    noise_label = "half-Cauchy"
    variance_label = "unnamed"
    marginal_label = "horseshoe"

    def noise(self, device=None, dtype=None):
        return dist.HalfCauchy(self._t(self.scale, device, dtype))

    @property
    def second_moment(self) -> float:
        return math.inf


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
    key = normalize_name(name)
    if key not in NOISE_MODELS:
        raise UnknownNameError("noise model", name, NOISE_MODELS)
    return NOISE_MODELS[key](**params)
