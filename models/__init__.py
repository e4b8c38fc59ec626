"""Network architectures and likelihoods, as Pyro models. Never imports ``inference``."""

from models.likelihoods import GaussianLikelihood
from models.networks import ACTIVATIONS, BayesianMLP, BayesianNetwork, BayesianResNet, Layer

#: Every architecture by kind: the one registry (the benchmark runner's ``{kind}-{depth}x{width}`` names read it).
ARCHITECTURES = {"mlp": BayesianMLP, "resnet": BayesianResNet}

__all__ = [
    "ACTIVATIONS",
    "ARCHITECTURES",
    "BayesianMLP",
    "BayesianNetwork",
    "BayesianResNet",
    "GaussianLikelihood",
    "Layer",
]
