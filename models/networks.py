"""Bayesian networks as Pyro modules, with a leading replica dimension.

Every network carries ``R`` independent replicas from the start: weights have shape
``(R, in, out)``, inputs ``(R, N, D)`` and the Pyro model puts ``plate("replicas",
R)`` outermost. ``R = 1`` is the ordinary single model and inputs of shape
``(N, D)`` are broadcast to every replica, so users never see the dimension unless
they ask for it. Independent replicas (the splits of a data set, several seeds)
then train as one batched model.

The architecture is one forward function, :meth:`BayesianNetwork.forward_with`,
that takes the way each layer computes its pre-activation as an argument. The Pyro
model passes sampled weights; inference backends pass their own (a guide's sampled
weights, the local reparameterization, point weights with multiplicative noise).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.nn import PyroModule

from bnn_priors.checks import check_positive_float, check_positive_int
from bnn_priors.errors import DataError, InvalidParameterError, lookup
from bnn_priors.scale_mixture import NormalPrior, WeightPrior
from models.likelihoods import GaussianLikelihood

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": torch.relu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "elu": F.elu,
    "gelu": F.gelu,
    "softplus": F.softplus,
}


def _relu_without_mask(x: torch.Tensor) -> torch.Tensor:
    """``relu(x)`` as ``(x + |x|) / 2``: the same values exactly (``x + x`` and the halving are exact),
    and a gradient (``(1 + sign x) / 2``, ``1/2`` at 0 where relu's is 0) computed from ``x`` itself."""
    return 0.5 * (x + x.abs())


#: Activations written so that their gradient needs no boolean mask (see :meth:`BayesianNetwork.forward_with`).
MASK_FREE_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"relu": _relu_without_mask}


@dataclass(frozen=True)
class Layer:
    """One weight matrix of a network and its prior."""

    name: str
    in_features: int
    out_features: int
    prior: WeightPrior
    residual: bool = False
    output: bool = False


#: ``linear(layer, h)`` returns the layer's pre-activation for input ``h``.
LinearFn = Callable[[Layer, torch.Tensor], torch.Tensor]



