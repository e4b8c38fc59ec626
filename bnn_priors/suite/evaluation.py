"""The metrics of a fitted job, per replica, in original units, in chunks of points.

Imports: numpy and torch only (a posterior is anything with ``Posterior.evaluation_sums``,
``Posterior.metrics_from_sums``, ``COVERAGE_LEVELS`` and ``model.out_features``).

Metrics (:class:`Metrics`): the test RMSE of the predictive mean, the test
log-likelihood (``log mean_s N(y | f_s(x), 1/tau_s)`` per point, averaged), the
sample-MAE (``|y - f_s(x)|`` averaged over points and posterior draws) and the
coverage of central predictive intervals (per nominal level, the number of
targets inside), all from the same function draws (``Posterior.evaluation_sums``).
Large evaluation sets are evaluated in chunks of points (:data:`EVAL_CHUNK_ELEMENTS`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import torch

#: Evaluation in chunks of points: at most this many hidden activations (samples x points x
#: widest layer) per replica at a time. Every backend draws its function samples independently of
#: the points, so the chunks see the same functions and the metrics equal the unchunked ones.
EVAL_CHUNK_ELEMENTS = 2**21


@dataclass(frozen=True)
class Metrics:
    """A job's metrics, one entry per replica: ``rmse``, ``log_likelihood`` and ``sample_mae`` ``(R,)``
    in original units; ``coverage`` ``(R, levels)``, the number of the ``targets`` (points x outputs)
    inside the central predictive interval of each nominal level of ``levels``."""

    rmse: np.ndarray
    log_likelihood: np.ndarray
    sample_mae: np.ndarray
    coverage: np.ndarray
    targets: int
    levels: tuple[float, ...]

    def coverage_json(self, replica: int) -> str:
        """What a results row stores for ``replica``: ``{"levels": [...], "inside": [...], "targets": n}``.

        Counts, not fractions, so that runs (or parts of a test set) combine by adding them."""
        return json.dumps({"levels": list(self.levels), "inside": [int(c) for c in self.coverage[replica]],
                           "targets": int(self.targets)})


def _numpy(value) -> np.ndarray:
    return np.atleast_1d(np.asarray(value.detach().cpu().numpy() if torch.is_tensor(value) else value, dtype=np.float64))


def evaluate_metrics(posterior, X: np.ndarray, y: np.ndarray, num_samples: int, y_scale: np.ndarray, width: int) -> Metrics:
    """The :class:`Metrics` of ``(R, N, D)`` inputs, in chunks of points.

    A chunk holds at most :data:`EVAL_CHUNK_ELEMENTS` activations per replica
    (``num_samples`` x points x ``width``). The sample-MAE and the coverage add the
    chunks' sums (float64) and counts. The RMSE and the log-likelihood of one chunk
    are ``Posterior.evaluate``'s as they are; several are combined from each chunk's
    metrics (the points-weighted mean squared error and mean log-likelihood, in
    float64), not by adding the chunks' ``Posterior.evaluation_sums``: the committed
    results of ``results/gal2016.sqlite`` (1000 samples: 41 points a chunk) were
    evaluated this way, and adding float32 sums moves them by about 1e-7 relative (a
    boston row: all 80 metrics), so they would no longer regenerate to the last digit.
    """
    R, N = X.shape[0], X.shape[1]
    chunk = max(1, EVAL_CHUNK_ELEMENTS // (num_samples * max(width, 1)))
    scale = np.asarray(y_scale, dtype=np.float64).reshape(-1)
    sq = np.zeros(R)
    ll = np.zeros(R)
    absolute = torch.zeros(R, dtype=torch.float64)
    coverage = None
    for start in range(0, N, chunk):
        stop = min(N, start + chunk)
        sums = posterior.evaluation_sums(X[:, start:stop], y[:, start:stop], num_samples=num_samples)
        m = posterior.metrics_from_sums(sums, y_scale)
        absolute += sums["absolute_error"].detach().cpu().to(torch.float64)
        counts = sums["coverage"].detach().cpu()
        coverage = counts if coverage is None else coverage + counts
        if stop - start == N:
            rmse, log_likelihood = _numpy(m["rmse"]), _numpy(m["log_likelihood"])
        else:
            sq += (stop - start) * (_numpy(m["rmse"]) / scale) ** 2
            ll += (stop - start) * _numpy(m["log_likelihood"])
    if chunk < N:
        rmse, log_likelihood = np.sqrt(sq / N) * scale, ll / N
    targets = N * int(posterior.model.out_features)
    sample_mae = absolute.numpy() / targets * scale
    return Metrics(rmse, log_likelihood, sample_mae, coverage.numpy().astype(np.int64), targets,
                   tuple(posterior.COVERAGE_LEVELS))


def evaluate(posterior, X: np.ndarray, y: np.ndarray, num_samples: int, y_scale: np.ndarray,
             width: int) -> tuple[np.ndarray, np.ndarray]:
    """RMSE and log-likelihood per replica (original units): :func:`evaluate_metrics`' first two."""
    m = evaluate_metrics(posterior, X, y, num_samples, y_scale, width)
    return m.rmse, m.log_likelihood
