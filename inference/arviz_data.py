"""A fitted posterior as an ArviZ ``InferenceData``: the same groups for every backend.

:meth:`inference.common.Posterior.to_arviz` calls :func:`to_inference_data`, the one
conversion. A backend contributes only its parameter draws (the hook
``Posterior._arviz_draws``), optional sampler statistics and a sentence saying what
its draws are; everything computed from the draws is computed here, the same way for
all backends, so ``az.loo``, ``az.compare`` and ``az.plot_ppc`` compare like with like.

Groups (``S`` draws of one chain, or ``C`` chains of ``D`` draws for NUTS; ``N`` data
points; shapes for a single-output model, an ``output`` dimension after ``obs``
otherwise):

``posterior``
    the model's sites by name, ``<layer>.weight`` ``(chain, draw, in, out)``,
    ``<layer>.bias``, the scales ``<layer>.<kind>`` where the backend has them, and
    ``likelihood.precision`` when the model learns the noise precision.
``sample_stats``
    the sampler's statistics where it has some (NUTS: ``diverging``).
``posterior_predictive`` (with ``X``)
    ``y`` ``(chain, draw, obs)``: for every draw, the network's output at ``X`` plus
    Gaussian noise of the draw's precision.
``log_likelihood`` (with ``X`` and ``y``)
    ``y`` ``(chain, draw, obs)``: ``log N(y_i | f(x_i), 1/tau)`` of each data point
    under each draw, summed over outputs: the terms that
    :meth:`~inference.common.Posterior.evaluate` averages.
``observed_data``, ``constant_data`` (with ``y``, with ``X``)
    ``y`` ``(obs)`` and ``X`` ``(obs, feature)``.

Everything is in the units the model was fitted in (standardized targets, when the
targets were standardized). Replicas are independent fits: ``replica=r`` converts one;
``replica=None`` converts all, with a ``replica`` dimension after ``draw`` when ``R > 1``,
and only for the parameters (pointwise log-likelihoods of several fits pooled in one
group would make ``az.loo`` treat the replicas as more data points).

Random numbers (draws from a variational posterior, dropout noise, predictive noise)
come from the posterior's own per-replica streams, seeded as ``sample_functions``
seeds them: a fresh stream for every call, so converting never changes what
``predict`` or ``evaluate`` draw, and with the same seed and ``num_samples`` an SVI
or MC dropout conversion holds exactly the functions that ``sample_functions`` draws.
"""

from __future__ import annotations

import contextlib
import logging
import warnings

import numpy as np
import torch

from bnn_priors.errors import DataError, InvalidParameterError

#: Draws whose network outputs are computed in one vectorized pass.
DRAW_CHUNK = 256


