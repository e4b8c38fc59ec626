"""The inference methods the benchmark runner knows: a backend plus default options.

========== ================================ ============ =======================================
name       backend                          budget unit  defaults
========== ================================ ============ =======================================
svi        ``inference.SVI``                steps        mean-field guide, local reparameterization
svi-em     ``inference.SVI``                steps        as ``svi``, scales by closed-form EM
                                                         updates (``scale_updates="em"``)
map-em     ``inference.SVI``                steps        ``guide="map"``: point-estimate weights,
                                                         scales by the same closed-form updates
                                                         (Nalisnick et al. 2019's EM for the
                                                         marginal MAP with inverse-gamma scales)
vd         ``inference.SVI``                steps        ``guide="variational-dropout"``
nuts       ``inference.nuts.NUTS``          samples      warm-up steps = the number of samples
mc-dropout ``inference.mc_dropout.MCDropout`` epochs     the backend's (batch 128, Adam 1e-3)
========== ================================ ============ =======================================

Backends are imported when first used, so a method whose backend module is not
installed fails with a clear error only when it is asked for.

:func:`check_support` builds each distinct model of a grid and asks the backend
(``backend.check_model(model)``) before any training, so an unsupported
combination (NUTS or SVI with Bernoulli noise, MC dropout with the log-uniform
prior, EM updates without a closed form) is known up front.

Data options (:data:`DATA_OPTIONS`) are options of a config that the runner
turns into backend options with each split's training data
(:func:`resolve_options`) instead of passing them on:

``gal_tau`` (``mc-dropout`` with Bernoulli noise)
    Gal & Ghahramani's model precision ``tau`` in the target's ORIGINAL units, a
    value of a data set's ``tau_values.txt`` grid. As in Gal's code, the backend
    gets ``weight_decay = l^2 (1 - p) / (2 N tau)`` (``N`` the training points
    the model sees, ``l`` the ``length_scale`` option, ``p`` the dropout rate)
    with tau as given although the targets are standardized, and the precision
    for prediction ``precision = tau * y_std^2`` per replica (standardized units;
    ``y_std`` the training part's, ddof=0), so the test log-likelihood is Gal's,
    computed with ``tau`` in original units. See
    :mod:`bnn_priors.suite.protocols`.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import bnn_priors
from bnn_priors.errors import (
    BNNPriorsError,
    InvalidParameterError,
    UnknownNameError,
    UnsupportedCombinationError,
    normalize_name,
)
from bnn_priors.scale_mixture import UNSTRUCTURED_PRIORS
from bnn_priors.suite.config import RunConfig

#: Options the runner sets itself: a config's ``options`` may not hold them.
RESERVED_OPTIONS = ("seed", "device", "progress")
#: Options of a config that the runner turns into backend options with the data (:func:`resolve_options`).
DATA_OPTIONS = ("gal_tau",)


@dataclass(frozen=True)
class Method:
    """An inference method: which backend, its budget argument, its default options."""

    name: str
    label: str
    backend: str  # "module:Class"
    budget_unit: str  # "steps", "epochs" or "samples": what the config's budget counts
    budget_arg: str  # the backend's keyword argument for the budget
    default_budget: int
    defaults: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""

    def backend_class(self) -> type:
        module, cls = self.backend.split(":")
        try:
            return getattr(importlib.import_module(module), cls)
        except (ImportError, AttributeError) as exc:
            raise UnsupportedCombinationError(
                f"inference method {self.name!r} needs {module}.{cls}, which is not available in this "
                f"installation ({exc})"
            ) from None

    def default_options(self) -> dict[str, Any]:
        """The backend's keyword defaults with this method's own on top (empty if the backend is missing)."""
        try:
            params = inspect.signature(self.backend_class().__init__).parameters
        except UnsupportedCombinationError:
            params = {}
        defaults = {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}
        return {**defaults, **self.defaults}

    def backend_kwargs(self, budget: int, options: Mapping[str, Any]) -> dict[str, Any]:
        """The keyword arguments of the backend for this budget and these options (checked)."""
        reserved = sorted(set(options) & {*RESERVED_OPTIONS, self.budget_arg})
        if reserved:
            raise InvalidParameterError(
                f"options {', '.join(reserved)} of {self.name} are set by the runner "
                f"(use the run's seed, --device and the {self.budget_unit} budget instead)"
            )
        kwargs = {**self.defaults, **options, self.budget_arg: int(budget)}
        if self.name == "nuts" and "warmup" not in options:
            kwargs["warmup"] = int(budget)
        cls = self.backend_class()
        params = inspect.signature(cls.__init__).parameters
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            valid = [k for k in params if k not in ("self", *RESERVED_OPTIONS, self.budget_arg)]
            unknown = sorted(set(kwargs) - set(valid) - {self.budget_arg})
            if unknown:
                raise InvalidParameterError(
                    f"unknown option {', '.join(map(repr, unknown))} for inference method {self.name!r}; "
                    f"its options are: {', '.join(valid)}"
                )
        return kwargs

    def make_backend(self, budget: int, options: Mapping[str, Any], seed, device: str = "cpu", progress: bool = False):
        """An instance of the backend, ready to ``fit``."""
        kwargs = self.backend_kwargs(budget, options)
        try:
            return self.backend_class()(**kwargs, seed=seed, device=device, progress=progress)
        except TypeError as exc:  # a wrongly typed option the backend did not check
            raise InvalidParameterError(f"invalid options for inference method {self.name!r}: {exc}") from None


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method(
            "svi", "SVI", "inference.svi:SVI", "steps", "steps", 2000,
            {"guide": "mean-field", "local_reparam": True},
            "mean-field variational inference with the local reparameterization trick",
        ),
        Method(
            "svi-em", "SVI-EM", "inference.svi:SVI", "steps", "steps", 2000,
            {"guide": "mean-field", "local_reparam": True, "scale_updates": "em"},
            "mean-field SVI on the weights, scales by closed-form EM (type-II MAP) updates",
        ),
        Method(
            "map-em", "MAP-EM", "inference.svi:SVI", "steps", "steps", 2000,
            {"guide": "map", "scale_updates": "em"},
            "point-estimate weights and closed-form scale updates: with inverse-gamma variances, EM for the marginal MAP",
        ),
        Method(
            "vd", "VD", "inference.svi:SVI", "steps", "steps", 2000,
            {"guide": "variational-dropout", "local_reparam": True},
            "variational dropout: q(w) = N(theta, alpha theta^2) (Kingma et al. 2015)",
        ),
        Method(
            "nuts", "NUTS", "inference.nuts:NUTS", "samples", "num_samples", 200, {},
            "Hamiltonian Monte Carlo with the no-U-turn sampler",
        ),
        Method(
            "mc-dropout", "MC dropout", "inference.mc_dropout:MCDropout", "epochs", "epochs", 40, {},
            "training with multiplicative noise drawn from the prior (Gal & Ghahramani 2016)",
        ),
    )
}

BUDGET_UNITS = ("steps", "epochs", "samples")


def get_method(name: str) -> Method:
    key = normalize_name(name)
    if key not in METHODS:
        raise UnknownNameError("inference method", name, METHODS)
    return METHODS[key]


# ------------------------------------------------------------------------ models
def build_prior(config: RunConfig):
    """The layer prior of a config (the same for every weight matrix)."""
    return bnn_priors.prior(config.noise, structure=config.structure, **config.prior)


def build_model(config: RunConfig, in_features: int, replicas: int = 1):
    """The network of a config: every weight matrix gets the config's prior; tau is learned."""
    from models import BayesianMLP, BayesianResNet

    arch = config.architecture
    cls = BayesianMLP if arch.kind == "mlp" else BayesianResNet
    return cls(in_features, 1, hidden=arch.hidden, prior=build_prior(config), replicas=replicas)