class BayesianNetwork(PyroModule):
    """Base class: a stack of :class:`Layer` with priors, a likelihood and ``R`` replicas."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden: Sequence[int],
        activation: str,
        prior: WeightPrior | Sequence[WeightPrior] | Mapping[str, WeightPrior] | None,
        bias_scale: float,
        likelihood: GaussianLikelihood | None,
        replicas: int,
    ):
        super().__init__()
        self.in_features = check_positive_int("in_features", in_features)
        self.out_features = check_positive_int("out_features", out_features)
        if isinstance(hidden, int):
            hidden = (hidden,)
        self.hidden = tuple(check_positive_int("hidden layer width", h) for h in hidden)
        self.activation = lookup("activation", activation, ACTIVATIONS)
        self.bias_scale = check_positive_float("bias_scale", bias_scale)
        self.likelihood = likelihood if likelihood is not None else GaussianLikelihood()
        if not isinstance(self.likelihood, GaussianLikelihood):
            raise InvalidParameterError(f"likelihood must be a GaussianLikelihood, got {likelihood!r}")
        self.replicas = check_positive_int("replicas", replicas)
        sizes = (self.in_features, *self.hidden, self.out_features)
        names = [f"layer{i}" for i in range(len(self.hidden))] + ["output"]
        priors = self._layer_priors(prior, names)
        self.layers: tuple[Layer, ...] = tuple(
            Layer(
                name,
                sizes[i],
                sizes[i + 1],
                priors[name],
                residual=self._is_residual(i),
                output=name == "output",
            )
            for i, name in enumerate(names)
        )
        # Carries the device and dtype through .to(); the network has no parameters.
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)

    def _is_residual(self, index: int) -> bool:
        return False

    @staticmethod
    def _layer_priors(prior, names: list[str]) -> dict[str, WeightPrior]:
        if prior is None:
            prior = NormalPrior(1.0)
        if isinstance(prior, WeightPrior):
            return dict.fromkeys(names, prior)
        if isinstance(prior, Mapping):
            missing, extra = set(names) - set(prior), set(prior) - set(names)
            if missing or extra:
                raise InvalidParameterError(
                    f"a prior per layer needs exactly the layers {names}; "
                    f"missing {sorted(missing)}, unknown {sorted(extra)}"
                )
            priors = dict(prior)
        elif isinstance(prior, Sequence) and not isinstance(prior, str):
            if len(prior) != len(names):
                raise InvalidParameterError(
                    f"got {len(prior)} priors for {len(names)} weight matrices ({', '.join(names)})"
                )
            priors = dict(zip(names, prior))
        else:
            raise InvalidParameterError(
                f"prior must be a prior from bnn_priors.prior(...), a list or a dict of them, got {prior!r}"
            )
        for name, p in priors.items():
            if not isinstance(p, WeightPrior):
                raise InvalidParameterError(f"the prior of {name} is not a bnn_priors prior: {p!r}")
        return priors

    # ----------------------------------------------------------------- properties
    @property
    def device(self) -> torch.device:
        return self._anchor.device

    @property
    def dtype(self) -> torch.dtype:
        return self._anchor.dtype

    @property
    def layer(self) -> dict[str, Layer]:
        return {layer.name: layer for layer in self.layers}

    def extra_repr(self) -> str:
        return (
            f"in={self.in_features}, out={self.out_features}, hidden={self.hidden}, "
            f"activation={self.activation}, replicas={self.replicas}, "
            f"priors={[layer.prior.describe() for layer in self.layers]}, likelihood={self.likelihood}"
        )

    # --------------------------------------------------------------------- checks
    def check_inputs(self, X) -> torch.Tensor:
        """Inputs as a ``(R, N, D)`` tensor on the model's device; clear errors for bad data."""
        X = _as_tensor("X", X, self.device, self.dtype)
        if X.dim() == 2:
            X = X.unsqueeze(0)
        if X.dim() != 3:
            raise DataError(f"X must have shape (N, {self.in_features}) or (R, N, {self.in_features}), got {tuple(X.shape)}")
        if X.shape[-1] != self.in_features:
            raise DataError(f"X has {X.shape[-1]} features but the network expects in_features={self.in_features}")
        if X.shape[0] not in (1, self.replicas):
            raise DataError(f"X has {X.shape[0]} replicas but the network has replicas={self.replicas}")
        if X.shape[1] == 0:
            raise DataError("X has no data points")
        return X.expand(self.replicas, *X.shape[1:])

    def check_targets(self, y, X: torch.Tensor) -> torch.Tensor:
        """Targets as a ``(R, N, out)`` tensor matching inputs ``X`` of shape ``(R, N, D)``."""
        y = _as_tensor("y", y, self.device, self.dtype)
        given = tuple(y.shape)
        R, N, out = self.replicas, X.shape[1], self.out_features
        if y.dim() == 1:
            y = y.reshape(1, -1, 1)
        elif y.dim() == 2:
            if out == 1 and y.shape[1] == N and y.shape[0] in (1, R):
                y = y.unsqueeze(-1)  # (R, N)
            else:
                y = y.unsqueeze(0)  # (N, out)
        if y.dim() != 3 or y.shape[1:] != (N, out) or y.shape[0] not in (1, R):
            raise DataError(
                f"y has shape {given}, which does not match X with {N} points, "
                f"{R} replicas and out_features={out}; expected (N,), (N, out), (R, N) or (R, N, out)"
            )
        return y.expand(R, N, out)

    # -------------------------------------------------------------------- forward
    def forward_with(self, X: torch.Tensor, linear: LinearFn, mask_free: bool = False) -> torch.Tensor:
        """The architecture: run ``linear(layer, h)`` for every layer, with activations and skips.

        ``mask_free``: the activation's form in :data:`MASK_FREE_ACTIVATIONS` where it has one, for
        code that ``torch.compile`` compiles: the CPU code inductor generates stores a boolean mask
        (relu's, for its gradient) a byte at a time, which on resnet-2x50 took most of a compiled
        SVI step (``benchmarks/replica_throughput.py``)."""
        act = (MASK_FREE_ACTIVATIONS.get(self.activation) if mask_free else None) or ACTIVATIONS[self.activation]
        h = X
        for layer in self.layers:
            a = linear(layer, h)
            if layer.output:
                h = a
            elif layer.residual:
                h = h + act(a)
            else:
                h = act(a)
        return h

    def sample_parameters(self) -> dict[str, torch.Tensor]:
        """Declare every weight and bias site (inside the replicas plate); return them by name."""
        params: dict[str, torch.Tensor] = {}
        zero = torch.zeros((), device=self.device, dtype=self.dtype)
        for layer in self.layers:
            params[f"{layer.name}.weight"] = layer.prior.sample_weight(
                layer.name, layer.in_features, layer.out_features, self.device, self.dtype
            )
            params[f"{layer.name}.bias"] = pyro.sample(
                f"{layer.name}.bias",
                dist.Normal(zero, zero + self.bias_scale).expand([layer.out_features]).to_event(1),
            )
        return params

    def forward_params(self, X: torch.Tensor, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Network output ``(..., R, N, out)`` for given weights ``(..., R, in, out)`` and biases ``(..., R, out)``."""
        return self.forward_with(
            X, lambda layer, h: h @ params[f"{layer.name}.weight"] + params[f"{layer.name}.bias"].unsqueeze(-2)
        )

    def forward(self, X, y=None, data_size: int | None = None) -> torch.Tensor:
        """The Pyro model: priors on every weight, the network, the likelihood.

        ``data_size`` scales the likelihood of a mini-batch up to the full data set.
        """
        X = self.check_inputs(X)
        y = None if y is None else self.check_targets(y, X)
        scale = 1.0 if data_size is None else float(data_size) / X.shape[1]
        with pyro.plate("replicas", self.replicas, dim=-1):
            params = self.sample_parameters()
            f = self.forward_params(X, params)
            pyro.deterministic("f", f, event_dim=2)
            precision = self.likelihood.sample_precision(self.device, self.dtype)
            self.likelihood.observe(f, y, precision, scale=scale)
        return f


class BayesianMLP(BayesianNetwork):
    """A fully connected Bayesian network: ``BayesianMLP(13, 1, hidden=(50,), prior=bnn_priors.prior("half-cauchy"))``.

    ``prior`` is one prior for every weight matrix, a list with one per matrix
    (``len(hidden) + 1``), or a dict by layer name (``layer0``, ..., ``output``).
    Biases have their own ``N(0, bias_scale^2)`` prior.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int = 1,
        hidden: Sequence[int] = (50,),
        activation: str = "relu",
        prior=None,
        bias_scale: float = 1.0,
        likelihood: GaussianLikelihood | None = None,
        replicas: int = 1,
    ):
        super().__init__(in_features, out_features, hidden, activation, prior, bias_scale, likelihood, replicas)


