"""MC dropout: training with multiplicative noise drawn from each layer's prior.

A :class:`~bnn_priors.ScaleMixturePrior` ``w = lambda * z`` has an *expanded*
parametrization (Nalisnick et al. 2019, "Dropout as a structured shrinkage prior"):
point weights ``M`` (the ``z``) and noise ``lambda`` drawn afresh at every forward
pass, multiplying the layer's input where the structure puts the scale. Training
the point weights with that noise and a Gaussian decay on ``M`` is dropout as
approximate variational inference (Gal & Ghahramani 2016, "Dropout as a Bayesian
approximation"); the trained network with the noise left on gives the predictive
distribution by Monte Carlo.

Noise placement (``h`` is a layer's input, ``(R, B, in)`` for ``R`` replicas and a
mini-batch of ``B`` points; the pre-activation is ``(noise * h) @ M + b``):

``unit_scale`` (structure ``ard``)
    one draw per data point and input unit, shape ``(R, B, in)``: Bernoulli noise is
    dropout on units, Gaussian noise Gaussian dropout; Rayleigh, inverse-Nakagami and
    half-Cauchy noise are used the same way.
``layer_scale`` (structure ``add``)
    one scalar per data point, shape ``(R, B, 1)``, multiplying the layer's whole
    input. For a residual layer ``h_l = h_{l-1} + relu(z h_{l-1} W + b)`` this is the
    residual branch's input; with ReLU, no bias and ``z >= 0``,
    ``relu(z h W) = z relu(h W)``, so the layer is ``h_{l-1} + z relu(h_{l-1} W)``:
    for Bernoulli noise, ``z`` in ``{0, 1/(1-p)}`` is exactly stochastic depth
    (Huang et al. 2016) with survival probability ``1 - p``, in the inverted scaling
    (the surviving branch is multiplied by ``1/(1-p)`` during training instead of the
    branch by ``1 - p`` at test time). With a bias the dropped branch still adds
    ``relu(b)``, and for negative draws (Gaussian noise) the identity does not hold:
    then it is the scaled input, not a scaled branch.
``weight_scale`` (structure ``none``)
    DropConnect: one draw per weight, shape ``(R, in, out)``, drawn once per
    mini-batch and shared by the batch's points (a draw per point would need
    ``B * in * out`` numbers per layer); the effective weights are ``noise * M``.
``ard-add``
    both the unit and the layer noise, multiplied.

Layers whose prior has no noise (:class:`~bnn_priors.NormalPrior`) get none (MAP
with weight decay). Improper priors (log-uniform) are refused: their noise cannot be
drawn. The noise is the noise model's own sampler (:meth:`bnn_priors.NoiseModel.sample`)
fed by the replica's stream, so any noise model works here.

Noise convention: ``lambda`` is divided by its mean ``E[lambda]``
(:attr:`bnn_priors.NoiseModel.mean`) where that is finite, so that ``E[noise] = 1``
(the inverted-dropout convention of Keras and of Gal's code): Bernoulli ``1 - p``,
Gaussian ``1``. Noise with an infinite mean (half-Cauchy) is used as is. Dividing
the noise by a constant is the same model with a rescaled sigma0: with decay
length-scale ``l`` (``M ~ N(0, 1/l^2)``) the implied prior is the layer's scale
mixture with ``sigma0' = 1 / (l E[lambda])``.

Objective (Gal & Ghahramani's reference Keras code: batch 128, Adam lr 1e-3, prior
length-scale ``l = 1e-2``, decay on weights, not biases). With a fixed model
precision ``tau`` the loss of a mini-batch is

    ``mean_batch ||y - f||^2 + sum_layers wd_l ||M_l||^2``,  ``wd_l = l_l^2 c_l / (2 N tau)``

(``N`` the training-set size, ``||.||^2`` summed over outputs). ``c_l`` is Gal's keep
probability (:attr:`bnn_priors.NoiseModel.keep_probability`) per scale tensor of the
layer: ``1 - p`` for each Bernoulli scale (``(1 - p)^2`` for ``ard-add``) and ``1`` for
every other noise model and the normal prior: for those the
Gaussian prior ``z ~ N(0, 1/l^2)`` of the expanded form gives the decay without the
keep-probability factor. The squared error has no factor ``1/2`` (Keras'
mean squared error, as in Gal's code), so the decay is half the negative log density
of ``N(0, 1/l^2)`` per data point relative to the Gaussian negative log-likelihood;
this is the convention of the reference code, kept so that its settings carry over.
``length_scale=None`` uses ``l = 1 / sigma0`` of each layer's prior; ``weight_decay``
given overrides ``wd`` for every layer (the grid-search protocol passes it).

With ``tau`` learned (the likelihood has no fixed precision and ``precision=None``),
the loss is the Gaussian negative log-likelihood form, ``tau/2`` times the loss above
plus the terms of ``tau``:

    ``tau/2 mean ||y - f||^2 - (out/2) log tau - log p(tau) / N + sum_l tau/2 wd_l ||M_l||^2``

where ``tau/2 wd_l = l^2 c / (4 N)`` does not depend on ``tau`` when ``wd`` comes from
the formula; ``p(tau)`` is the likelihood's ``Gamma(a, b)`` prior. ``tau`` is its MAP
point estimate: at the end of every epoch it is set to the exact minimizer of this
objective given the epoch's squared errors ``SSE`` (every training point once, with
its noise draw), ``tau = (N out + 2(a - 1)) / (SSE + N wd ||M||^2 + 2b)`` (the
``wd ||M||^2`` term only when ``weight_decay`` is given). This is coordinate descent on
the same objective: Adam at lr 1e-3 moves ``log tau`` by about 1e-3 per step and would
need thousands of steps to change ``tau`` tenfold. Within an epoch ``tau`` is fixed, so
the weights see ``tau/2`` times Gal's loss.

Mini-batches: every epoch a fresh permutation of the training points per replica,
cut into ``ceil(N / batch_size)`` batches (the last one smaller), as Keras does; so
``steps = epochs * ceil(N / batch_size)``. Every random number comes from
:class:`~inference.common.ReplicaRandom` streams, one per replica and purpose
(initial weights, batch order, noise): a replica fitted in a batch of ``R`` equals the
same replica fitted alone, and changing the noise model leaves the initial weights and
batches as they were (so Bernoulli noise with ``p = 0`` reproduces the normal prior's
fit exactly).

Fast steps (``fast=True``): the same model, objective and schedule, computed with cheaper
kernels, so the numbers differ from the default's for the same seed (in distribution they
do not; tested): Bernoulli masks come from the gaps between dropped units
(:meth:`bnn_priors.noise_models.Bernoulli.sample_fast`: about ``p`` as many uniforms as
one per unit, exactly i.i.d. Bernoulli, a different random stream; other noise models
draw as by default), a layer with one output is a product and a sum over its inputs
instead of a batched matrix-vector product, and Adam uses torch's fused update. A replica
in a batch still equals the replica alone, and checkpoints continue such fits exactly. The
saving is in the masks for small ``p`` (dropout rates of 0.005-0.1, as in Gal's grids) and
in the kernels. On boston's shape at R = 240 a step took about 0.65-0.73 of the default's
(``benchmarks/replica_throughput.py``). The default stays bit for bit what it was, so
committed results rerun exactly.

Compiled steps (``compile=True``): the step's objective (the noisy forward pass and the
loss) and its gradient are compiled by ``torch.compile`` with static shapes (one graph per
mini-batch size: two per fit when the epoch's last batch is smaller), which fuses the passes
over the activations that eager code makes one at a time. It takes several seconds to
compile per fit, so it pays for long fits with many replicas. Compiled code rounds
differently from eager code; the first step of each graph is checked against eager code
(values and gradients, :class:`inference.compiled.CheckedCompile`), and a failure to compile
or a disagreement gives a warning and eager steps from there on. With ``fast=True`` on
boston's shape at R = 240 it is the fastest path (``benchmarks/replica_throughput.py``).

Replicas with noise of their own (``noise_params``): ``{"p": [p_0, ..., p_{R-1}]}`` gives
replica ``r`` the layers' noise model with parameter ``p = p_r`` (every layer that has
noise; a single number sets it for all replicas), in place of the prior's. Together with
``weight_decay`` and ``precision`` per replica, a whole grid of Gal's (dropout rate, tau)
over every split can train as one model (the benchmark runner batches the ``gal2016``
preset so, up to ``--max-replicas`` replicas a job: 64 by default). Gal's keep probability ``c`` and the noise mean are then per replica. The replicas
that share a noise model draw it together from their own streams, so a replica's numbers
are those of its fit alone with that noise model as the prior's (tested, with and without
``fast``).

Heavy tails: the expected squared error of training is finite only when the noise
has a finite second moment. Half-Cauchy noise (and inverse-Nakagami noise with shape
``m <= 1``) has ``E[lambda^2] = inf``, so the expected loss is infinite for every
function that depends on the noisy units: such fits run (the backend warns) but drift
toward ignoring those units, and the predictive mean and standard deviation do not
exist (use medians or quantiles of the samples). SVI, which learns the scales, does
not have this problem.

Prediction: ``T = num_samples`` stochastic forward passes; each draws ONE noise
sample shared by all the points it predicts, so every pass is a function sample
(the per-point marginals are those of per-point noise). The precision is ``tau``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from bnn_priors.errors import InvalidParameterError
from bnn_priors.noise_models import NoiseGroupDraw, NoiseModel
from bnn_priors.scale_mixture import WeightPrior
from inference.common import (
    InferenceBackend,
    Posterior,
    ReplicaRandom,
    check_bool,
    check_positive_float,
    check_positive_int,
    raise_diverged,
    unsupported,
)
from inference.compiled import CheckedCompile
from inference.training import Checkpoint, Shuffled, adam, train
from models.networks import BayesianNetwork, Layer

# Offsets that separate a replica's random streams (initial weights, batch order, noise).
_STREAMS = {"init": 0, "batches": 0x2545F4914F6CDD1D, "noise": 0x5851F42D4C957F2D}


def _stream_seeds(seeds: list[int], stream: str) -> list[int]:
    return [(int(s) + _STREAMS[stream]) % 2**63 for s in seeds]


# ----------------------------------------------------------------------------- noise
def draw_noise(
    prior: WeightPrior,
    in_features: int,
    out_features: int,
    rng: ReplicaRandom,
    dtype: torch.dtype,
    points: int,
    lead: tuple[int, ...] = (),
    fast: bool = False,
    noise: NoiseModel | None = None,
) -> dict[str, torch.Tensor]:
    """One layer's noise, mean-one where the mean is finite: ``{scale kind: tensor}``.

    Shapes, with the replica axis ``R`` after the ``lead`` axes (particles, samples):
    ``unit_scale`` ``(*lead, R, points, in)``, ``layer_scale`` ``(*lead, R, points, 1)``
    (``points`` is the mini-batch size in training, ``1`` for a draw shared by all
    points), ``weight_scale`` ``(*lead, R, in, out)`` (always shared by the points).
    Empty for a prior without noise. ``fast``: draw with :meth:`bnn_priors.NoiseModel.sample_fast`
    (the same law; for Bernoulli noise a different, cheaper random stream). ``noise``: draw this
    noise model instead of the prior's (the prior still gives the structure).
    """
    noise = prior.noise if noise is None else noise
    if noise is None:
        return {}
    out = {}
    for kind, shape in _noise_shapes(prior, in_features, out_features, points, lead).items():
        if fast:
            out[kind] = noise.sample_fast(rng, shape, dtype, len(lead), _divisor(noise))
            continue
        lam = noise.sample(rng, shape, dtype, axis=len(lead))
        out[kind] = lam / noise.mean if math.isfinite(noise.mean) else lam
    return out


def _noise_shapes(prior: WeightPrior, in_features: int, out_features: int, points: int,
                  lead: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """The shape of each of a layer's noise tensors per replica (see :func:`draw_noise`)."""
    shapes = {
        "unit_scale": (points, in_features),
        "layer_scale": (points, 1),
        "weight_scale": (in_features, out_features),
    }
    return {kind: tuple(lead) + shapes[kind] for kind in prior.scale_shapes(in_features, out_features)}


