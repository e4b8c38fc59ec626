"""Finding the files of a UCI set: a user directory, else the cache, else a download.

* A directory the user names (``data_dir``, else the environment variable
  ``BNN_PRIORS_DATA``) is the only place looked at when given. It may hold the
  set as ``<dir>/<name>/<file>`` or, as in a clone of the source repository,
  ``<dir>/<source name>/data/<file>``.
* Otherwise the cache (``cache_dir``, else ``BNN_PRIORS_CACHE``, else
  ``<repo>/data/cache`` in a checkout, else the system cache folder) holds
  ``<cache>/<name>/<file>``; missing files are downloaded into it with pooch
  from ``base_url`` (else ``BNN_PRIORS_DATA_URL``, else the public source).

Every file's sha256 is checked against the registry. A download is written to a
temporary file and moved into place only when its hash matches, so a failed or
corrupt download leaves nothing behind.
"""

from __future__ import annotations

import os
from pathlib import Path

import pooch

from bnn_priors.data.registry import DEFAULT_BASE_URL, UCISource
from bnn_priors.errors import DataError

DATA_DIR_ENV = "BNN_PRIORS_DATA"
CACHE_DIR_ENV = "BNN_PRIORS_CACHE"
BASE_URL_ENV = "BNN_PRIORS_DATA_URL"

PathLike = str | os.PathLike[str]


def default_cache_dir() -> Path:
    """``<repo>/data/cache`` when running from a checkout, else the system cache folder."""
    repo = Path(__file__).resolve().parents[2]
    if (repo / "pyproject.toml").is_file():
        return repo / "data" / "cache"
    return Path(pooch.os_cache("bnn-priors"))


def _from_env(value: PathLike | None, variable: str) -> str | None:
    """``value`` if given, else the environment variable when set and non-empty."""
    if value is not None:
        return os.fspath(value)
    return os.environ.get(variable) or None


def locate_uci_files(
    source: UCISource,
    data_dir: PathLike | None = None,
    cache_dir: PathLike | None = None,
    base_url: str | None = None,
    download: bool = True,
    verify: bool = True,
) -> Path:
    """Return the folder holding every file of ``source``, downloading what is missing.

    ``verify=False`` skips the sha256 check of files read from a user directory;
    cached and downloaded files are always checked. Raises :class:`DataError`
    when a file is missing, corrupt or cannot be downloaded.
    """
    user_dir = _from_env(data_dir, DATA_DIR_ENV)
    if user_dir is not None:
        return _from_user_dir(source, Path(user_dir).expanduser(), verify)
    cache = _from_env(cache_dir, CACHE_DIR_ENV)
    folder = (Path(cache).expanduser() if cache else default_cache_dir()) / source.name
    url = _from_env(base_url, BASE_URL_ENV) or DEFAULT_BASE_URL
    for file, sha256 in source.sha256.items():
        path = folder / file
        cached = _sha256(path) if path.is_file() else None
        if cached == sha256:
            continue
        if cached is None and not download:
            raise DataError(
                f"{file} of data set {source.name!r} is not in the cache (looked for "
                f"{path}) and download=False"
            )
        if cached is not None and not download:
            raise DataError(_corrupt_cache_message(path, cached, sha256, "download=False"))
        try:
            _download(source, url, path, sha256)
        except DataError as error:
            if cached is None:
                raise
            why = f"downloading it again from {source.url(url, file)} failed: {error.__cause__}"
            raise DataError(_corrupt_cache_message(path, cached, sha256, why)) from error
    return folder


def _corrupt_cache_message(path: Path, actual: str, expected: str, why: str) -> str:
    """A cached file failed its check and could not be replaced: say which, where, and what to do.

    Without this, a damaged cache offline read as a network failure ("could not download")
    that no reconnecting fixes when the network is not the problem.
    """
    return (
        f"the cached file {path} failed its sha256 check (it has {actual}, {expected} was "
        f"expected) and {why}; delete {path} to download it again, or point --data-dir "
        f"(data_dir, ${DATA_DIR_ENV}) at a good copy of the data"
    )


def _from_user_dir(source: UCISource, root: Path, verify: bool) -> Path:
    candidates = (root / source.name / "data.txt", root / source.source_name / "data" / "data.txt")
    found = next((path for path in candidates if path.is_file()), None)
    if found is None:
        looked = " and ".join(str(path) for path in candidates)
        raise DataError(f"data.txt of data set {source.name!r} is missing: looked for {looked}")
    folder = found.parent
    for file, sha256 in source.sha256.items():
        path = folder / file
        if not path.is_file():
            raise DataError(f"{file} of data set {source.name!r} is missing: looked for {path}")
        if verify:
            _check_sha256(path, sha256)
    return folder


def _sha256(path: Path) -> str:
    return pooch.file_hash(str(path), alg="sha256")


def _check_sha256(path: Path, expected: str) -> None:
    actual = _sha256(path)
    if actual != expected:
        raise DataError(
            f"{path} has sha256 {actual} but {expected} was expected: the file is corrupt "
            "or not the published one (pass verify=False to use a file from your own "
            "directory anyway)"
        )


def _download(source: UCISource, base_url: str, path: Path, sha256: str) -> None:
    url = source.url(base_url, path.name)
    try:
        pooch.retrieve(
            url,
            known_hash=f"sha256:{sha256}",
            fname=path.name,
            path=path.parent,
            progressbar=False,
        )
    # pooch raises ValueError on a hash mismatch; network errors (requests'
    # RequestException) and file-system errors are OSErrors.
    except (ValueError, OSError) as error:
        raise DataError(
            f"could not download {path.name} of data set {source.name!r} from {url} "
            f"into {path.parent}: {error}"
        ) from error
