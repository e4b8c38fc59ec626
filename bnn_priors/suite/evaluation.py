"""The metrics of a fitted job: RMSE and log-likelihood per replica, in original units, in chunks of points.

Imports: numpy only (a posterior is anything with ``Posterior.evaluate``).

Metrics are the test RMSE and the test log-likelihood (``log mean_s N(y | f_s(x), 1/tau_s)``
per point, averaged) of ``Posterior.evaluate(..., y_scale=y_std)``. Large
evaluation sets are evaluated in chunks of points (:data:`EVAL_CHUNK_ELEMENTS`).
"""

from __future__ import annotations

import numpy as np

#: Evaluation in chunks of points: at most this many hidden activations (samples x points x
#: widest layer) per replica at a time. Every backend draws its function samples independently of
#: the points, so the chunks see the same functions and the metrics equal the unchunked ones.
EVAL_CHUNK_ELEMENTS = 2**21


def evaluate(posterior, X: np.ndarray, y: np.ndarray, num_samples: int, y_scale: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """RMSE and log-likelihood per replica (original units) of ``(R, N, D)`` inputs, in chunks of points.

    A chunk holds at most :data:`EVAL_CHUNK_ELEMENTS` activations per replica
    (``num_samples`` x points x ``width``); one chunk gives ``Posterior.evaluate``'s
    metrics as they are. Several are combined from each chunk's metrics (the
    points-weighted mean squared error and mean log-likelihood, in float64), not
    by adding the chunks' ``Posterior.evaluation_sums``: the committed results of
    ``results/gal2016.sqlite`` (1000 samples: 41 points a chunk) were evaluated
    this way, and adding float32 sums moves them by about 1e-7 relative (a boston
    row: all 80 metrics), so they would no longer regenerate to the last digit.
    """
    R, N = X.shape[0], X.shape[1]
    chunk = max(1, EVAL_CHUNK_ELEMENTS // (num_samples * max(width, 1)))
    scale = np.asarray(y_scale, dtype=np.float64).reshape(-1)
    sq = np.zeros(R)
    ll = np.zeros(R)
    for start in range(0, N, chunk):
        stop = min(N, start + chunk)
        m = posterior.evaluate(X[:, start:stop], y[:, start:stop], num_samples=num_samples, y_scale=y_scale)
        if stop - start == N:
            return (np.atleast_1d(np.asarray(m["rmse"], dtype=np.float64)),
                    np.atleast_1d(np.asarray(m["log_likelihood"], dtype=np.float64)))
        sq += (stop - start) * (np.atleast_1d(np.asarray(m["rmse"], dtype=np.float64)) / scale) ** 2
        ll += (stop - start) * np.atleast_1d(np.asarray(m["log_likelihood"], dtype=np.float64))
    return np.sqrt(sq / N) * scale, ll / N
