"""The results database: SQLite in WAL mode, one row per run, keyed by the config hash.

Only the driver writes. :meth:`ResultsStore.insert` writes all the rows of a
finished job in one transaction, so a suite that is killed loses only the runs
in flight and the file always holds complete rows; a rerun skips the hashes whose
status is ``ok`` and retries the ``failed`` ones (their row is updated in place,
keeping its ``id``). Tables and plots read the file with pandas
(:meth:`ResultsStore.frame`).

Columns of ``runs``: ``id``, ``config_hash`` (unique), ``config`` (JSON of the
:class:`~bnn_priors.suite.config.RunConfig`), ``label`` and ``method_key`` (the
table column a run belongs to), one column per grid axis (``dataset``, ``split``,
``noise``, ``structure``, ``arch``, ``inference``, ``budget`` with
``budget_unit``, ``seed``), ``status`` (``ok``/``failed``), ``error`` (one line)
and ``traceback`` (for failures that are not user errors), ``rmse``,
``log_likelihood`` and ``sample_mae`` (test set, original units; ``sample_mae`` is
``|y - f_s(x)|`` averaged over points and posterior draws, NULL for runs recorded
before it existed), ``coverage`` (JSON ``{"levels": [...], "inside": [...],
"targets": n}``: per nominal level, how many test targets lie inside the central
predictive interval of that level; NULL for older runs), ``holdout`` (the run's
validation fraction, NULL for none) with ``val_rmse``, ``val_log_likelihood`` and
``val_sample_mae`` (the same metrics on the held-out validation part; NULL without one), ``train_seconds`` (wall time of the
fit of the run's batched job; for a job continued from a checkpoint, plus the training
seconds its earlier processes had spent up to that checkpoint) and ``replicas`` (runs in that job: a run's share
is ``train_seconds / replicas``), ``device``, package versions (``torch_version``,
``pyro_version``, ``bnn_priors_version``, ``python_version``), ``timestamp`` (UTC,
ISO 8601), ``weights`` (posterior mean of the first hidden-to-hidden weight matrix,
``.npy`` bytes) with ``weights_layer``, ``backend_info`` (JSON: backend facts such as
the final loss, and warnings), and what decides the run's floating-point path
(:func:`~bnn_priors.suite.provenance.float_path`): ``cpu_model``, ``cpu_capability``
(the instruction set of torch's CPU kernels, e.g. ``AVX2``), ``torch_threads`` and ``blas``
(the BLAS/LAPACK library, e.g. ``mkl 2024.2``).

A results file written before a column existed gets it (NULL for its old rows)
when it is opened for writing; reading an older file gives the missing columns
as empty.

Imports: :mod:`bnn_priors.errors` only.
"""

from __future__ import annotations

import io
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bnn_priors.errors import DataError

SCHEMA_VERSION = 1

COLUMNS: tuple[tuple[str, str], ...] = (
    ("config_hash", "TEXT NOT NULL UNIQUE"),
    ("config", "TEXT NOT NULL"),
    ("label", "TEXT"),
    ("method_key", "TEXT"),
    ("dataset", "TEXT NOT NULL"),
    ("split", "INTEGER NOT NULL"),
    ("noise", "TEXT NOT NULL"),
    ("structure", "TEXT NOT NULL"),
    ("arch", "TEXT NOT NULL"),
    ("inference", "TEXT NOT NULL"),
    ("budget", "INTEGER NOT NULL"),
    ("budget_unit", "TEXT"),
    ("seed", "INTEGER NOT NULL"),
    ("status", "TEXT NOT NULL CHECK (status IN ('ok', 'failed'))"),
    ("error", "TEXT"),
    ("traceback", "TEXT"),
    ("rmse", "REAL"),
    ("log_likelihood", "REAL"),
    ("sample_mae", "REAL"),
    ("coverage", "TEXT"),
    ("holdout", "REAL"),
    ("val_rmse", "REAL"),
    ("val_log_likelihood", "REAL"),
    ("val_sample_mae", "REAL"),
    ("train_seconds", "REAL"),
    ("replicas", "INTEGER"),
    ("device", "TEXT"),
    ("torch_version", "TEXT"),
    ("pyro_version", "TEXT"),
    ("bnn_priors_version", "TEXT"),
    ("python_version", "TEXT"),
    ("timestamp", "TEXT NOT NULL"),
    ("weights", "BLOB"),
    ("weights_layer", "TEXT"),
    ("backend_info", "TEXT"),
    ("cpu_model", "TEXT"),
    ("cpu_capability", "TEXT"),
    ("torch_threads", "INTEGER"),
    ("blas", "TEXT"),
)
COLUMN_NAMES = tuple(name for name, _ in COLUMNS)
#: Columns left out of :meth:`ResultsStore.frame` unless asked for (large).
HEAVY_COLUMNS = ("weights", "traceback")


