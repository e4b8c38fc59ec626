"""Likelihoods: how network outputs explain the targets."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch

from bnn_priors.errors import InvalidParameterError


class GaussianLikelihood:
    """Homoskedastic Gaussian noise ``y ~ N(f(x), 1/tau)``.

    ``precision=None`` learns tau with a ``Gamma(concentration, rate)`` prior (site
    ``likelihood.precision``); a number fixes it. The default Gamma(1, 0.1) has mean
    10, i.e. a noise standard deviation near 0.3 on standardized targets, and a long
    tail either way.
    """

    site = "likelihood.precision"

    def __init__(self, precision: float | None = None, concentration: float = 1.0, rate: float = 0.1):
        for label, value in (("concentration", concentration), ("rate", rate)) + (
            (("precision", precision),) if precision is not None else ()
        ):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise InvalidParameterError(f"GaussianLikelihood {label} must be a positive number, got {value!r}")
        self.precision = None if precision is None else float(precision)
        self.concentration = float(concentration)
        self.rate = float(rate)

    @property
    def learned(self) -> bool:
        return self.precision is None

    def __repr__(self) -> str:
        if self.learned:
            return f"GaussianLikelihood(precision ~ Gamma({self.concentration:g}, {self.rate:g}))"
        return f"GaussianLikelihood(precision={self.precision:g})"

    def precision_prior(self, device=None, dtype=None) -> dist.Gamma:
        t = torch.tensor([self.concentration, self.rate], device=device, dtype=dtype or torch.get_default_dtype())
        return dist.Gamma(t[0], t[1])

    def sample_precision(self, device=None, dtype=None) -> torch.Tensor:
        """Inside a Pyro model (and the replicas plate): the precision, sampled or fixed."""
        if self.learned:
            return pyro.sample(self.site, self.precision_prior(device, dtype))
        return torch.tensor(self.precision, device=device, dtype=dtype or torch.get_default_dtype())

    def distribution(self, f: torch.Tensor, precision: torch.Tensor) -> dist.Normal:
        """``N(f, 1/tau)`` with ``f`` of shape ``(..., R, N, out)`` and ``tau`` of shape ``(..., R)``."""
        precision = torch.as_tensor(precision, device=f.device, dtype=f.dtype)
        if precision.dim():
            precision = precision[..., None, None]
        return dist.Normal(f, precision.rsqrt())

    def log_prob(self, f: torch.Tensor, y: torch.Tensor, precision: torch.Tensor) -> torch.Tensor:
        """Log-likelihood summed over data points and outputs: shape ``(..., R)``.

        Written out (``-tau/2 ||y - f||^2 + n/2 log(tau / 2 pi)``) rather than through a
        distribution object: this is the inner loop of the SVI objective.
        """
        precision = torch.as_tensor(precision, device=f.device, dtype=f.dtype)
        n = f.shape[-2] * f.shape[-1]
        sq = ((y - f) ** 2).sum((-2, -1))
        return -0.5 * precision * sq + 0.5 * n * (torch.log(precision) - math.log(2 * math.pi))

    def observe(self, f: torch.Tensor, y: torch.Tensor | None, precision: torch.Tensor, scale: float = 1.0):
        """Declare the observation site ``obs`` (event dims: data points and outputs)."""
        with pyro.poutine.scale(scale=scale):
            return pyro.sample("obs", self.distribution(f, precision).to_event(2), obs=y)
