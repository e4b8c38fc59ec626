"""The noise-model table, built from the noise-model classes themselves."""

from __future__ import annotations

import pandas as pd

from bnn_priors.noise_models import NOISE_MODELS


def _params(cls) -> str:
    return ", ".join(f"{k}={p.default:g} ({p.doc})" for k, p in cls.parameters.items())


def table() -> pd.DataFrame:
    """One row per noise model: p(lambda), p(lambda^2), p(w), and what Pyro gives for each.

    The ``variance prior`` and ``marginal`` distribution columns name the Pyro
    distribution each class returns with its default parameters (empty where there is
    no named or closed form).
    """
    rows = []
    for name, cls in NOISE_MODELS.items():
        model = cls()
        variance = model.variance_prior()
        marginal = model.marginal()
        rows.append(
            {
                "name": name,
                "noise p(λ)": cls.noise_label,
                "variance prior p(λ²)": cls.variance_label,
                "marginal prior p(w)": cls.marginal_label,
                "parameters (default)": _params(cls),
                "p(λ) distribution": type(model.noise()).__name__,
                "p(λ²) distribution": type(variance).__name__ if variance is not None else "",
                "p(w) distribution": type(marginal).__name__ if marginal is not None else "",
            }
        )
    return pd.DataFrame(rows).set_index("name")