def array_to_npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    return buf.getvalue()


def npy_to_array(blob: bytes | None) -> np.ndarray | None:
    if blob is None:
        return None
    return np.load(io.BytesIO(blob), allow_pickle=False)


class ResultsStore:
    """A results file: ``with ResultsStore("results.sqlite") as store: store.insert(rows)``.

    ``create=False`` opens an existing file only (for tables and plots) and raises
    :class:`~bnn_priors.DataError` when it is missing or not a results database.
    """

    def __init__(self, path: str | Path, create: bool = True):
        self.path = Path(path).expanduser()
        if not create and not self.path.is_file():
            raise DataError(f"no results database at {self.path}")
        if create and self.path.parent and not self.path.parent.exists():
            raise DataError(f"cannot create the results database {self.path}: folder {self.path.parent} does not exist")
        try:
            self.conn = sqlite3.connect(str(self.path), timeout=60)
            self.conn.execute("PRAGMA busy_timeout = 60000")
            if self._has_runs_table():
                version = int(self.conn.execute("PRAGMA user_version").fetchone()[0])
                if version != SCHEMA_VERSION:
                    self.conn.close()
                    raise DataError(
                        f"{self.path} holds results in format version {version}; this bnn-priors reads and "
                        f"writes version {SCHEMA_VERSION}: use a new --results file"
                    )
            elif not create:
                self.conn.close()
                raise DataError(f"{self.path} is not a bnn-priors results database (it has no 'runs' table)")
            if create:
                self.conn.execute("PRAGMA journal_mode = WAL")
                self._create()
        except sqlite3.DatabaseError as exc:
            raise DataError(f"cannot open the results database {self.path}: {exc}") from None

    def _has_runs_table(self) -> bool:
        row = self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'runs'").fetchone()
        return row is not None

    def _create(self) -> None:
        cols = ",\n  ".join(f"{name} {kind}" for name, kind in COLUMNS)
        with self.conn:
            self.conn.execute(f"CREATE TABLE IF NOT EXISTS runs (\n  id INTEGER PRIMARY KEY AUTOINCREMENT,\n  {cols}\n)")
            present = self._columns()
            for name, kind in COLUMNS:  # a file from before a column existed: add it (nullable columns only)
                if name not in present:
                    self.conn.execute(f"ALTER TABLE runs ADD COLUMN {name} {kind}")
            for axis in ("dataset", "status", "method_key"):
                self.conn.execute(f"CREATE INDEX IF NOT EXISTS runs_{axis} ON runs ({axis})")
            self.conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _columns(self) -> set[str]:
        return {row[1] for row in self.conn.execute("PRAGMA table_info(runs)").fetchall()}

    # ------------------------------------------------------------------ life
    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---------------------------------------------------------------- writing
    def insert(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Write ``rows`` (dicts by column name) in one transaction; a row whose hash exists replaces it,
        except that a failed row never replaces an ok one (two processes on one grid: the one whose
        try failed must not undo the other's result).

        The replaced row keeps its ``id``.
        """
        if not rows:
            return
        for row in rows:
            unknown = set(row) - set(COLUMN_NAMES)
            if unknown:
                raise ValueError(f"unknown result columns: {sorted(unknown)}")
        names = ", ".join(COLUMN_NAMES)
        marks = ", ".join("?" for _ in COLUMN_NAMES)
        updates = ", ".join(f"{n} = excluded.{n}" for n in COLUMN_NAMES if n != "config_hash")
        sql = (f"INSERT INTO runs ({names}) VALUES ({marks}) ON CONFLICT(config_hash) DO UPDATE SET {updates} "
               "WHERE excluded.status = 'ok' OR runs.status <> 'ok'")
        values = [tuple(_sql_value(row.get(n)) for n in COLUMN_NAMES) for row in rows]
        with self.conn:
            self.conn.executemany(sql, values)
        # Move the new rows from the write-ahead log into the database file itself: a copy of the file
        # alone (what git commits while a long grid is still running; the -wal file is not committed)
        # then holds every finished run. PASSIVE: never waits for readers; what it cannot move now, a
        # later insert or the last connection's close does.
        self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")

    # ---------------------------------------------------------------- reading
    def status(self, hashes: Iterable[str] | None = None) -> dict[str, str]:
        """``{config_hash: status}`` of stored runs (all, or those among ``hashes``)."""
        rows = self.conn.execute("SELECT config_hash, status FROM runs").fetchall()
        out = dict(rows)
        if hashes is not None:
            wanted = set(hashes)
            out = {h: s for h, s in out.items() if h in wanted}
        return out

    def ok_hashes(self, hashes: Iterable[str] | None = None) -> set[str]:
        return {h for h, s in self.status(hashes).items() if s == "ok"}

    def frame(self, status: str | None = None, with_weights: bool = False) -> pd.DataFrame:
        """All runs (or those with ``status``) as a DataFrame, one row per run."""
        wanted = ["id", *(c for c in COLUMN_NAMES if with_weights or c not in HEAVY_COLUMNS)]
        present = self._columns()
        cols = [c for c in wanted if c in present]
        sql = f"SELECT {', '.join(cols)} FROM runs"
        params: tuple = ()
        if status is not None:
            sql += " WHERE status = ?"
            params = (status,)
        df = pd.read_sql_query(sql + " ORDER BY id", self.conn, params=params)
        kinds = dict(COLUMNS)
        for c in wanted:  # an older file: its missing columns are empty
            if c not in df:
                df[c] = np.nan if kinds.get(c, "").startswith(("REAL", "INTEGER")) else None
        return df[wanted]

    def weights(self, config_hash: str) -> np.ndarray | None:
        row = self.conn.execute("SELECT weights FROM runs WHERE config_hash = ?", (config_hash,)).fetchone()
        return None if row is None else npy_to_array(row[0])

    def __len__(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0])


def _sql_value(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return array_to_npy(value)
    return value


def read_results(path: str | Path, status: str | None = "ok", with_weights: bool = False) -> pd.DataFrame:
    """The runs of a results file as a DataFrame (by default the successful ones)."""
    with ResultsStore(path, create=False) as store:
        return store.frame(status=status, with_weights=with_weights)


def load_runs(results: str | Path | pd.DataFrame, hashes: Iterable[str] | None = None,
              with_weights: bool = False) -> pd.DataFrame:
    """The successful runs of a results file, or a DataFrame of runs as given; ``hashes`` keeps only those
    runs (e.g. the grid a suite just ran). What every table and plot starts from."""
    df = results if isinstance(results, pd.DataFrame) else read_results(results, status="ok", with_weights=with_weights)
    if hashes is not None and "config_hash" in df:
        df = df[df["config_hash"].isin(set(hashes))]
    return df
