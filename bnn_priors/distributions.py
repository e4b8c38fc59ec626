"""Distributions the noise models need that Pyro does not ship.

Both are built as transformed distributions of Pyro's own, so they are
reparameterized (``has_rsample``) and run on any device their parameters are on.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch.distributions import constraints
from torch.distributions.transforms import PowerTransform


def _tensor(x) -> torch.Tensor:
    return x if torch.is_tensor(x) else torch.tensor(float(x))


def _sqrt(like: torch.Tensor) -> PowerTransform:
    return PowerTransform(torch.tensor(0.5, dtype=like.dtype, device=like.device))


class Rayleigh(dist.TransformedDistribution):
    """Rayleigh(scale): the length of a 2-D vector of N(0, scale^2) components.

    Built as ``sqrt(E)`` with ``E ~ Exponential(rate = 1 / (2 scale^2))``, which is
    exactly the statement that lambda^2 is exponential when lambda is Rayleigh.
    """

    arg_constraints = {"scale": constraints.positive}
    support = constraints.positive

    def __init__(self, scale, validate_args=None):
        self.scale = _tensor(scale)
        base = dist.Exponential(0.5 / self.scale**2)
        super().__init__(base, [_sqrt(self.scale)], validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(Rayleigh, _instance)
        new.scale = self.scale.expand(batch_shape)
        return super().expand(batch_shape, _instance=new)

    @property
    def mean(self):
        return self.scale * (torch.pi / 2) ** 0.5

    @property
    def variance(self):
        return (2 - torch.pi / 2) * self.scale**2


class InverseNakagami(dist.TransformedDistribution):
    """Inverse Nakagami(shape m, spread Omega): ``1 / X`` for ``X ~ Nakagami(m, Omega)``.

    Nakagami's ``X^2`` is Gamma(m, rate m / Omega), so ``lambda^2 = 1 / X^2`` is
    InverseGamma(m, m / Omega). Built as ``sqrt`` of Pyro's InverseGamma.
    """

    arg_constraints = {"m": constraints.positive, "spread": constraints.positive}
    support = constraints.positive

    def __init__(self, shape, spread, validate_args=None):
        self.m, self.spread = torch.broadcast_tensors(_tensor(shape), _tensor(spread))
        base = dist.InverseGamma(self.m, self.m / self.spread)
        super().__init__(base, [_sqrt(self.m)], validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(InverseNakagami, _instance)
        new.m = self.m.expand(batch_shape)
        new.spread = self.spread.expand(batch_shape)
        return super().expand(batch_shape, _instance=new)


class ImproperLogUniform(dist.ImproperUniform):
    """The improper log-uniform density ``p(w) ∝ 1/|w|`` on the real line.

    It is the normal-Jeffreys scale mixture (``w ~ N(0, v)``, ``p(v) ∝ 1/v``) behind
    variational dropout (Kingma et al. 2015; Louizos et al. 2017). It has a
    log-density up to a constant but no samples.
    """

    def __init__(self, batch_shape=(), event_shape=(), validate_args=None):
        super().__init__(constraints.real, batch_shape, event_shape)
        if validate_args is not None:
            self._validate_args = validate_args

    def log_prob(self, value):
        lp = -value.abs().log()
        return lp.sum(list(range(-len(self.event_shape), 0))) if self.event_shape else lp

    def expand(self, batch_shape, _instance=None):
        return ImproperLogUniform(torch.Size(batch_shape), self.event_shape)
