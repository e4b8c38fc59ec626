"""Reading a folder of UCI files (the layout of the public source) into a :class:`Dataset`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bnn_priors.data.dataset import Dataset
from bnn_priors.errors import DataError


def read_uci_folder(name: str, folder: Path) -> Dataset:
    """Read the data, splits and reference setup of UCI set ``name`` from ``folder``."""
    data = _read(folder / "data.txt", float, ndmin=2)
    features = _read(folder / "index_features.txt", np.int64)
    target = _read_int(folder / "index_target.txt")
    n_columns = data.shape[1]
    columns = np.append(features, target)
    if features.size == 0 or columns.min() < 0 or columns.max() >= n_columns:
        raise DataError(
            f"data set {name!r}: feature columns {features.tolist()} and target column "
            f"{target} do not fit the {n_columns} columns of {folder / 'data.txt'}"
        )
    n_splits = _read_int(folder / "n_splits.txt")
    return Dataset(
        name=name,
        X=data[:, features],
        y=data[:, target],
        train_indices=tuple(
            _read(folder / f"index_train_{k}.txt", np.int64) for k in range(n_splits)
        ),
        test_indices=tuple(
            _read(folder / f"index_test_{k}.txt", np.int64) for k in range(n_splits)
        ),
        n_hidden=_read_int(folder / "n_hidden.txt"),
        n_epochs=_read_int(folder / "n_epochs.txt"),
        dropout_rates=_read(folder / "dropout_rates.txt", float),
        tau_values=_read(folder / "tau_values.txt", float),
    )


def _read(path: Path, dtype: type, ndmin: int = 1) -> np.ndarray:
    """Load a whitespace-separated text file, as a :class:`DataError` if it cannot be read."""
    try:
        return np.loadtxt(path, dtype=dtype, ndmin=ndmin)
    except (OSError, ValueError) as error:
        raise DataError(f"cannot read {path}: {error}") from error


def _read_int(path: Path) -> int:
    """Load a file holding a single integer."""
    values = _read(path, np.int64)
    if values.size != 1:
        raise DataError(f"{path} must hold one integer, found {values.size} values")
    return int(values[0])
