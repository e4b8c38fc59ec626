"""What a run's configuration stands for: its prior, its network, its table label.

Imports: :mod:`bnn_priors` (priors), :mod:`models` (the architectures' registry),
:mod:`bnn_priors.suite.config` and :mod:`bnn_priors.suite.methods`.
"""

from __future__ import annotations

from typing import Any

import bnn_priors
from bnn_priors.scale_mixture import UNSTRUCTURED_PRIORS
from bnn_priors.suite.config import RunConfig
from bnn_priors.suite.methods import get_method
from models import ARCHITECTURES


def build_prior(config: RunConfig):
    """The layer prior of a config (the same for every weight matrix)."""
    return bnn_priors.prior(config.noise, structure=config.structure, **config.prior)


def build_model(config: RunConfig, in_features: int, replicas: int = 1):
    """The network of a config: every weight matrix gets the config's prior; tau is learned."""
    arch = config.architecture
    return ARCHITECTURES[arch.kind](in_features, 1, hidden=arch.hidden, prior=build_prior(config), replicas=replicas)


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
