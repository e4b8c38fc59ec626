"""Interchangeable inference backends: ``fit(model, X, y) -> Posterior``.

``SVI`` (reparameterized guides), ``NUTS`` (Hamiltonian Monte Carlo) and
``MCDropout`` (multiplicative-noise training). Each backend refuses, before doing
any work, the priors and models it cannot handle, and names what to use instead.
"""

from inference.common import InferenceBackend, Posterior, Prediction
from inference.mc_dropout import MCDropout, MCDropoutPosterior
from inference.nuts import NUTS, NUTSPosterior
from inference.svi import SVI, SVIPosterior

BACKENDS = {"svi": SVI, "nuts": NUTS, "mc-dropout": MCDropout}

__all__ = [
    "BACKENDS",
    "InferenceBackend",
    "MCDropout",
    "MCDropoutPosterior",
    "NUTS",
    "NUTSPosterior",
    "Posterior",
    "Prediction",
    "SVI",
    "SVIPosterior",
]
