"""Closed-form scale updates (type-II MAP / EM) for ARD, ADD and ARD-ADD scale mixtures.

Given a mean-field Gaussian ``q(w)``, each scale ``lambda_k`` (shared by a group of
``J`` weights) is set to the maximiser over ``u = log v``, ``v = lambda_k^2``, of

    g(v) = E_q[log N(w_group | 0, v * c * sigma0^2)] + log p(v) + log v,

where ``c`` is the product of the group's other squared scales (ARD-ADD), ``p(v)``
is the density the noise model induces on ``lambda^2`` and ``+ log v`` is the
Jacobian of ``u = log v``. The mode is taken in ``log v`` on purpose: it is
invariant to the choice of scale parametrization, and the mode in ``v`` itself is
degenerate for ARD-ADD (the horseshoe's ``p(v)`` has a pole at zero, so the unit
scales collapse to zero while the layer scale runs to infinity; the tests show the
log-space objective is bounded). With ``S = sum_group E_q[w^2] / c``
(``E_q[w^2] = mu^2 + sigma^2``) and ``s2 = sigma0^2``, ``g'(v) = 0`` has a
closed-form positive root for three noise models (Nalisnick et al. 2019 fit their
ARD/ADD networks with such EM steps):

* inverse Nakagami, ``v ~ InverseGamma(a, b)`` with ``a = m``, ``b = m / Omega``::

      g(v)  = -(J/2 + a) log v - (S/(2 s2) + b) / v
      v*    = (b + S/(2 s2)) / (a + J/2)

* half-Cauchy(scale t): ``p(v) ∝ v^{-1/2} / (1 + v/t^2)``::

      g'(v) = -(J-1)/(2v) + S/(2 s2 v^2) - 1/(t^2 + v) = 0
      (J+1) s2 v^2 - (S - (J-1) s2 t^2) v - S t^2 = 0     (the positive root)

* Rayleigh(scale r), ``v ~ Exponential(rate k = 1/(2 r^2))``::

      g'(v) = -(J-2)/(2v) + S/(2 s2 v^2) - k = 0
      k v^2 + ((J-2)/2) v - S/(2 s2) = 0                  (the positive root)

Each quadratic has exactly one positive root (its constant term is negative), the
unique stationary point of ``g`` on ``v > 0``, a maximum since ``g`` falls to
``-inf`` at both ends. The tests check the roots against numerical optimisation.
"""

from __future__ import annotations

import torch

from bnn_priors.noise_models import HalfCauchy, InverseNakagami, NoiseModel, Rayleigh

CLOSED_FORM_NOISE = (InverseNakagami.name, HalfCauchy.name, Rayleigh.name)


def map_variance(noise: NoiseModel, S: torch.Tensor, J: int | float, sigma0: float) -> torch.Tensor:
    """The maximiser ``v* = lambda^2`` of the objective above, elementwise in ``S``."""
    s2 = float(sigma0) ** 2
    J = float(J)
    if isinstance(noise, InverseNakagami):
        a, b = noise.shape, noise.shape / noise.spread
        return (b + S / (2 * s2)) / (a + J / 2)
    if isinstance(noise, HalfCauchy):
        t2 = noise.scale**2
        A = (J + 1) * s2
        B = S - (J - 1) * s2 * t2
        return (B + torch.sqrt(B * B + 4 * A * S * t2)) / (2 * A)
    if isinstance(noise, Rayleigh):
        k = 0.5 / noise.scale**2
        h = (J - 2) / 2
        return (-h + torch.sqrt(h * h + 2 * k * S / s2)) / (2 * k)
    raise ValueError(f"no closed-form scale update for noise model {noise.name!r}")


def objective(noise: NoiseModel, v: torch.Tensor, S: torch.Tensor, J: int | float, sigma0: float) -> torch.Tensor:
    """``g(v)`` (with the ``log v`` Jacobian) up to an additive constant, for tests and diagnostics."""
    s2 = float(sigma0) ** 2
    J = float(J)
    expected_loglik = -0.5 * J * torch.log(v) - S / (2 * s2 * v)
    if isinstance(noise, InverseNakagami):
        a, b = noise.shape, noise.shape / noise.spread
        log_prior = -(a + 1) * torch.log(v) - b / v
    elif isinstance(noise, HalfCauchy):
        log_prior = -0.5 * torch.log(v) - torch.log1p(v / noise.scale**2)
    elif isinstance(noise, Rayleigh):
        log_prior = -0.5 / noise.scale**2 * v
    else:
        raise ValueError(f"no closed-form scale update for noise model {noise.name!r}")
    return expected_loglik + log_prior + torch.log(v)
