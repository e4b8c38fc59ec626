"""``load_dataset``: one entry point for every registered data set."""

from __future__ import annotations

from bnn_priors.data.dataset import Dataset
from bnn_priors.data.diabetes import load_diabetes_dataset
from bnn_priors.data.fetch import PathLike, locate_uci_files
from bnn_priors.data.registry import DATASETS, DIABETES, UCI_SOURCES
from bnn_priors.data.uci import read_uci_folder
from bnn_priors.errors import UnknownNameError


def load_dataset(
    name: str,
    data_dir: PathLike | None = None,
    cache_dir: PathLike | None = None,
    base_url: str | None = None,
    download: bool = True,
    verify: bool = True,
) -> Dataset:
    """Load the data set ``name`` (one of :data:`DATASETS`).

    A UCI set is read from ``data_dir`` (else ``$BNN_PRIORS_DATA``) when given,
    else from the cache, downloading missing files from ``base_url`` unless
    ``download=False``; see :mod:`bnn_priors.data.fetch`. ``verify=False`` skips
    the sha256 check of files in ``data_dir``. ``diabetes`` comes from
    scikit-learn and ignores the location arguments.

    Raises :class:`UnknownNameError` for an unknown name and :class:`DataError`
    for missing, corrupt or invalid data.
    """
    if name not in DATASETS:
        raise UnknownNameError("data set", name, DATASETS)
    if name == DIABETES:
        return load_diabetes_dataset()
    source = UCI_SOURCES[name]
    folder = locate_uci_files(source, data_dir, cache_dir, base_url, download, verify)
    return read_uci_folder(name, folder)
