"""Weight priors for one layer: the Gaussian scale mixture induced by a noise model.

``ScaleMixturePrior(noise, structure, sigma0)`` is the hierarchical prior
``w_ij ~ N(0, sigma0^2 * prod_k lambda_k^2)`` whose scales ``lambda_k`` follow the
noise model and are shared as the structure says. It gives the same distribution in
two parametrizations:

* hierarchical (what a Pyro model declares): scale sites ``<layer>.<kind>`` and the
  weight site ``<layer>.weight ~ N(0, std(lambda))``;
* expanded (what multiplicative-noise training uses): ``w = lambda * z`` with
  ``z ~ N(0, sigma0^2)``: :meth:`sample_noise` gives the noise to multiply units by.

Two priors without noise sit beside it: :class:`NormalPrior` (``N(0, sigma0^2)``,
no scales) and :class:`LogUniformPrior` (the improper ``p(w) ∝ 1/|w|`` of
variational dropout). None of these knows about inference: a backend asks a prior
what it needs (:class:`WeightPrior`) instead of testing its type.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import pyro
import pyro.distributions as dist
import torch

from bnn_priors.distributions import ImproperLogUniform
from bnn_priors.errors import InvalidParameterError, lookup
from bnn_priors.noise_models import NOISE_MODELS, NoiseModel, noise_model
from bnn_priors.structures import check_structure, scale_shapes

Shape = tuple[int, ...]


def _check_sigma0(sigma0: float) -> float:
    try:
        value = float(sigma0)
    except (TypeError, ValueError):
        raise InvalidParameterError(f"sigma0 must be a positive number, got {sigma0!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise InvalidParameterError(f"sigma0 must be a positive number, got {sigma0!r}")
    return value


def _check_features(in_features: int, out_features: int) -> None:
    for label, n in (("in_features", in_features), ("out_features", out_features)):
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise InvalidParameterError(f"{label} must be a positive integer, got {n!r}")


class WeightPrior:
    """Common interface of the layer priors, and what the inference backends ask of them.

    A proper prior is ``w ~ N(0, weight_std(scales)^2)`` given its scales, which
    follow ``noise`` and are shared as ``scale_shapes`` says (no scales: ``noise`` is
    ``None`` and the prior is ``N(0, sigma0^2)``). An improper prior (``proper`` is
    false) has no samples and no such form; a backend that needs them refuses it,
    naming its ``density``.
    """

    name: str
    structure: str = "none"
    sigma0: float = 1.0
    #: Whether the prior can be sampled (improper priors cannot).
    proper: bool = True
    #: The noise model of the scales, ``None`` for a prior without scales.
    noise: NoiseModel | None = None
    #: p(w) in words, for messages.
    density: str = "N(0, sigma0^2)"

    def scale_shapes(self, in_features: int, out_features: int) -> dict[str, tuple[int, int]]:
        """The scale sites of a layer, ``{kind: shape}`` (empty for priors without scales)."""
        return {}

    def weight_std(self, scales: Mapping[str, torch.Tensor]) -> torch.Tensor | float:
        """The conditional standard deviation of the weights given ``{kind: lambda}``: ``sigma0`` without scales."""
        return self.sigma0

    def sample_weight(self, name: str, in_features: int, out_features: int, device=None, dtype=None) -> torch.Tensor:
        """Declare the layer's sample sites inside a Pyro model and return its weight matrix."""
        raise NotImplementedError

    def sample_weights(self, in_features: int, out_features: int, sample_shape: Shape = ()) -> torch.Tensor:
        """Draw prior weight matrices, shape ``sample_shape + (in, out)``, through the Pyro declaration."""
        _check_features(in_features, out_features)
        if not self.proper:
            raise InvalidParameterError(f"the {self.name} prior is improper: it cannot be sampled")
        sample_shape = tuple(sample_shape)
        n = math.prod(sample_shape)
        with pyro.poutine.block(), pyro.plate("prior_samples", n, dim=-1):
            w = self.sample_weight("w", in_features, out_features)
        w = w.expand(n, in_features, out_features) if w.dim() == 2 else w
        return w.reshape(sample_shape + (in_features, out_features))

    def describe(self) -> str:
        return self.name


class NormalPrior(WeightPrior):
    """The plain Gaussian prior ``w ~ N(0, sigma0^2)`` with no scales (the baseline)."""

    name = "normal"

    def __init__(self, sigma0: float = 1.0):
        self.sigma0 = _check_sigma0(sigma0)

    def sample_weight(self, name, in_features, out_features, device=None, dtype=None):
        std = torch.tensor(self.sigma0, device=device, dtype=dtype or torch.get_default_dtype())
        return pyro.sample(
            f"{name}.weight",
            dist.Normal(torch.zeros((), device=device, dtype=std.dtype), std).expand([in_features, out_features]).to_event(2),
        )

    def __repr__(self) -> str:
        return f"NormalPrior(sigma0={self.sigma0:g})"


class LogUniformPrior(WeightPrior):
    """The improper log-uniform prior ``p(w) ∝ 1/|w|`` of variational dropout.

    It is the normal-Jeffreys scale mixture (``p(lambda^2) ∝ 1/lambda^2``), the limit
    of the Student-t (inverse-Nakagami) mixture as its shape goes to zero, with one
    independent scale per weight. How a variational-dropout guide shares its noise
    rate alpha (per weight or per input unit) is the guide's choice. It has no
    samples; inference backends that need them refuse it.
    """

    name = "log-uniform"
    proper = False
    density = "p(w) ∝ 1/|w|"

    def weight_std(self, scales):
        raise InvalidParameterError("the log-uniform prior is improper: it is not Gaussian given declared scales")

    def sample_weight(self, name, in_features, out_features, device=None, dtype=None):
        return pyro.sample(f"{name}.weight", ImproperLogUniform(event_shape=(in_features, out_features)))

    def __repr__(self) -> str:
        return "LogUniformPrior()"