def _divisor(noise: NoiseModel) -> float:
    """What the noise is divided by: its mean where that is finite, else 1."""
    return noise.mean if math.isfinite(noise.mean) else 1.0


@dataclass(frozen=True)
class NoiseGroup:
    """The replicas ``streams`` of a layer whose noise is ``noise`` (``index``: the streams on the device)."""

    noise: NoiseModel
    streams: tuple[int, ...]
    index: torch.Tensor


def draw_grouped_noise(
    prior: WeightPrior,
    groups: Sequence[NoiseGroup] | None,
    in_features: int,
    out_features: int,
    rng: ReplicaRandom,
    dtype: torch.dtype,
    points: int,
    lead: tuple[int, ...] = (),
    fast: bool = False,
) -> dict[str, torch.Tensor]:
    """:func:`draw_noise` of a layer whose replicas draw from noise models of their own (``groups``;
    ``None``: the prior's for all). Each group draws from its replicas' streams alone
    (:meth:`ReplicaRandom.subset`), so a replica gets the numbers it gets fitted alone with its
    noise model as the prior's; the groups' draws are put in place on the replica axis."""
    if groups is None:
        return draw_noise(prior, in_features, out_features, rng, dtype, points, lead, fast)
    if len(groups) == 1:
        return draw_noise(prior, in_features, out_features, rng, dtype, points, lead, fast, groups[0].noise)
    axis = len(lead)
    if fast:  # the noise model's own sampler of several parameter settings at once
        draws = [NoiseGroupDraw(g.noise, g.streams, _divisor(g.noise), g.index) for g in groups]
        sampler = type(groups[0].noise).sample_fast_groups
        return {kind: sampler(rng, shape, dtype, axis, draws)
                for kind, shape in _noise_shapes(prior, in_features, out_features, points, lead).items()}
    out: dict[str, torch.Tensor] = {}
    for group in groups:
        part = draw_noise(prior, in_features, out_features, rng.subset(group.streams), dtype, points, lead, fast,
                          group.noise)
        for kind, t in part.items():
            if kind not in out:
                shape = list(t.shape)
                shape[axis] = rng.replicas
                out[kind] = t.new_empty(shape)
            out[kind].index_copy_(axis, group.index, t)
    return out


