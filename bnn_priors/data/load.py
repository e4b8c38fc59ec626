"""``load_dataset``: one entry point for every registered data set."""

from __future__ import annotations

from bnn_priors.data.dataset import Dataset
from bnn_priors.data.fetch import PathLike, locate_uci_files
from bnn_priors.data.registry import BUILTIN_SOURCES, SOURCES, UCI_SOURCES
from bnn_priors.data.uci import read_uci_folder
from bnn_priors.errors import lookup


def load_dataset(
    name: str,
    data_dir: PathLike | None = None,
    cache_dir: PathLike | None = None,
    base_url: str | None = None,
    download: bool = True,
    verify: bool = True,
) -> Dataset:
    """Load the data set ``name`` (one of :data:`~bnn_priors.data.registry.DATASETS`).

    A UCI set is read from ``data_dir`` (else ``$BNN_PRIORS_DATA``) when given,
    else from the cache, downloading missing files from ``base_url`` unless
    ``download=False``; see :mod:`bnn_priors.data.fetch`. ``verify=False`` skips
    the sha256 check of files in ``data_dir``. ``diabetes`` comes from
    scikit-learn and ignores the location arguments. Names are matched as
    :func:`bnn_priors.errors.lookup` does (``Boston`` is ``boston``).

    Raises :class:`UnknownNameError` for an unknown name and :class:`DataError`
    for missing, corrupt or invalid data.
    """
    key = lookup("data set", name, SOURCES)
    if key in BUILTIN_SOURCES:
        return BUILTIN_SOURCES[key].load()
    source = UCI_SOURCES[key]
    folder = locate_uci_files(source, data_dir, cache_dir, base_url, download, verify)
    return read_uci_folder(key, folder)
