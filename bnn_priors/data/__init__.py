"""Regression benchmark data: the nine UCI sets with their published splits, and diabetes.

``load_dataset(name)`` returns a :class:`Dataset`; its ``split(k)`` gives a
standardized train/test :class:`Split`, and :func:`stack_splits` stacks several
splits on a leading replica axis. UCI files come from a directory the user
names, the local cache, or a sha256-checked download from the public source
(:mod:`bnn_priors.data.fetch`); the project never ships them.
"""

from bnn_priors.data.dataset import Dataset, Split, StackedSplits, stack_splits
from bnn_priors.data.fetch import default_cache_dir
from bnn_priors.data.load import load_dataset
from bnn_priors.data.registry import (
    BUILTIN_SOURCES,
    DATASETS,
    DEFAULT_BASE_URL,
    SOURCES,
    UCI_SOURCES,
    BuiltinSource,
    UCISource,
    dataset_splits,
)
from bnn_priors.data.splits import make_splits

__all__ = [
    "BUILTIN_SOURCES",
    "DATASETS",
    "DEFAULT_BASE_URL",
    "SOURCES",
    "UCI_SOURCES",
    "BuiltinSource",
    "Dataset",
    "Split",
    "StackedSplits",
    "UCISource",
    "dataset_splits",
    "default_cache_dir",
    "load_dataset",
    "make_splits",
    "stack_splits",
]