def noisy_linear(
    h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, noise: Mapping[str, torch.Tensor], fast: bool = False
) -> torch.Tensor:
    """The pre-activation ``(unit * layer * h) @ (weight_noise * M) + b`` of one layer.

    ``fast``: a layer with one output as a product and a sum over the inputs (a batched
    matrix-vector product is several times slower than that on the CPU, forward and
    backward): the same sum, rounded differently.
    """
    if "unit_scale" in noise:
        h = h * noise["unit_scale"]
    if "layer_scale" in noise:
        h = h * noise["layer_scale"]
    if "weight_scale" in noise:
        weight = weight * noise["weight_scale"]
    if fast and weight.shape[-1] == 1:
        return (h * weight.transpose(-1, -2)).sum(-1, keepdim=True) + bias.unsqueeze(-2)
    return h @ weight + bias.unsqueeze(-2)


def keep_probability(prior: WeightPrior, noise: NoiseModel | None = None) -> float:
    """Gal's factor ``c`` of a layer: the noise's keep probability per scale tensor (1 without noise).
    ``noise``: this noise model's instead of the prior's."""
    noise = prior.noise if noise is None else noise
    if noise is None:
        return 1.0
    return noise.keep_probability ** len(prior.scale_shapes(1, 1))


def _noise_params(value) -> dict[str, float | tuple[float, ...]] | None:
    """``None``, or ``{parameter name: one number, or one number per replica}`` (checked as numbers
    here; the noise model checks their range)."""
    if value is None:
        return None
    if not isinstance(value, Mapping) or not value or not all(isinstance(k, str) for k in value):
        raise InvalidParameterError(
            f"noise_params must be a mapping of noise-model parameter names to a number or one number per "
            f"replica, such as {{'p': [0.005, 0.01]}}, or None; got {value!r}"
        )
    out = {}
    for key, v in value.items():
        scalar = not isinstance(v, (list, tuple)) and not (hasattr(v, "ndim") and v.ndim)  # tensors, arrays
        numbers = []
        for x in [v] if scalar else list(v):
            try:
                f = math.nan if isinstance(x, (str, bytes)) else float(x)
            except (TypeError, ValueError):
                f = math.nan
            if isinstance(x, bool) or not math.isfinite(f):
                raise InvalidParameterError(f"noise_params[{key!r}] must be a number or one number per replica, got {v!r}")
            numbers.append(f)
        if not numbers:
            raise InvalidParameterError(f"noise_params[{key!r}] is empty: give a number or one number per replica")
        out[key] = numbers[0] if scalar else tuple(numbers)
    return out


