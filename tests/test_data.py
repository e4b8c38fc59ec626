"""Tests of the data registry, loading, downloading and splitting (bnn_priors.data).

Most tests need a local copy of the UCI files: ``shared/data/uci`` beside the
checkout (``$BNN_PRIORS_SHARED_UCI`` overrides). They are skipped without it.
Downloads only ever go to a local HTTP server started by the tests.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from bnn_priors.data import (
    DATASETS,
    UCI_SOURCES,
    Dataset,
    load_dataset,
    make_splits,
    stack_splits,
)
from bnn_priors.errors import DataError, InvalidParameterError, UnknownNameError

UCI_NAMES = list(UCI_SOURCES)

# name: (source name, rows, inputs, splits, hidden units), as in the shared README's table.
README_TABLE = {
    "boston": ("bostonHousing", 506, 13, 20, 50),
    "concrete": ("concrete", 1030, 8, 20, 50),
    "energy": ("energy", 768, 8, 20, 50),
    "kin8nm": ("kin8nm", 8192, 8, 20, 50),
    "naval": ("naval-propulsion-plant", 11934, 16, 20, 50),
    "power": ("power-plant", 9568, 4, 20, 50),
    "protein": ("protein-tertiary-structure", 45730, 9, 5, 100),
    "wine": ("wine-quality-red", 1599, 11, 20, 50),
    "yacht": ("yacht", 308, 6, 20, 50),
}


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, isolated_data: Path) -> None:
    """No user directory, a private cache and an unreachable download address by default (the tests
    below name ``tmp_path / "cache"`` as an explicit cache, so the default one lives elsewhere)."""
    monkeypatch.setenv("BNN_PRIORS_CACHE", str(isolated_data / "default-cache"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")


@pytest.fixture
def yacht_copy(uci_dir: Path, tmp_path: Path) -> Path:
    """A user directory holding a writable copy of yacht."""
    root = tmp_path / "user"
    shutil.copytree(uci_dir / "yacht", root / "yacht")
    return root


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- registry -------------------------------------------------------------------------


def test_names_and_sources_match_the_readme() -> None:
    assert DATASETS == (*README_TABLE, "diabetes")
    for name, (source_name, *_, n_splits, _) in README_TABLE.items():
        assert UCI_SOURCES[name].source_name == source_name
        assert UCI_SOURCES[name].n_splits == n_splits


def test_registry_lists_every_file_with_its_sha256(uci_dir: Path) -> None:
    for name, source in UCI_SOURCES.items():
        folder = uci_dir / name
        assert len(source.files) == 8 + 2 * source.n_splits
        assert list(source.sha256) == list(source.files)
        assert set(source.files) == {path.name for path in folder.iterdir()}
        for file, expected in source.sha256.items():
            assert _sha256(folder / file) == expected, f"{name}/{file}"


def test_checksums_module_is_what_its_generator_writes(uci_dir: Path, tmp_path: Path, capsys) -> None:
    from bnn_priors.data import checksums, make_checksums

    out = tmp_path / "checksums.py"
    assert make_checksums.main([str(uci_dir), "--out", str(out)]) == 0
    assert out.read_bytes() == Path(checksums.__file__).read_bytes()
    # the source repository's layout is read too; a set that is not there is named
    clone = tmp_path / "clone"
    shutil.copytree(uci_dir / "boston", clone / "bostonHousing" / "data")
    assert make_checksums.set_folder(clone, UCI_SOURCES["boston"]) == clone / "bostonHousing" / "data"
    assert make_checksums.main([str(clone), "--out", str(tmp_path / "bad.py")]) == 2
    assert "no folder of data set 'concrete'" in capsys.readouterr().err and not (tmp_path / "bad.py").exists()


def test_urls_follow_the_source_layout() -> None:
    url = UCI_SOURCES["naval"].url("http://host/UCI_Datasets/", "data.txt")
    assert url == "http://host/UCI_Datasets/naval-propulsion-plant/data/data.txt"


def test_unknown_name_lists_the_valid_names() -> None:
    with pytest.raises(UnknownNameError) as info:
        load_dataset("bostn")
    message = str(info.value)
    assert "bostn" in message
    assert all(name in message for name in DATASETS)


# --- loading from a user directory ----------------------------------------------------


@pytest.mark.parametrize("name", UCI_NAMES)
def test_each_set_loads_with_the_readme_shape(uci_dir: Path, name: str) -> None:
    _, rows, inputs, n_splits, n_hidden = README_TABLE[name]
    data = load_dataset(name, data_dir=uci_dir)
    assert data.name == name
    assert data.X.shape == (rows, inputs) and data.X.dtype == np.float64
    assert data.y.shape == (rows,) and data.y.dtype == np.float64
    assert data.n_splits == n_splits and data.n_hidden == n_hidden
    assert data.n_epochs in (20, 40)
    assert len(data.dropout_rates) == 4 and len(data.tau_values) == 3
    for k in range(n_splits):
        train, test = data.train_index(k), data.test_index(k)
        assert len(train) == round(0.9 * rows) and len(train) + len(test) == rows
        assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(rows))


def test_environment_variable_names_the_user_directory(
    uci_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BNN_PRIORS_DATA", str(uci_dir))
    assert load_dataset("yacht").X.shape == (308, 6)


@pytest.mark.parametrize("name", UCI_NAMES)
def test_split_recipe_reproduces_the_index_files(uci_dir: Path, name: str) -> None:
    folder = uci_dir / name
    rows = README_TABLE[name][1]
    train, test = make_splits(rows, UCI_SOURCES[name].n_splits)
    for k in range(UCI_SOURCES[name].n_splits):
        assert np.array_equal(train[k], np.loadtxt(folder / f"index_train_{k}.txt", dtype=int))
        assert np.array_equal(test[k], np.loadtxt(folder / f"index_test_{k}.txt", dtype=int))


def test_missing_file_names_the_file_and_where_it_looked(yacht_copy: Path) -> None:
    (yacht_copy / "yacht" / "index_test_7.txt").unlink()
    with pytest.raises(DataError, match="index_test_7.txt") as info:
        load_dataset("yacht", data_dir=yacht_copy)
    assert str(yacht_copy / "yacht") in str(info.value)


def test_missing_set_names_both_layouts(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_dataset("yacht", data_dir=tmp_path)
    assert str(tmp_path / "yacht") in str(info.value)
    assert str(tmp_path / "yacht" / "data") in str(info.value)


def test_wrong_sha256_in_user_directory(yacht_copy: Path) -> None:
    data_file = yacht_copy / "yacht" / "data.txt"
    data_file.write_text(data_file.read_text().replace("0.568", "0.569", 1))
    with pytest.raises(DataError, match="sha256") as info:
        load_dataset("yacht", data_dir=yacht_copy)
    assert str(data_file) in str(info.value)
    assert UCI_SOURCES["yacht"].sha256["data.txt"] in str(info.value)
    assert _sha256(data_file) in str(info.value)
    data = load_dataset("yacht", data_dir=yacht_copy, verify=False)
    assert data.X[0, 1] == pytest.approx(0.569)


def test_nan_in_data_is_an_error(yacht_copy: Path) -> None:
    data_file = yacht_copy / "yacht" / "data.txt"
    lines = data_file.read_text().splitlines()
    lines[3] = " ".join(["nan"] * 2 + lines[3].split()[2:])
    data_file.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="'yacht' has 2 NaN"):
        load_dataset("yacht", data_dir=yacht_copy, verify=False)


def test_index_out_of_range_is_an_error(yacht_copy: Path) -> None:
    (yacht_copy / "yacht" / "index_test_3.txt").write_text("0\n308\n")
    with pytest.raises(DataError, match="split 3 test index out of range"):
        load_dataset("yacht", data_dir=yacht_copy, verify=False)


def test_unreadable_file_is_an_error(yacht_copy: Path) -> None:
    (yacht_copy / "yacht" / "n_splits.txt").write_text("twenty\n")
    with pytest.raises(DataError, match="n_splits.txt"):
        load_dataset("yacht", data_dir=yacht_copy, verify=False)


# --- splits ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def boston(uci_dir: Path) -> Dataset:
    return load_dataset("boston", data_dir=uci_dir)


def test_split_standardizes_with_the_training_part(boston: Dataset) -> None:
    part = boston.split(4)
    np.testing.assert_allclose(part.X_train.mean(axis=0), 0.0, atol=1e-10)
    np.testing.assert_allclose(part.X_train.std(axis=0), 1.0)
    assert part.y_train.mean() == pytest.approx(0.0, abs=1e-10)
    assert part.y_train.std() == pytest.approx(1.0)
    test_rows = boston.test_index(4)
    np.testing.assert_allclose(part.y_test * part.y_std + part.y_mean, boston.y[test_rows])
    np.testing.assert_allclose(part.X_test * part.x_std + part.x_mean, boston.X[test_rows])
    raw = boston.split(4, standardize=False)
    np.testing.assert_array_equal(raw.X_train, boston.X[boston.train_index(4)])
    assert (raw.y_mean, raw.y_std) == (0.0, 1.0)


def test_constant_column_is_left_unscaled() -> None:
    X = np.column_stack([np.arange(10.0), np.full(10, 0.3)])
    data = _toy_dataset(X, np.arange(10.0) ** 2, [np.arange(8)], [np.arange(8, 10)])
    part = data.split(0)
    assert part.x_std[1] == 1.0
    np.testing.assert_allclose(part.X_train[:, 1], 0.0, atol=1e-15)


def test_validation_split_is_disjoint_reproducible_and_standardized(boston: Dataset) -> None:
    k = 2
    part = boston.split(k, validation=0.2, seed=5)
    again = boston.split(k, validation=0.2, seed=5)
    other = boston.split(k, validation=0.2, seed=6)
    n_train = len(boston.train_index(k))
    n_validation = round(0.2 * n_train)
    assert part.X_test.shape[0] == n_validation
    assert part.X_train.shape[0] == n_train - n_validation
    np.testing.assert_array_equal(part.X_test, again.X_test)
    assert not np.array_equal(part.X_test, other.X_test)
    np.testing.assert_allclose(part.X_train.mean(axis=0), 0.0, atol=1e-10)
    assert part.y_train.std() == pytest.approx(1.0)
    # In original units, validation rows are training rows of split k and never test rows.
    raw = boston.split(k, validation=0.2, seed=5, standardize=False)
    train_rows = {tuple(row) for row in boston.X[boston.train_index(k)]}
    test_rows = {tuple(row) for row in boston.X[boston.test_index(k)]}
    validation_rows = {tuple(row) for row in raw.X_test}
    assert len(validation_rows) == n_validation
    assert validation_rows <= train_rows and not validation_rows & test_rows
    with pytest.raises(InvalidParameterError):
        boston.split(k, validation=1.5)


def test_validation_rows_are_disjoint_from_test_rows() -> None:
    n = 50
    X = np.column_stack([np.arange(n, dtype=float), np.ones(n)])
    train, test = make_splits(n, 3)
    data = _toy_dataset(X, np.arange(n, dtype=float), train, test)
    part = data.split(1, validation=0.25, seed=0, standardize=False)
    validation_rows = set(part.X_test[:, 0].astype(int))
    train_rows = set(part.X_train[:, 0].astype(int))
    assert validation_rows | train_rows == set(train[1])
    assert not validation_rows & train_rows
    assert not validation_rows & set(test[1])


def test_split_number_out_of_range(boston: Dataset) -> None:
    with pytest.raises(InvalidParameterError, match="0..19"):
        boston.split(20)


def test_stack_splits_shapes_and_units(boston: Dataset) -> None:
    stacked = stack_splits(boston, [0, 3, 7])
    assert stacked.splits == (0, 3, 7)
    assert stacked.X_train.shape == (3, 455, 13) and stacked.y_train.shape == (3, 455)
    assert stacked.X_test.shape == (3, 51, 13) and stacked.y_test.shape == (3, 51)
    assert stacked.x_mean.shape == stacked.x_std.shape == (3, 13)
    assert stacked.y_mean.shape == stacked.y_std.shape == (3,)
    assert stacked.y_std[1] == boston.split(3).y_std
    np.testing.assert_allclose(
        stacked.y_test[2] * stacked.y_std[2] + stacked.y_mean[2], boston.y[boston.test_index(7)]
    )
    assert stack_splits(boston).X_train.shape[0] == 20
    assert stack_splits(boston, validation=0.1).X_test.shape == (20, 46, 13)


def test_stack_splits_of_unequal_sizes_is_an_error() -> None:
    X = np.arange(20.0).reshape(10, 2)
    data = _toy_dataset(X, np.arange(10.0), [np.arange(8), np.arange(7)], [[8, 9], [7, 8, 9]])
    with pytest.raises(DataError, match="cannot be stacked"):
        stack_splits(data)


def test_dataset_checks_its_splits() -> None:
    X = np.arange(20.0).reshape(10, 2)
    with pytest.raises(DataError, match="overlap"):
        _toy_dataset(X, np.arange(10.0), [np.arange(8)], [[7, 8, 9]])
    with pytest.raises(DataError, match="integer"):
        _toy_dataset(X, np.arange(10.0), [np.arange(8.0)], [[8, 9]])
    with pytest.raises(DataError, match=r"\(n, d\)"):
        _toy_dataset(X, np.arange(9.0), [np.arange(8)], [[8]])


def _toy_dataset(X: np.ndarray, y: np.ndarray, train: list, test: list) -> Dataset:
    return Dataset(
        name="toy",
        X=X,
        y=y,
        train_indices=tuple(np.asarray(index) for index in train),
        test_indices=tuple(np.asarray(index) for index in test),
        n_hidden=10,
        n_epochs=1,
        dropout_rates=np.array([0.1]),
        tau_values=np.array([1.0]),
    )


# --- diabetes -------------------------------------------------------------------------


def test_diabetes_loads_with_the_uci_recipe() -> None:
    data = load_dataset("diabetes")
    assert data.X.shape == (442, 10) and data.y.shape == (442,)
    assert data.n_splits == 20 and (data.n_hidden, data.n_epochs) == (50, 40)
    assert len(data.train_index(0)) == 398 and len(data.test_index(0)) == 44
    train, test = make_splits(442, 20)
    assert np.array_equal(data.train_index(19), train[19])
    assert np.array_equal(data.test_index(19), test[19])
    assert stack_splits(data).X_train.shape == (20, 398, 10)


# --- downloading ----------------------------------------------------------------------


class _Server:
    """A local HTTP server for a folder, counting the requests it answers."""

    def __init__(self, root: Path) -> None:
        self.paths: list[str] = []
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self) -> None:
                server.paths.append(self.path)
                super().do_GET()

            def log_message(self, *args: object) -> None:
                pass

        handler = functools.partial(Handler, directory=str(root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/UCI_Datasets"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.01,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def serve() -> Iterator[Callable[[Path], _Server]]:
    servers: list[_Server] = []

    def start(root: Path) -> _Server:
        servers.append(_Server(root))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def source_copy(uci_dir: Path, tmp_path: Path) -> Path:
    """yacht laid out like the public source: ``UCI_Datasets/yacht/data/<file>``."""
    root = tmp_path / "source"
    shutil.copytree(uci_dir / "yacht", root / "UCI_Datasets" / "yacht" / "data")
    return root


def test_download_into_cache_then_reuse_it(
    source_copy: Path, serve: Callable[[Path], _Server], tmp_path: Path
) -> None:
    server = serve(source_copy)
    cache = tmp_path / "cache"
    data = load_dataset("yacht", cache_dir=cache, base_url=server.url)
    assert data.X.shape == (308, 6) and data.n_splits == 20
    files = UCI_SOURCES["yacht"].files
    assert sorted(server.paths) == sorted(f"/UCI_Datasets/yacht/data/{file}" for file in files)
    assert {path.name for path in (cache / "yacht").iterdir()} == set(files)

    again = load_dataset("yacht", cache_dir=cache, base_url=server.url)
    offline = load_dataset("yacht", cache_dir=cache, download=False)
    assert len(server.paths) == len(files)
    np.testing.assert_array_equal(again.X, data.X)
    np.testing.assert_array_equal(offline.y, data.y)

    # A damaged cached file is an error offline and is fetched again online.
    (cache / "yacht" / "n_hidden.txt").write_text("51\n")
    with pytest.raises(DataError, match="sha256"):
        load_dataset("yacht", cache_dir=cache, download=False)
    assert load_dataset("yacht", cache_dir=cache, base_url=server.url).n_hidden == 50
    assert server.paths[len(files) :] == ["/UCI_Datasets/yacht/data/n_hidden.txt"]


def test_cache_and_url_from_environment(
    source_copy: Path,
    serve: Callable[[Path], _Server],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = serve(source_copy)
    monkeypatch.setenv("BNN_PRIORS_CACHE", str(tmp_path / "env-cache"))
    monkeypatch.setenv("BNN_PRIORS_DATA_URL", server.url)
    assert load_dataset("yacht").X.shape == (308, 6)
    assert (tmp_path / "env-cache" / "yacht" / "data.txt").is_file()


def test_source_layout_works_as_user_directory(source_copy: Path) -> None:
    data = load_dataset("yacht", data_dir=source_copy / "UCI_Datasets")
    assert data.X.shape == (308, 6)


def test_corrupt_download_leaves_no_file(
    source_copy: Path, serve: Callable[[Path], _Server], tmp_path: Path
) -> None:
    served = source_copy / "UCI_Datasets" / "yacht" / "data" / "data.txt"
    served.write_bytes(served.read_bytes()[:-200])
    server = serve(source_copy)
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="(?i)sha256") as info:
        load_dataset("yacht", cache_dir=cache, base_url=server.url)
    message = str(info.value)
    assert "data.txt" in message
    assert UCI_SOURCES["yacht"].sha256["data.txt"] in message
    assert _sha256(served) in message
    left = [path for path in cache.rglob("*") if path.is_file()]
    assert all(path.name != "data.txt" for path in left)
    for path in left:  # anything left is a complete, verified file (no partial or temp file)
        assert _sha256(path) == UCI_SOURCES["yacht"].sha256.get(path.name), path


def test_failed_download_is_a_data_error(serve: Callable[[Path], _Server], tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    server = serve(empty)
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="404") as info:
        load_dataset("yacht", cache_dir=cache, base_url=server.url)
    assert "data.txt" in str(info.value) and server.url in str(info.value)
    assert not [path for path in cache.rglob("*") if path.is_file()]


def test_no_download_and_empty_cache_is_a_data_error(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="download=False") as info:
        load_dataset("yacht", cache_dir=cache, download=False)
    assert str(cache / "yacht" / "data.txt") in str(info.value)
