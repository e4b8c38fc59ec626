"""Data options: options of a config that become backend options only with each job's training data.

Imports: :mod:`bnn_priors.errors`, :mod:`bnn_priors.suite.config` and :mod:`bnn_priors.suite.build`.

A config's ``options`` are passed to the backend as they are, except the data
options (:data:`DATA_OPTIONS`), which :func:`resolve_options` turns into backend
options with the training data of a job:

``gal_tau`` (``mc-dropout`` with Bernoulli noise)
    Gal & Ghahramani's model precision ``tau`` in the target's ORIGINAL units, a
    value of a data set's ``tau_values.txt`` grid. As in Gal's code, the backend
    gets ``weight_decay = l^2 (1 - p) / (2 N tau)`` (``N`` the training points
    the model sees, ``l`` the ``length_scale`` option, ``p`` the dropout rate)
    with tau as given although the targets are standardized, and the precision
    for prediction ``precision = tau * y_std^2`` per replica (standardized units;
    ``y_std`` the training part's, ddof=0), so the test log-likelihood is Gal's,
    computed with ``tau`` in original units. Its selection protocol is in
    :mod:`bnn_priors.suite.protocols`.

A job may hold configs that differ in more than split and seed
(:func:`bnn_priors.suite.planning.batch_key`): in ``gal_tau`` and in the noise
model's parameters, when the backend takes the options they become per replica
(``weight_decay``, ``precision`` and ``noise_params`` for ``mc-dropout``).
:func:`resolve_job_options` gives such a job's options: one value where the
replicas agree, a list of one per replica where they differ, and the noise
model's differing parameters as ``noise_params``.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from typing import Any

import numpy as np

from bnn_priors.errors import InvalidParameterError
from bnn_priors.suite.build import MODEL_OPTIONS, build_prior
from bnn_priors.suite.config import RunConfig

#: Each data option, with the backend options it sets to one value per replica (split).
DATA_OPTIONS: dict[str, tuple[str, ...]] = {"gal_tau": ("precision",)}
#: Gal's prior length-scale ``l``.
GAL_LENGTH_SCALE = 1e-2


def gal_weight_decay(p: float, tau: float, n_train: int, length_scale: float = GAL_LENGTH_SCALE) -> float:
    """Gal's ``reg = l^2 (1 - p) / (2 N tau)``, with ``tau`` as given (original units)."""
    for label, value in (("tau", tau), ("length_scale", length_scale)):
        if not (isinstance(value, (int, float, np.number)) and math.isfinite(value) and value > 0):
            raise InvalidParameterError(f"{label} must be a positive number, got {value!r}")
    if not 0 <= p < 1:
        raise InvalidParameterError(f"the dropout rate p must be in [0, 1), got {p!r}")
    if int(n_train) < 1:
        raise InvalidParameterError(f"the training size must be positive, got {n_train!r}")
    return float(length_scale) ** 2 * (1.0 - float(p)) / (2.0 * int(n_train) * float(tau))


def gal_precision(tau: float, y_std: float | Sequence[float]) -> float | list[float]:
    """The precision in standardized units whose log-likelihood is Gal's with ``tau`` in original units:
    ``tau * y_std^2`` (one value, or a list of one per replica)."""
    stds = np.atleast_1d(np.asarray(y_std, dtype=np.float64))
    values = [float(tau) * float(s) ** 2 for s in stds]
    return values[0] if np.ndim(y_std) == 0 else values


def gal_backend_options(
    p: float, tau: float, n_train: int, y_std: Sequence[float], length_scale: float = GAL_LENGTH_SCALE
) -> dict[str, Any]:
    """``MCDropout`` options of Gal's run for dropout rate ``p`` and grid precision ``tau``.

    ``weight_decay`` is :func:`gal_weight_decay`; ``precision`` is
    :func:`gal_precision`: a number when the replicas share it (one replica, or
    seeds of one split), else a list of one per replica.
    """
    precision = gal_precision(tau, list(np.atleast_1d(np.asarray(y_std, dtype=np.float64))))
    return {
        "weight_decay": gal_weight_decay(p, tau, n_train, length_scale),
        "precision": precision[0] if len(set(precision)) == 1 else precision,
    }


def resolve_options(config: RunConfig, n_train: int, y_std: Sequence[float]) -> dict[str, Any]:
    """The backend options of ``config`` for a job whose replicas train on ``n_train`` points each,
    with training targets of standard deviations ``y_std`` (one per replica, original units).

    The model's options (:data:`~bnn_priors.suite.build.MODEL_OPTIONS`) are left out; other options
    than :data:`DATA_OPTIONS` are passed as they are; ``gal_tau`` becomes
    ``weight_decay`` and ``precision`` (:func:`gal_backend_options`): one precision for
    one replica, a list of one per replica otherwise.
    """
    options = {k: v for k, v in config.options.items() if k not in MODEL_OPTIONS}
    if "gal_tau" not in options:
        return options
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


def replica_options_needed(config: RunConfig) -> set[str]:
    """The backend options that ``config``'s data options set to one value per replica (split)."""
    return {name for option, names in DATA_OPTIONS.items() if option in config.options for name in names}


def resolve_job_options(
    configs: Sequence[RunConfig], n_train: int, y_std: Sequence[float], per_replica: Collection[str]
) -> dict[str, Any]:
    """The backend options of a job whose replicas are ``configs`` (replica ``r``'s training targets of
    standard deviation ``y_std[r]``): :func:`resolve_options` of the first config when all share their
    options and prior; otherwise each option that differs between the replicas is a list of one value
    per replica, and the noise model's parameters that differ are ``noise_params`` (the model is built
    with the first config's prior). ``per_replica``: the options the backend takes per replica; a
    job that would need another one per replica is refused."""
    first = configs[0]
    if all(c.options == first.options and c.prior == first.prior for c in configs):
        return resolve_options(first, n_train, y_std)
    if len(y_std) != len(configs):
        raise InvalidParameterError(f"{len(configs)} configs with {len(y_std)} target standard deviations")
    each = [resolve_options(c, n_train, [s]) for c, s in zip(configs, y_std)]
    options: dict[str, Any] = {}
    for key in dict.fromkeys(k for o in each for k in o):
        values = [o.get(key) for o in each]
        if all(v == values[0] for v in values):
            options[key] = values[0]
            continue
        if key not in per_replica or any(v is None for v in values):
            raise InvalidParameterError(
                f"the configs of one job differ in option {key} ({values[0]!r} against {values[1:]!r}), which the "
                f"{first.inference} backend takes once for all replicas{' or leaves out for some' if key in per_replica else ''}"
            )
        options[key] = values
    priors = [build_prior(c) for c in configs]
    noises = [p.noise for p in priors]
    if any(n is None or type(n) is not type(noises[0]) for n in noises) or len({p.sigma0 for p in priors}) > 1:
        raise InvalidParameterError("the configs of a job differ in their prior beyond the noise model's parameters")
    differ = {k: [n.params[k] for n in noises] for k in noises[0].params}
    differ = {k: v for k, v in differ.items() if any(x != v[0] for x in v)}
    if differ:
        if "noise_params" not in per_replica:
            raise InvalidParameterError(
                f"the configs of one job differ in the noise's {', '.join(differ)}, which the {first.inference} "
                "backend takes once for all replicas"
            )
        if "noise_params" in options:
            raise InvalidParameterError("option noise_params is set by the job's configs: leave it out")
        options["noise_params"] = differ
    return options