def _number_or_numbers(label: str, value, allow_zero: bool) -> float | tuple[float, ...] | None:
    """``None``, one number, or one number per replica (all finite, and positive or >= 0)."""
    if value is None:
        return None
    scalar = not isinstance(value, (list, tuple)) and not (torch.is_tensor(value) and value.dim())
    out = []
    for v in [value] if scalar else list(value):
        try:
            f = float(v)
        except (TypeError, ValueError):
            f = math.nan
        if isinstance(v, bool) or not math.isfinite(f) or (f < 0 if allow_zero else f <= 0):
            bound = "non-negative" if allow_zero else "positive"
            raise InvalidParameterError(f"{label} must be a {bound} number, one per replica, or None; got {value!r}")
        out.append(f)
    return out[0] if scalar else tuple(out)


def _per_replica(value, R: int, label: str, dev, dt) -> torch.Tensor | None:
    if value is None:
        return None
    t = torch.as_tensor(value, device=dev, dtype=dt).reshape(-1)
    if t.numel() not in (1, R):
        raise InvalidParameterError(f"{label} has {t.numel()} values for a model with {R} replicas")
    return t.expand(R).clone()


# -------------------------------------------------------------------------- the net
@dataclass
class _Decay:
    """Per layer: the length-scale ``l``, Gal's ``c`` and, when given, the weight decay (per replica)."""

    length_scale: float
    keep: float | torch.Tensor  # per replica (R,) when the replicas' noise differs
    given: torch.Tensor | None

    def coefficient(self, data_size: int, tau: torch.Tensor | float) -> torch.Tensor | float:
        """Gal's ``wd`` for precision ``tau``: ``l^2 c / (2 N tau)``, or the given value."""
        if self.given is not None:
            return self.given
        return self.length_scale**2 * self.keep / (2.0 * data_size * tau)


class _NoisyNet:
    """Point weights ``(R, in, out)``, biases ``(R, out)`` and the noisy forward pass."""

    def __init__(self, model: BayesianNetwork, rng: ReplicaRandom,
                 groups: Mapping[str, Sequence[NoiseGroup] | None] | None = None):
        self.model = model
        self.groups = dict(groups or {})
        dt = model.dtype
        self.weights: dict[str, torch.Tensor] = {}
        self.biases: dict[str, torch.Tensor] = {}
        for layer in model.layers:
            w = rng.randn((layer.in_features, layer.out_features), dt) / math.sqrt(layer.in_features)
            self.weights[layer.name] = w.requires_grad_(True)
            self.biases[layer.name] = torch.zeros(
                model.replicas, layer.out_features, device=model.device, dtype=dt
            ).requires_grad_(True)

    def parameters(self) -> list[torch.Tensor]:
        return [*self.weights.values(), *self.biases.values()]

    def draw(
        self, rng: ReplicaRandom, points: int, lead: tuple[int, ...] = (), fast: bool = False
    ) -> dict[str, dict[str, torch.Tensor]]:
        """Noise for every layer (see :func:`draw_noise`)."""
        dt = self.model.dtype
        return {
            layer.name: draw_grouped_noise(layer.prior, self.groups.get(layer.name), layer.in_features,
                                           layer.out_features, rng, dt, points, lead, fast)
            for layer in self.model.layers
        }

    def forward(self, X: torch.Tensor, noise: Mapping[str, Mapping[str, torch.Tensor]], fast: bool = False) -> torch.Tensor:
        def linear(layer: Layer, h: torch.Tensor) -> torch.Tensor:
            return noisy_linear(h, self.weights[layer.name], self.biases[layer.name], noise[layer.name], fast)

        return self.model.forward_with(X, linear)

    def squared_norms(self) -> dict[str, torch.Tensor]:
        """``||M_l||^2`` per layer and replica, shape ``(R,)``."""
        return {name: (w * w).sum((-2, -1)) for name, w in self.weights.items()}


