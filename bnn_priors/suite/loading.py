"""The data sets of a suite, read once per process, and what planning needs to know of them.

Imports: :mod:`bnn_priors.data` only.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from bnn_priors.data import Dataset, load_dataset


def load(name: str, data_dir: str | Path | None = None) -> Dataset:
    """The data set, read once per process for each (name, folder), however the folder is spelled."""
    return _load_cached(name, None if data_dir is None else str(Path(data_dir).expanduser()))


@functools.lru_cache(maxsize=16)
def _load_cached(name: str, data_dir: str | None) -> Dataset:
    return load_dataset(name, data_dir=data_dir)


@dataclass(frozen=True)
class DataInfo:
    """What the driver needs of a data set: input size and each split's (train, test) size."""

    name: str
    in_features: int
    sizes: tuple[tuple[int, int], ...]


def data_info(name: str, data_dir: str | None = None) -> DataInfo:
    ds = load(name, data_dir)
    sizes = tuple((len(ds.train_index(k)), len(ds.test_index(k))) for k in range(ds.n_splits))
    return DataInfo(name, int(ds.X.shape[1]), sizes)