# ------------------------------------------------------------------- data options
def resolve_options(config: RunConfig, n_train: int, y_std: Sequence[float]) -> dict[str, Any]:
    """The backend options of ``config`` for a job whose replicas train on ``n_train`` points each,
    with training targets of standard deviations ``y_std`` (one per replica, original units).

    Options other than :data:`DATA_OPTIONS` are passed as they are; ``gal_tau`` becomes
    ``weight_decay`` and ``precision`` (:func:`bnn_priors.suite.protocols.gal_backend_options`):
    one precision for one replica, a list of one per replica otherwise.
    """
    options = dict(config.options)
    if "gal_tau" not in options:
        return options
    from bnn_priors.suite.protocols import gal_backend_options

    tau = options.pop("gal_tau")
    if config.inference != "mc-dropout" or config.noise != "bernoulli":
        raise InvalidParameterError(
            f"option gal_tau (Gal & Ghahramani's precision in original units) needs inference mc-dropout "
            f"with bernoulli noise, got {config.inference} with {config.noise} noise"
        )
    clash = sorted({"weight_decay", "precision"} & set(options))
    if clash:
        raise InvalidParameterError(f"option gal_tau sets {' and '.join(clash)}: leave {' and '.join(clash)} out")
    prior = build_prior(config)
    length_scale = options.get("length_scale")
    if length_scale is None:  # the backend's rule: l = 1 / sigma0
        length_scale = 1.0 / prior.sigma0
    options.update(gal_backend_options(prior.noise.params["p"], tau, n_train, y_std, length_scale))
    return options