class MCDropoutPosterior(Posterior):
    """The trained noisy network: predictions by stochastic forward passes, ``tau``, the weights ``M``."""

    def __init__(self, model: BayesianNetwork, net: _NoisyNet, precision: torch.Tensor, seeds: list[int], info: dict):
        self.net = net
        self.precision = precision.detach()  # (R,)
        super().__init__(
            model,
            MCDropout.name,
            self._sample,
            seeds=seeds,
            info=info,
            weight_means=lambda: {name: w.detach() for name, w in net.weights.items()},
        )

    @torch.no_grad()
    def _sample(self, X: torch.Tensor, S: int, rng: ReplicaRandom) -> tuple[torch.Tensor, torch.Tensor]:
        noise = self.net.draw(rng, points=1, lead=(S,))
        f = self.net.forward(X, noise)
        f = f.expand(S, *f.shape[-3:])  # a network without noise gives one function
        return f, self.precision.expand(S, -1)

    @torch.no_grad()
    def _arviz_draws(self, num_samples: int, rng: ReplicaRandom) -> dict[str, torch.Tensor]:
        """Each stochastic pass as the weights it amounts to: the noise of a pass is shared by the
        points, so ``(u h) @ M = h @ (u^T M)`` and the pass is the network with weights ``noise * M``
        (the noise in the shape of the prior's scale site, e.g. ``(in, 1)`` for a unit's). Drawn as
        :meth:`_sample` draws them, so the same stream gives the same functions."""
        S = num_samples
        noise = self.net.draw(rng, points=1, lead=(S,))
        draws = {}
        for layer in self.model.layers:
            weight = self.net.weights[layer.name].detach()
            effective = weight.expand(S, *weight.shape)
            for kind, lam in noise[layer.name].items():
                site = lam.transpose(-1, -2) if kind == "unit_scale" else lam  # (S, R, 1, in) -> (S, R, in, 1)
                draws[f"{layer.name}.{kind}"] = site
                effective = effective * site
            draws[f"{layer.name}.weight"] = effective
            bias = self.net.biases[layer.name].detach()
            draws[f"{layer.name}.bias"] = bias.expand(S, *bias.shape)
        draws[self.model.likelihood.site] = self.precision.expand(S, -1)
        return {k: t.unsqueeze(0) for k, t in draws.items()}  # one chain

    def _arviz_attrs(self) -> dict[str, str]:
        return {
            "draws": "stochastic forward passes: the effective (noise-multiplied) weights of each pass; "
            "scale sites hold the pass's noise divided by its mean E[lambda] where finite, as in training; "
            "the precision is the fit's point estimate"
        }


