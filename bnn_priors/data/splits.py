"""The train/test split recipe of the UCI benchmark.

One ``RandomState(1)`` is seeded once; split ``k`` is the ``k``-th random
permutation of the rows drawn from it, its first ``round(0.9 n)`` rows train and
the rest test (``permutation(n)`` draws exactly what the published
``np.random.choice(range(n), n, replace=False)`` drew). This reproduces the
published index files of the nine UCI sets exactly, and makes the splits of sets
that ship without index files (diabetes).
"""

from __future__ import annotations

import numpy as np

TRAIN_FRACTION = 0.9
SEED = 1


def make_splits(
    n_rows: int, n_splits: int
) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
    """Return the train and test row indices of ``n_splits`` splits of ``n_rows`` rows."""
    rng = np.random.RandomState(SEED)
    n_train = round(TRAIN_FRACTION * n_rows)
    permutations = [rng.permutation(n_rows) for _ in range(n_splits)]
    return (
        tuple(perm[:n_train] for perm in permutations),
        tuple(perm[n_train:] for perm in permutations),
    )
