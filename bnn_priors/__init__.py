"""bnn-priors: Bayesian neural networks whose priors are the scale mixtures of dropout-style noise.

Priors live here (noise models, structures, the table). Networks and likelihoods are
in the ``models`` package, inference backends in ``inference``; the UCI data
registry, the benchmark runner and the command line are subpackages of this one.
"""

from bnn_priors.errors import (
    BNNPriorsError,
    CheckpointInUseError,
    DataError,
    FitDivergedError,
    InvalidParameterError,
    UnknownNameError,
    UnsupportedCombinationError,
)
from bnn_priors.noise_models import NOISE_MODELS, NoiseModel, noise_model
from bnn_priors.scale_mixture import (
    PRIOR_NAMES,
    LogUniformPrior,
    NormalPrior,
    ScaleMixturePrior,
    WeightPrior,
    prior,
)
from bnn_priors.structures import STRUCTURES
from bnn_priors.table import table

__version__ = "0.1.0"

__all__ = [
    "BNNPriorsError",
    "CheckpointInUseError",
    "DataError",
    "FitDivergedError",
    "InvalidParameterError",
    "LogUniformPrior",
    "NOISE_MODELS",
    "NoiseModel",
    "NormalPrior",
    "PRIOR_NAMES",
    "STRUCTURES",
    "ScaleMixturePrior",
    "UnknownNameError",
    "UnsupportedCombinationError",
    "WeightPrior",
    "noise_model",
    "prior",
    "table",
]