# ---------------------------------------------------------------------- the backend
class MCDropout(InferenceBackend):
    """Multiplicative-noise (MC dropout) training: ``MCDropout(epochs=40).fit(model, X, y)``.

    Parameters: ``epochs``, ``batch_size`` (128), ``lr`` (Adam, 1e-3),
    ``length_scale`` (``None``: ``1/sigma0`` of each layer's prior; a number: the same
    ``l`` for every layer), ``weight_decay`` (``None``: Gal's ``l^2 c / (2 N tau)``; a
    number: used as is for every layer), ``precision`` (``None``: the likelihood's
    fixed precision, or ``tau`` learned as a MAP estimate under its Gamma prior; a
    number: ``tau`` fixed for the fit and the predictions), ``num_particles`` (noise
    draws per data point and step, averaged), ``fast`` (False; True trains with cheaper
    kernels and another random stream, see "Fast steps" in the module docstring),
    ``compile`` (False; True compiles each step's objective and its gradient with
    ``torch.compile``, see "Compiled steps"), ``noise_params`` (None; a mapping such as
    ``{"p": [0.005, 0.01, ...]}``: the noise model's parameters per replica, see "Replicas
    with noise of their own"), and
    ``device``, ``seed``, ``progress``, ``threads`` (torch threads of the training loop, 1
    by default: see :mod:`inference.training`).

    Supports the five noise models under the four structures and the normal prior,
    on every architecture; refuses the log-uniform prior, and warns about noise with
    an infinite second moment. See the module docstring for the noise placement and
    the objective.

    ``info`` of the posterior: ``steps``, ``epochs``, ``batch_size``, ``seconds``,
    ``steps_per_second``, ``final_loss`` (mean loss of the last epoch; Gal's loss with
    a fixed precision, the negative log-likelihood form with a learned one),
    ``loss_history`` (per epoch), ``precision`` (tau), ``precision_learned``,
    ``weight_decay`` (Gal's ``wd`` per layer, at the final tau), ``length_scale``,
    ``keep_probability``, ``noise_mean`` (``E[lambda]`` per layer), ``noise_params`` (with the
    option: each replica's values), ``num_particles``, ``fast`` and ``compile`` (False also after a fallback to eager code); per-replica values
    are lists when there are several replicas. A fit continued from a checkpoint adds ``resumed_from_step`` and ``seconds_before_resume`` (the training
    seconds of the earlier segments, which ``seconds`` includes).
    """

    name = "mc-dropout"
    training_loop = True
    checkpoints = True
    #: Keyword options and their defaults (``device``, ``seed`` and ``progress`` aside): what a caller
    #: such as the benchmark runner may set. Equal to ``__init__``'s defaults (tested).
    options = {
        "epochs": 40, "batch_size": 128, "lr": 1e-3, "length_scale": None, "weight_decay": None,
        "precision": None, "num_particles": 1, "fast": False, "compile": False, "noise_params": None,
    }
    #: The option that counts the training budget, and its unit.
    budget_option, budget_unit = "epochs", "epochs"
    #: Options that take one value per replica (a list) as well as one for all.
    replica_options: tuple[str, ...] = ("weight_decay", "precision", "noise_params")

    def __init__(
        self,
        epochs: int = 40,
        batch_size: int = 128,
        lr: float = 1e-3,
        length_scale: float | None = None,
        weight_decay: float | Sequence[float] | None = None,
        precision: float | Sequence[float] | None = None,
        num_particles: int = 1,
        fast: bool = False,
        compile: bool = False,
        noise_params: Mapping[str, float | Sequence[float]] | None = None,
        device="cpu",
        seed: int = 0,
        progress: bool = True,
        threads: int | None = 1,
    ):
        super().__init__(device, seed, progress, threads)
        self.epochs = check_positive_int("epochs", epochs)
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.lr = check_positive_float("lr", lr)
        self.length_scale = None if length_scale is None else check_positive_float("length_scale", length_scale)
        self.weight_decay = _number_or_numbers("weight_decay", weight_decay, allow_zero=True)
        self.precision = _number_or_numbers("precision", precision, allow_zero=False)
        self.num_particles = check_positive_int("num_particles", num_particles)
        self.fast = check_bool("fast", fast)
        self.compile = check_bool("compile", compile)
        self.noise_params = _noise_params(noise_params)

    def check_model(self, model: BayesianNetwork) -> None:
        for layer in model.layers:
            prior = layer.prior
            if not prior.proper:
                raise unsupported(
                    "MCDropout",
                    f"the {prior.describe()} prior of {layer.name}",
                    f"it is improper ({prior.density}), so its noise cannot be drawn",
                    'inference.SVI(guide="variational-dropout")',
                )

    def _noise_groups(self, model: BayesianNetwork) -> dict[str, list[NoiseGroup] | None]:
        """Per layer, the replicas grouped by their noise model under ``noise_params`` (``None``: the
        prior's noise for all, as without the option, and for layers without noise)."""
        groups: dict[str, list[NoiseGroup] | None] = {layer.name: None for layer in model.layers}
        if self.noise_params is None:
            return groups
        R = model.replicas
        for key, value in self.noise_params.items():
            if isinstance(value, tuple) and len(value) not in (1, R):
                raise InvalidParameterError(
                    f"MCDropout: noise_params[{key!r}] has {len(value)} values for a model with {R} replicas"
                )
        for layer in model.layers:
            base = layer.prior.noise
            if base is None:
                continue
            unknown = sorted(set(self.noise_params) - set(base.parameters))
            if unknown:
                raise InvalidParameterError(
                    f"MCDropout: noise_params sets {', '.join(map(repr, unknown))}, which the {base.name} noise of "
                    f"{layer.name} does not have; its parameters are: {', '.join(base.parameters) or 'none'}"
                )
            streams: dict[NoiseModel, list[int]] = {}
            for r in range(R):
                values = {
                    k: (v[r] if len(v) > 1 else v[0]) if isinstance(v, tuple) else v for k, v in self.noise_params.items()
                }
                try:
                    noise = type(base)(**{**base.params, **values})
                except InvalidParameterError as exc:
                    raise InvalidParameterError(f"MCDropout: noise_params of replica {r}: {exc}") from None
                streams.setdefault(noise, []).append(r)
            groups[layer.name] = [
                NoiseGroup(noise, tuple(rs), torch.tensor(rs, device=model.device)) for noise, rs in streams.items()
            ]
        if all(g is None for g in groups.values()):
            raise InvalidParameterError(
                "MCDropout: noise_params is given, but no layer of the model has noise (its priors have no scales)"
            )
        return groups

    @staticmethod
    def _warn_heavy_tails(model: BayesianNetwork, groups: Mapping[str, Sequence[NoiseGroup] | None]) -> None:
        for layer in model.layers:
            own = groups.get(layer.name)
            heavy = [n for n in ([layer.prior.noise] if own is None else [g.noise for g in own])
                     if n is not None and not math.isfinite(n.second_moment)]
            if heavy:
                warnings.warn(
                    f"MCDropout: the {heavy[0]!r} noise of {layer.name} has E[lambda^2] = inf, so the "
                    "expected squared error of training is infinite for every function that depends on "
                    "the noisy units: the fit drifts toward ignoring them and the predictive mean and "
                    "standard deviation do not exist (use medians or quantiles of the samples, or a "
                    "noise model with a finite second moment; SVI learns the scales instead)",
                    stacklevel=3,
                )

    def _decays(self, model: BayesianNetwork, given: torch.Tensor | None,
                groups: Mapping[str, Sequence[NoiseGroup] | None]) -> dict[str, _Decay]:
        def keep(layer: Layer) -> float | torch.Tensor:
            own = groups.get(layer.name)
            if own is None or len(own) == 1:  # one number, as for the prior's noise (the same rounding)
                return keep_probability(layer.prior, None if own is None else own[0].noise)
            values = torch.empty(model.replicas, device=model.device, dtype=model.dtype)
            for g in own:
                values[g.index] = keep_probability(layer.prior, g.noise)
            return values

        return {
            layer.name: _Decay(
                self.length_scale if self.length_scale is not None else 1.0 / layer.prior.sigma0,
                keep(layer),
                given,
            )
            for layer in model.layers
        }

    def fit(self, model: BayesianNetwork, X, y, checkpoint: Checkpoint | None = None) -> MCDropoutPosterior:
        """Fit ``model`` to ``(X, y)``; with a :class:`~inference.training.Checkpoint`, save the fit's
        state at epoch ends as it goes and continue from the saved state when there is one."""
        X, y, seeds = self.prepare(model, X, y)
        groups = self._noise_groups(model)
        self._warn_heavy_tails(model, groups)
        dev, dt, R = model.device, model.dtype, model.replicas
        net = _NoisyNet(model, ReplicaRandom(_stream_seeds(seeds, "init"), dev), groups)
        batch_rng = ReplicaRandom(_stream_seeds(seeds, "batches"), dev)
        noise_rng = ReplicaRandom(_stream_seeds(seeds, "noise"), dev)
        lik = model.likelihood
        fixed = _per_replica(self.precision if self.precision is not None else lik.precision, R, "precision", dev, dt)
        learned = fixed is None
        tau = torch.full((R,), lik.concentration / lik.rate, device=dev, dtype=dt) if learned else fixed
        given = _per_replica(self.weight_decay, R, "weight_decay", dev, dt)  # None: Gal's formula
        decays = self._decays(model, given, groups)
        N, out = X.shape[1], model.out_features
        B = min(self.batch_size, N)
        schedule = Shuffled(batch_rng, N, B)
        steps = self.epochs * schedule.steps_per_round
        K = self.num_particles
        lead = (K,) if K > 1 else ()
        opt = adam(net.parameters(), lr=self.lr, fused=self.fast)
        a, b = lik.concentration, lik.rate
        history: list[float] = []
        # Per epoch: the squared errors and the loss, summed over the epoch's batches.
        epoch = {"sse": torch.zeros(R, device=dev, dtype=dt), "loss": torch.zeros(R, device=dev, dtype=dt)}
        # Within an epoch tau is fixed: tau/2 * wd_l is a constant per layer and replica.
        terms: dict = {}

        def epoch_terms() -> None:
            if learned:
                terms["half_tau_wd"] = {k: 0.5 * tau * d.coefficient(N, tau) for k, d in decays.items()}
                terms["const"] = -0.5 * out * tau.log() - lik.precision_prior(dev, dt).log_prob(tau) / N
            else:
                terms["wd"] = {k: d.coefficient(N, fixed) for k, d in decays.items()}

        def objective(Xb, yb, noise, tau, terms):
            """The loss per replica and the squared error per replica of one mini-batch."""
            f = net.forward(Xb, noise, self.fast)
            err = ((yb - f) ** 2).sum(-1).mean(-1)  # (*lead, R)
            if err.dim() > 1:
                err = err.mean(0)
            norms = net.squared_norms()
            if learned:
                loss = 0.5 * tau * err + terms["const"] + sum(terms["half_tau_wd"][k] * norms[k] for k in norms)
            else:
                loss = err + sum(terms["wd"][k] * norms[k] for k in norms)
            return loss, err

        # warnings point at the caller of fit: step, train, fit, the caller
        run = CheckedCompile(objective, net.parameters(), "MCDropout", stacklevel=4) if self.compile else objective

        def step(Xb, yb):
            loss, err = run(Xb, yb, net.draw(noise_rng, Xb.shape[1], lead, self.fast), tau, terms)
            epoch["sse"] = epoch["sse"] + err.detach() * Xb.shape[1]
            epoch["loss"] = epoch["loss"] + loss.detach() * Xb.shape[1] / N
            return loss.sum(), loss

        def end_epoch(where) -> float:
            nonlocal tau
            if learned:
                with torch.no_grad():
                    extra = 0.0
                    if given is not None:
                        extra = N * given * sum(net.squared_norms().values())
                    tau = ((N * out + 2.0 * (a - 1.0)) / (epoch["sse"] + extra + 2.0 * b)).clamp_min(1e-12)
                if not bool(torch.isfinite(tau).all()):
                    raise_diverged("MCDropout", where.step, "loss", hint, (~torch.isfinite(tau)).nonzero().flatten().tolist())
            history.append(float(epoch["loss"].mean()))
            epoch["sse"] = torch.zeros(R, device=dev, dtype=dt)
            epoch["loss"] = torch.zeros(R, device=dev, dtype=dt)
            epoch_terms()
            return history[-1]

        def load_state(saved: dict) -> None:
            nonlocal tau
            if saved.get("fast", False) != self.fast:  # files of before the option hold none: the default
                raise InvalidParameterError(
                    f"the checkpoint was saved by a fit with fast={not self.fast}, and this fit has fast={self.fast}: "
                    "the two draw other random streams and step otherwise; continue it with the same setting, "
                    "or delete it"
                )
            if saved.get("noise_params") != noise_record:
                raise InvalidParameterError(
                    f"the checkpoint was saved by a fit with noise_params={saved.get('noise_params')!r}, and this "
                    f"fit has noise_params={noise_record!r}: continue it with the same noise, or delete it"
                )
            tau = saved["tau"].to(dev)
            history[:] = saved["history"]
            epoch_terms()

        # one value per replica, so that equal settings spelled otherwise (0.1 or [0.1] * R) compare equal
        noise_record = None if self.noise_params is None else {
            k: list(v) * (R if len(v) == 1 else 1) if isinstance(v, tuple) else [v] * R
            for k, v in self.noise_params.items()
        }
        hint = (
            "heavy-tailed noise (half-Cauchy, inverse Nakagami with a small shape) can blow up the "
            "activations: try a lower lr or a lighter-tailed noise model"
        )
        epoch_terms()
        done = train(
            step, X, y, net.parameters(), opt, schedule, steps,
            backend="MCDropout", hint=hint, end_round=end_epoch,
            generators=noise_rng.generators,
            state=lambda: {"tau": tau.detach().cpu().clone(), "history": list(history), "fast": self.fast,
                           "noise_params": noise_record},
            load_state=load_state,
            checkpoint=checkpoint,
            progress=self.progress,
            desc="MC dropout",
            threads=self.threads,
            independent_replicas=True,  # per-replica losses, tau, noise and elementwise Adam
        )

        user_decay = list(self.weight_decay) if isinstance(self.weight_decay, tuple) else self.weight_decay

        def per_replica(t: torch.Tensor | float):
            if not torch.is_tensor(t):
                return float(t)
            values = t.detach().cpu().reshape(-1).tolist()
            return values[0] if R == 1 else values

        def replica_values(values: list):
            return values[0] if R == 1 else values

        def per_replica_of_groups(layer: Layer, of_noise, without_groups):
            """``of_noise(noise)`` of each replica's noise model (``without_groups`` for a layer whose
            replicas all have the prior's)."""
            own = groups[layer.name]
            if own is None:
                return without_groups
            values = [0.0] * R
            for g in own:
                for r in g.streams:
                    values[r] = of_noise(g.noise)
            return replica_values(values)

        def keeps(layer: Layer):
            return per_replica_of_groups(layer, lambda n: keep_probability(layer.prior, n), decays[layer.name].keep)

        def noise_means(layer: Layer):
            prior_mean = layer.prior.noise.mean if layer.prior.noise is not None else None
            return per_replica_of_groups(layer, lambda n: n.mean, prior_mean)

        info = {
            "steps": steps,
            "epochs": self.epochs,
            "batch_size": B,
            "seconds": done.seconds,
            "steps_per_second": done.steps_per_second,
            "final_loss": history[-1],
            "loss_history": history,
            "precision": per_replica(tau),
            "precision_learned": learned,
            "weight_decay": {
                k: user_decay if self.weight_decay is not None else per_replica(d.coefficient(N, tau.double()))
                for k, d in decays.items()
            },
            "length_scale": {k: d.length_scale for k, d in decays.items()},
            "keep_probability": {layer.name: keeps(layer) for layer in model.layers},
            "noise_mean": {layer.name: noise_means(layer) for layer in model.layers},
            "num_particles": K,
            "fast": self.fast,
            **({} if noise_record is None else {"noise_params": {
                k: replica_values(v) for k, v in noise_record.items()
            }}),
            "compile": bool(self.compile and run.compiled),  # False after a fallback to eager code
        }
        info.update(done.resume_info())
        info.update(done.arithmetic_info())
        return MCDropoutPosterior(model, net, tau, seeds, info)