class BayesianResNet(BayesianNetwork):
    """A residual Bayesian MLP: hidden layers of equal width joined by skip connections.

    ``h_1 = f(x W_0)``; ``h_l = h_{l-1} + f(h_{l-1} W_{l-1})`` for ``l >= 2``;
    output ``h_L W_L``. The first layer and the output layer are never residual.
    Skips let a whole layer shrink to zero (automatic depth determination).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int = 1,
        hidden: Sequence[int] = (50, 50),
        activation: str = "relu",
        prior=None,
        bias_scale: float = 1.0,
        likelihood: GaussianLikelihood | None = None,
        replicas: int = 1,
    ):
        widths = (hidden,) if isinstance(hidden, int) else tuple(hidden)
        if len(set(widths)) > 1:
            raise InvalidParameterError(f"a residual network needs hidden layers of equal width, got {widths}")
        super().__init__(in_features, out_features, widths, activation, prior, bias_scale, likelihood, replicas)

    def _is_residual(self, index: int) -> bool:
        return 1 <= index < len(self.hidden)


def _as_tensor(label: str, value, device, dtype) -> torch.Tensor:
    try:
        t = torch.as_tensor(np.asarray(value) if not torch.is_tensor(value) else value)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{label} must be an array of numbers: {exc}") from None
    if not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64, torch.int16, torch.uint8)):
        raise DataError(f"{label} must hold numbers, got dtype {t.dtype}")
    t = t.to(device=device, dtype=dtype)
    bad = ~torch.isfinite(t)
    if bad.any():
        raise DataError(f"{label} has {int(bad.sum())} NaN or infinite values")
    return t
