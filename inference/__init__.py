"""Interchangeable inference backends: ``fit(model, X, y) -> Posterior``.

``SVI`` (reparameterized guides), ``NUTS`` (Hamiltonian Monte Carlo) and
``MCDropout`` (multiplicative-noise training). Each backend refuses, before doing
any work, the priors and models it cannot handle, and names what to use instead.
"""

from inference.common import InferenceBackend, Posterior, Prediction
from inference.mc_dropout import MCDropout, MCDropoutPosterior
from inference.nuts import NUTS, NUTSPosterior
from inference.svi import SVI, SVIPosterior

#: Every backend by its ``name``: the one registry of backends (the benchmark runner's methods and the
#: command line read it). A backend class declares, besides ``fit`` and ``check_model``, its ``options``
#: (keyword -> default), ``budget_option`` and ``budget_unit`` (what a training budget counts) and
#: ``replica_options`` (options that take one value per replica).
BACKENDS = {backend.name: backend for backend in (SVI, NUTS, MCDropout)}

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
