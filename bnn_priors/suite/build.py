"""What a run's configuration stands for: its prior, its network, its table label.

Imports: :mod:`bnn_priors` (priors), :mod:`models` (the architectures' registry),
:mod:`bnn_priors.suite.config` and :mod:`bnn_priors.suite.methods`.
"""

from __future__ import annotations

from typing import Any

import bnn_priors
from bnn_priors.errors import InvalidParameterError
from bnn_priors.scale_mixture import UNSTRUCTURED_PRIORS
from bnn_priors.structures import check_structure
from bnn_priors.suite.config import RunConfig
from bnn_priors.suite.methods import get_method
from models import ARCHITECTURES, GaussianLikelihood

#: Options of a config that shape its model rather than its backend (the backend never sees them):
#:
#: ``outer_structure``
#:     the structure of the first (input) and the last (output) weight matrix; the
#:     config's structure is then that of the hidden-to-hidden matrices only (Nalisnick
#:     et al.'s released code puts ADD and ARD-ADD scales on those and ARD on the others).
#: ``likelihood_precision``
#:     a fixed likelihood precision on the standardized targets instead of a learned one.
MODEL_OPTIONS = ("outer_structure", "likelihood_precision")


def build_prior(config: RunConfig, structure: str | None = None):
    """The layer prior of a config (the config's structure, or ``structure``)."""
    return bnn_priors.prior(config.noise, structure=structure or config.structure, **config.prior)


def build_model(config: RunConfig, in_features: int, replicas: int = 1):
    """The network of a config: every weight matrix gets the config's prior (the first and last the
    ``outer_structure`` option's, when given); tau is learned unless ``likelihood_precision`` fixes it."""
    arch = config.architecture
    prior = build_prior(config)
    outer = config.options.get("outer_structure")
    if outer is not None:
        if config.noise in UNSTRUCTURED_PRIORS:
            raise InvalidParameterError(f"option outer_structure needs a prior with scales; {config.noise} has none")
        edge = build_prior(config, check_structure(outer))
        prior = [edge, *[prior] * (arch.depth - 1), edge]
    precision = config.options.get("likelihood_precision")
    likelihood = None if precision is None else GaussianLikelihood(precision=precision)
    return ARCHITECTURES[arch.kind](in_features, 1, hidden=arch.hidden, prior=prior, likelihood=likelihood,
                                    replicas=replicas)


def heatmap_layer(config: RunConfig) -> str:
    """The weight matrix kept for heat maps: the first hidden-to-hidden one (``layer1``),
    or the first weight matrix (``layer0``) of a one-hidden-layer network."""
    return "layer1" if config.architecture.depth >= 2 else "layer0"


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def method_label(config: RunConfig) -> str:
    """A readable column label, e.g. ``MC dropout (bernoulli/ard, mlp-1x50)``.

    Noise parameters and options that are not the method's defaults are appended,
    e.g. ``SVI (half-cauchy(scale=0.5)/ard, mlp-1x50, lr=0.001)``.
    """
    method = get_method(config.inference)
    noise = config.noise
    if config.prior:
        noise += "(" + ", ".join(f"{k}={_fmt(v)}" for k, v in config.prior.items()) + ")"
    prior = noise if config.noise in UNSTRUCTURED_PRIORS else f"{noise}/{config.structure}"
    defaults = method.default_options()
    extra = [f"{k}={_fmt(v)}" for k, v in config.options.items() if k not in defaults or defaults[k] != v]
    return f"{method.label} ({', '.join([prior, config.arch, *extra])})"


def run_label(config: RunConfig) -> str:
    """The label of a run in tables: the config's own (a preset's name for it), else :func:`method_label`."""
    return config.label or method_label(config)