def import_arviz():
    """ArviZ, imported on first use (it is slow to import and warns about its coming refactor)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import arviz

    return arviz


def check_replica(replica, replicas: int) -> int | None:
    """``None`` or a replica index in ``range(replicas)``."""
    if replica is None:
        return None
    if isinstance(replica, bool) or not isinstance(replica, (int, np.integer)) or not 0 <= replica < replicas:
        raise InvalidParameterError(f"replica must be None or an integer in 0..{replicas - 1}, got {replica!r}")
    return int(replica)


def _network_outputs(model, X: torch.Tensor, draws: dict[str, torch.Tensor]) -> torch.Tensor:
    """``f`` of shape ``(S, R, N, out)`` for parameter draws ``{site: (S, R, *shape)}``."""
    names = [f"{layer.name}.{part}" for layer in model.layers for part in ("weight", "bias")]
    S = draws[names[0]].shape[0]
    parts = []
    for start in range(0, S, DRAW_CHUNK):
        params = {name: draws[name][start:start + DRAW_CHUNK] for name in names}
        parts.append(model.forward_params(X, params))
    return torch.cat(parts)


def to_inference_data(posterior, X=None, y=None, num_samples: int = 500, replica: int | None = None,
                      seed: int | None = None):
    """The :class:`arviz.InferenceData` of ``posterior``; see :meth:`Posterior.to_arviz`."""
    from inference.common import ReplicaRandom, check_positive_int

    az = import_arviz()
    model = posterior.model
    R = model.replicas
    num_samples = check_positive_int("num_samples", num_samples)
    replica = check_replica(replica, R)
    if y is not None and X is None:
        raise DataError("to_arviz got y without X: the log-likelihood of y needs the inputs X")
    if X is not None and R > 1 and replica is None:
        raise InvalidParameterError(
            f"this posterior holds {R} independent fits (replicas): pass replica=r to convert one with data, "
            "as az.loo and az.compare compare one fitted model at a time"
        )
    seeds = posterior.sampling_seeds(seed)
    Xt = None if X is None else model.check_inputs(X)
    yt = None if y is None else model.check_targets(y, Xt)
    with torch.no_grad():
        rng = ReplicaRandom(seeds, model.device)
        draws = posterior._arviz_draws(num_samples, rng)  # {site: (C, D, R, *shape)}
        C, D = next(iter(draws.values())).shape[:2]
        flat = {k: v.reshape(C * D, *v.shape[2:]) for k, v in draws.items()}
        groups: dict[str, dict[str, np.ndarray]] = {}
        if Xt is not None:
            f = _network_outputs(model, Xt, flat)  # (S, R, N, out)
            precision = flat[model.likelihood.site].to(f.dtype)  # (S, R)
            noise = rng.randn((C * D, *f.shape[-2:]), f.dtype, axis=1)
            y_rep = f + noise * precision.rsqrt()[..., None, None]
            groups["posterior_predictive"] = {"y": y_rep}
            groups["constant_data"] = {"X": Xt}
            if yt is not None:
                dens = model.likelihood.distribution(f, precision).log_prob(yt).sum(-1)  # (S, R, N)
                groups["log_likelihood"] = {"y": dens}
                groups["observed_data"] = {"y": yt}
    learned = model.likelihood.learned
    params = {k: v for k, v in draws.items() if learned or k != model.likelihood.site}
    return _assemble(az, posterior, params, groups, (C, D), replica)


def _assemble(az, posterior, params, groups, chains: tuple[int, int], replica: int | None):
    """One dataset per group, with named dimensions; one replica selected or the replica axis kept."""
    model = posterior.model
    R, single_out = model.replicas, model.out_features == 1
    C, D = chains
    keep = replica is None and R > 1
    r = 0 if replica is None else replica
    attrs = {
        "inference_library": "bnn-priors",
        "backend": posterior.backend,
        "units": "those the model was fitted in",
        **posterior._arviz_attrs(),
    }
    if replica is not None:
        attrs["replica"] = replica
    coords = {"replica": np.arange(R)} if keep else None

    def numpy(t) -> np.ndarray:
        return t.detach().cpu().numpy() if torch.is_tensor(t) else np.asarray(t)

    def dataset(values: dict, dims: dict, sampled: bool = True):
        # ArviZ logs "shape validation failed" (and warns) for one chain or few draws: valid inputs here.
        with quiet_arviz(), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return az.dict_to_dataset(values, attrs=attrs, coords=coords, dims=dims,
                                      default_dims=None if sampled else [])

    def per_param(a: np.ndarray) -> np.ndarray:  # (C, D, R, *shape)
        return a if keep else a[:, :, r]

    param_arrays = {name: per_param(numpy(t)) for name, t in params.items()}
    param_dims = {
        name: (["replica"] if keep else []) + [f"{name}_dim_{i}" for i in range(a.ndim - (3 if keep else 2))]
        for name, a in param_arrays.items()
    }
    out = {"posterior": dataset(param_arrays, param_dims)}
    stats = posterior._arviz_sample_stats()
    if stats:
        out["sample_stats"] = dataset(
            {k: per_param(v) for k, v in stats.items()}, {k: ["replica"] for k in stats} if keep else {}
        )
    y_dims = ["obs"] if single_out else ["obs", "output"]
    for group, values in groups.items():
        arrays, dims = {}, {}
        for name, t in values.items():
            a = numpy(t)
            if group in ("posterior_predictive", "log_likelihood"):
                a = a[:, r].reshape(C, D, *a.shape[2:])  # (S, R, N[, out]) -> (C, D, N[, out])
            else:
                a = a[r]
            if single_out and group in ("posterior_predictive", "observed_data"):
                a = a[..., 0]
            arrays[name] = a
            dims[name] = ["obs", "feature"] if name == "X" else y_dims if group != "log_likelihood" else ["obs"]
        out[group] = dataset(arrays, dims, sampled=group in ("posterior_predictive", "log_likelihood"))
    return az.InferenceData(**out)


@contextlib.contextmanager
def quiet_arviz():
    """Silence ArviZ's "shape validation failed" log lines (one chain is a valid input here) and its
    RuntimeWarnings about statistics of very short chains."""
    logger = logging.getLogger("arviz")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            yield
    finally:
        logger.setLevel(level)