class ScaleMixturePrior(WeightPrior):
    """``w_ij ~ N(0, sigma0^2 prod_k lambda_k^2)``, ``lambda_k ~ noise``, shared as ``structure`` says."""

    density = "N(0, sigma0^2 prod_k lambda_k^2)"

    def __init__(self, noise: NoiseModel, structure: str = "ard", sigma0: float = 1.0):
        if not isinstance(noise, NoiseModel):
            raise InvalidParameterError(f"noise must be a NoiseModel, got {noise!r}")
        self.noise: NoiseModel = noise
        self.structure = check_structure(structure)
        self.sigma0 = _check_sigma0(sigma0)

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.noise.name

    def __repr__(self) -> str:
        return f"ScaleMixturePrior({self.noise!r}, structure={self.structure!r}, sigma0={self.sigma0:g})"

    def describe(self) -> str:
        return f"{self.noise.name}/{self.structure}"

    def scale_shapes(self, in_features, out_features):
        return scale_shapes(self.structure, in_features, out_features)

    def weight_std(self, scales: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``sigma0 * prod |lambda_k|``: the conditional standard deviation of the weights.

        The absolute value matters only for Gaussian noise, whose lambda can be negative
        (``N(0, lambda^2 sigma0^2)`` depends on lambda^2 alone).
        """
        std = None
        for value in scales.values():
            std = value.abs() if std is None else std * value.abs()
        return self.sigma0 * std

    def sample_weight(self, name, in_features, out_features, device=None, dtype=None):
        noise = self.noise.noise(device, dtype)
        scales = {
            kind: pyro.sample(f"{name}.{kind}", noise.expand(shape).to_event(2))
            for kind, shape in self.scale_shapes(in_features, out_features).items()
        }
        std = self.weight_std(scales)
        shape = [in_features, out_features]
        if self.noise.has_atom_at_zero:
            # N(0, 0) has no density: declare the expanded (non-centred) form w = std * z.
            zero, one = torch.zeros((), device=std.device, dtype=std.dtype), torch.ones((), device=std.device, dtype=std.dtype)
            z = pyro.sample(f"{name}.weight_z", dist.Normal(zero, one).expand(shape).to_event(2))
            return pyro.deterministic(f"{name}.weight", std * z, event_dim=2)
        return pyro.sample(f"{name}.weight", dist.Normal(torch.zeros_like(std), std).expand(std.shape[:-2] + torch.Size(shape)).to_event(2))

    def sample_noise(
        self, in_features: int, out_features: int, sample_shape: Shape = (), device=None, dtype=None
    ) -> dict[str, torch.Tensor]:
        """The expanded form's noise: ``{kind: lambda}``, each ``sample_shape + scale shape``.

        Multiply a layer's input units (``unit_scale``), its weights (``weight_scale``)
        or the whole layer input (``layer_scale``) by these.
        """
        _check_features(in_features, out_features)
        noise = self.noise.noise(device, dtype)
        return {
            kind: noise.sample(tuple(sample_shape) + shape)
            for kind, shape in self.scale_shapes(in_features, out_features).items()
        }

    def expanded_weights(self, in_features: int, out_features: int, sample_shape: Shape = ()) -> torch.Tensor:
        """Prior weights in the expanded form ``lambda * z``, ``z ~ N(0, sigma0^2)``."""
        noise = self.sample_noise(in_features, out_features, sample_shape)
        z = self.sigma0 * torch.randn(tuple(sample_shape) + (in_features, out_features))
        for value in noise.values():
            z = z * value
        return z


#: Priors without shared scales (structure ``none`` only).
UNSTRUCTURED_PRIORS = ("normal", "log-uniform")
PRIOR_NAMES = (*NOISE_MODELS, *UNSTRUCTURED_PRIORS)


def prior(
    noise: str | NoiseModel, structure: str | None = None, sigma0: float = 1.0, **noise_params: float
) -> WeightPrior:
    """Build a layer prior: ``prior("half-cauchy", structure="ard", sigma0=1.0, scale=1.0)``.

    ``noise`` is a noise-model name (see :func:`bnn_priors.noise_model`) or instance;
    ``structure`` is ``none``, ``ard`` (the default), ``add`` or ``ard-add``. Two more
    names build priors without shared scales: ``"normal"`` (``N(0, sigma0^2)``) and
    ``"log-uniform"`` (variational dropout's improper prior); they take structure
    ``none`` only.
    """
    if isinstance(noise, NoiseModel):
        return ScaleMixturePrior(noise_model(noise, **noise_params), structure if structure is not None else "ard", sigma0)
    key = lookup("prior", noise, PRIOR_NAMES)
    if key in UNSTRUCTURED_PRIORS:
        if structure is not None and check_structure(structure) != "none":
            raise InvalidParameterError(f"the {key} prior has no shared scales: it takes structure 'none', got {structure!r}")
        if noise_params:
            raise InvalidParameterError(f"the {key} prior takes no noise parameters, got {', '.join(noise_params)}")
        if key == "normal":
            return NormalPrior(sigma0)
        if sigma0 != 1.0:
            raise InvalidParameterError("the log-uniform prior is scale-free: it takes no sigma0")
        return LogUniformPrior()
    return ScaleMixturePrior(noise_model(key, **noise_params), structure if structure is not None else "ard", sigma0)