def per_replica_options(config: RunConfig) -> bool:
    """Whether ``config``'s backend options differ between the replicas (splits) of a job."""
    return "gal_tau" in config.options


@functools.cache
def accepts_replica_precision(method_name: str) -> bool:
    """Whether the method's backend takes ``precision`` as a sequence of one value per replica.

    When it does not, the runner trains the runs that need a precision per split
    (:func:`per_replica_options`) one split per job.
    """
    method = get_method(method_name)
    try:
        cls = method.backend_class()
        if "precision" not in inspect.signature(cls.__init__).parameters:
            return False
        cls(precision=[1.0, 2.0], progress=False)
    except (BNNPriorsError, TypeError, ValueError):
        return False
    return True


def heatmap_layer(config: RunConfig) -> str:
    """The weight matrix kept for heat maps: the first hidden-to-hidden one (``layer1``),
    or the first weight matrix (``layer0``) of a one-hidden-layer network."""
    return "layer1" if config.architecture.depth >= 2 else "layer0"


# ------------------------------------------------------------------------ labels
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


# ----------------------------------------------------------------------- support
def check_support(configs: Iterable[RunConfig], in_features: Mapping[str, int]) -> list[tuple[RunConfig, str]]:
    """Configs whose backend refuses their model, with the backend's reason.

    Builds one model per distinct (method, prior, architecture, input size) and
    calls ``backend.check_model``. Invalid options or an unavailable backend raise
    at once (a user mistake that no grid can skip). Data options are resolved
    for a stand-in training set (one point, unit target scale): only their
    validity matters here.
    """
    verdicts: dict[tuple[str, int], str | None] = {}
    refused = []
    for cfg in configs:
        key = (cfg.method_key, in_features[cfg.dataset])
        if key not in verdicts:
            method = get_method(cfg.inference)
            backend = method.make_backend(cfg.budget, resolve_options(cfg, 1, [1.0]), seed=0)
            try:
                model = build_model(cfg, in_features[cfg.dataset])
                backend.check_model(model)
                verdicts[key] = None
            except UnsupportedCombinationError as exc:
                verdicts[key] = str(exc)
        if verdicts[key] is not None:
            refused.append((cfg, verdicts[key]))
    return refused
