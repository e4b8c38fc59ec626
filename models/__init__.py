"""Network architectures and likelihoods, as Pyro models. Never imports ``inference``."""

from models.likelihoods import GaussianLikelihood
from models.networks import ACTIVATIONS, BayesianMLP, BayesianNetwork, BayesianResNet, Layer

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
