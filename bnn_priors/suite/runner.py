"""Run a grid of configurations: skip what is done, batch what can be, record every run.

:func:`run_suite` is the driver:

1. load every data set of the grid once (a missing or corrupt file is an error
   before any training) and ask each backend whether it supports each model
   (:func:`~bnn_priors.suite.methods.check_support`). Unsupported combinations
   are skipped with a warning that lists them when the grid has others to run;
   when *every* run of the grid is unsupported (e.g. a single NUTS run with
   Bernoulli noise) the suite stops with
   :class:`~bnn_priors.UnsupportedCombinationError` before doing anything.
   ``on_unsupported="error"`` makes any unsupported run an error;
2. skip the configs whose hash is already ``ok`` in the results store (a rerun
   resumes; failed runs are tried again);
3. group the configs that differ only in split or seed into batched jobs
   (:func:`plan_jobs`): one model with ``replicas=R``, the splits stacked on the
   replica axis (each standardized on its own training part), one seed per
   replica. Backends guarantee that a replica trained in a batch equals the same
   run trained alone. Runs whose backend options differ per split (option
   ``gal_tau``: a precision per split) are batched only when the backend takes
   one precision per replica, else they train one split per job;
4. run the jobs on an executor and write each job's rows, in one transaction, as
   soon as it finishes. A job that raises records its runs as ``failed`` with the
   message and the suite goes on; when a batched job diverges
   (:class:`~bnn_priors.FitDivergedError`), its runs are retried one at a time so
   that only the diverging ones are recorded as failed.

Metrics are in the target's original units: the test RMSE and the test
log-likelihood (``log mean_s N(y | f_s(x), 1/tau_s)`` per point, averaged) from
``Posterior.evaluate(..., y_scale=y_std)``. A hold-out run (``holdout``) trains
on the first part of its training split (standardized with that part) and
records the same metrics on the held-out rest (``val_rmse``,
``val_log_likelihood``) as well. Large evaluation sets are evaluated in chunks
of points with the same function samples (:data:`EVAL_CHUNK_ELEMENTS`).
"""

from __future__ import annotations

import contextlib
import functools
import json
import platform
import time
import traceback
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from bnn_priors.errors import (
    BNNPriorsError,
    FitDivergedError,
    InvalidParameterError,
    UnsupportedCombinationError,
)
from bnn_priors.suite.config import RunConfig, canonical_json
from bnn_priors.suite.executors import make_executor
from bnn_priors.suite.methods import (
    accepts_replica_precision,
    build_model,
    check_support,
    get_method,
    heatmap_layer,
    method_label,
    per_replica_options,
    resolve_options,
)
from bnn_priors.suite.store import ResultsStore, array_to_npy

#: The most runs batched into one job (one model with this many replicas).
DEFAULT_MAX_REPLICAS = 64
#: On a CPU, ``max_replicas=None`` (the default) batches at most this many rows per optimisation
#: step (replicas x the points of a step: the training points, or the mini-batch) into one job.
#: Batching saves per-step overhead, which dominates small data sets; on large ones a CPU is
#: compute-bound and gains nothing (``benchmarks/suite_speed.py``: the yacht row 3.7x faster
#: batched, the power row slower batched by 20 and 1.4x faster with this cap). Measured
#: SVI-EM time per step and replica on resnet-2x50 (``benchmarks/replica_scaling.py``): 500 points 2.7 / 1.7 / 1.1 ms at 1 / 4 / 20
#: replicas; 2000 points 4.8 / 3.6 / 4.9 ms; 7654 points 15.8 / 19.4 / 18.5 ms.
CPU_BATCH_ROWS = 16384


def replicas_per_job(max_replicas: int | None, device: str, rows_per_step: int | None) -> int:
    """The replicas of one job: ``max_replicas`` if given; else :data:`DEFAULT_MAX_REPLICAS` on an
    accelerator and, on a CPU, as many as fit in :data:`CPU_BATCH_ROWS` rows per step (at least one)."""
    if max_replicas is not None:
        return max_replicas
    if not str(device).startswith("cpu") or not rows_per_step:
        return DEFAULT_MAX_REPLICAS
    return max(1, min(DEFAULT_MAX_REPLICAS, CPU_BATCH_ROWS // int(rows_per_step)))


def _rows_per_step(cfg: RunConfig, n_train: int | None) -> int | None:
    """The points one optimisation step of ``cfg`` sees: its mini-batch, else all training points."""
    if not n_train:
        return None
    batch = {**get_method(cfg.inference).default_options(), **cfg.options}.get("batch_size")
    return min(int(n_train), int(batch)) if batch else int(n_train)
#: Evaluation in chunks of points: at most this many hidden activations (samples x points x
#: widest layer) per replica at a time. Every backend draws its function samples independently of
#: the points, so the chunks see the same functions and the metrics equal the unchunked ones.
EVAL_CHUNK_ELEMENTS = 2**21


# ----------------------------------------------------------------------- data
def _load(name: str, data_dir: str | Path | None):
    """The data set, read once per process for each (name, folder), however the folder is spelled."""
    return _load_cached(name, None if data_dir is None else str(Path(data_dir).expanduser()))


@functools.lru_cache(maxsize=16)
def _load_cached(name: str, data_dir: str | None):
    from bnn_priors.data import load_dataset

    return load_dataset(name, data_dir=data_dir)


@dataclass(frozen=True)
class DataInfo:
    """What the driver needs of a data set: input size and each split's (train, test) size."""

    name: str
    in_features: int
    sizes: tuple[tuple[int, int], ...]


def data_info(name: str, data_dir: str | None = None) -> DataInfo:
    ds = _load(name, data_dir)
    sizes = tuple((len(ds.train_index(k)), len(ds.test_index(k))) for k in range(ds.n_splits))
    return DataInfo(name, int(ds.X.shape[1]), sizes)


# ----------------------------------------------------------------------- jobs
@dataclass(frozen=True)
class Job:
    """Runs that train together as one model with ``len(configs)`` replicas."""

    configs: tuple[RunConfig, ...]
    device: str = "cpu"
    data_dir: str | None = None
    threads: int | None = 1

    def describe(self) -> str:
        c = self.configs[0]
        splits = sorted({cfg.split for cfg in self.configs})
        seeds = sorted({cfg.seed for cfg in self.configs})
        where = f"split{'s' if len(splits) > 1 else ''} {_ranges(splits)}"
        if len(seeds) > 1 or seeds != [0]:
            where += f" seed{'s' if len(seeds) > 1 else ''} {_ranges(seeds)}"
        return f"{c.dataset} {where} | {label_of(c)} | {c.budget} {c.budget_unit}"


def _ranges(values: Sequence[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``0-2,5``."""
    parts, start = [], None
    for i, v in enumerate(values):
        if start is None:
            start = v
        if i + 1 == len(values) or values[i + 1] != v + 1:
            parts.append(f"{start}-{v}" if v != start else f"{v}")
            start = None
    return ",".join(parts)


def label_of(config: RunConfig) -> str:
    return config.label or method_label(config)


def plan_jobs(
    configs: Iterable[RunConfig],
    infos: dict[str, DataInfo] | None = None,
    max_replicas: int | None = None,
    device: str = "cpu",
    data_dir: str | None = None,
    threads: int | None = 1,
) -> list[Job]:
    """Group configs that differ only in split or seed into jobs of at most ``max_replicas`` runs
    (``None``: :func:`replicas_per_job` chooses by device and training size).

    Runs are grouped only when their splits have equal train and test sizes (as
    all splits of a UCI set do), since they are stacked on one replica axis.
    Runs that need backend options per split (:func:`~bnn_priors.suite.methods.per_replica_options`)
    are grouped across splits only if the backend takes a precision per replica.
    Jobs keep the order in which their first config appears.
    """
    if max_replicas is not None and (
        isinstance(max_replicas, bool) or not isinstance(max_replicas, int) or max_replicas < 1
    ):
        raise InvalidParameterError(f"max_replicas must be a positive integer or None, got {max_replicas!r}")
    groups: OrderedDict[tuple, list[RunConfig]] = OrderedDict()
    for cfg in configs:
        size = infos[cfg.dataset].sizes[cfg.split] if infos else None
        alone = per_replica_options(cfg) and not accepts_replica_precision(cfg.inference)
        groups.setdefault((cfg.group_key(), size, cfg.split if alone else None), []).append(cfg)
    jobs = []
    for (_, size, _), members in groups.items():
        members = sorted(members, key=lambda c: (c.split, c.seed))
        per_job = replicas_per_job(max_replicas, device, _rows_per_step(members[0], size[0] if size else None))
        for i in range(0, len(members), per_job):
            jobs.append(Job(tuple(members[i:i + per_job]), device, data_dir, threads))
    return jobs


@contextlib.contextmanager
def _torch_threads(threads: int | None):
    import torch

    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, int(threads)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _versions() -> dict[str, str]:
    import pyro
    import torch

    import bnn_priors

    return {
        "torch_version": torch.__version__,
        "pyro_version": pyro.__version__,
        "bnn_priors_version": bnn_priors.__version__,
        "python_version": platform.python_version(),
    }


def _device_name(device) -> str:
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return str(dev)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _base_row(cfg: RunConfig) -> dict[str, Any]:
    return {
        "config_hash": cfg.hash,
        "config": canonical_json(cfg.to_dict()),
        "label": label_of(cfg),
        "method_key": cfg.method_key,
        "dataset": cfg.dataset,
        "split": cfg.split,
        "noise": cfg.noise,
        "structure": cfg.structure,
        "arch": cfg.arch,
        "inference": cfg.inference,
        "budget": cfg.budget,
        "budget_unit": cfg.budget_unit,
        "seed": cfg.seed,
        "holdout": cfg.holdout,
    }


def failed_rows(job: Job, exc: BaseException) -> list[dict[str, Any]]:
    """One ``failed`` row per run of ``job``, with the error message (and traceback for bugs)."""
    message = f"{type(exc).__name__}: {exc}".strip()
    tb = None
    if not isinstance(exc, (BNNPriorsError, FitDivergedError)):
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    stamp, versions = _now(), _versions()
    return [
        {
            **_base_row(cfg),
            "status": "failed",
            "error": message,
            "traceback": tb,
            "replicas": len(job.configs),
            "device": job.device,
            "timestamp": stamp,
            **versions,
        }
        for cfg in job.configs
    ]


def _per_replica_info(info: dict, r: int, R: int) -> dict[str, Any]:
    """The scalar facts of a backend's ``info`` for replica ``r``."""
    out = {}
    for key, value in info.items():
        if key.endswith("history"):
            continue
        if isinstance(value, (list, tuple)) and len(value) == R and all(isinstance(v, (int, float)) for v in value):
            out[key] = value[r]
        elif isinstance(value, (int, float, str, bool)) or value is None:
            out[key] = value
        elif isinstance(value, dict):
            sub = _per_replica_info(value, r, R)
            if sub:
                out[key] = sub
    return out


def evaluate(posterior, X: np.ndarray, y: np.ndarray, num_samples: int, y_scale: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """RMSE and log-likelihood per replica (original units) of ``(R, N, D)`` inputs, in chunks of points.

    A chunk holds at most :data:`EVAL_CHUNK_ELEMENTS` activations per replica
    (``num_samples`` x points x ``width``); the chunks' metrics are combined
    exactly (weighted mean squared error and mean log-likelihood).
    """
    R, N = X.shape[0], X.shape[1]
    chunk = max(1, EVAL_CHUNK_ELEMENTS // (num_samples * max(width, 1)))
    scale = np.asarray(y_scale, dtype=np.float64).reshape(-1)
    sq = np.zeros(R)
    ll = np.zeros(R)
    for start in range(0, N, chunk):
        stop = min(N, start + chunk)
        m = posterior.evaluate(X[:, start:stop], y[:, start:stop], num_samples=num_samples, y_scale=y_scale)
        if stop - start == N:
            return (np.atleast_1d(np.asarray(m["rmse"], dtype=np.float64)),
                    np.atleast_1d(np.asarray(m["log_likelihood"], dtype=np.float64)))
        sq += (stop - start) * (np.atleast_1d(np.asarray(m["rmse"], dtype=np.float64)) / scale) ** 2
        ll += (stop - start) * np.atleast_1d(np.asarray(m["log_likelihood"], dtype=np.float64))
    return np.sqrt(sq / N) * scale, ll / N


def fit_job(job: Job) -> list[dict[str, Any]]:
    """Train and evaluate one batched job; raises what the backend raises."""
    from bnn_priors.data import stack_splits

    cfg0 = job.configs[0]
    R = len(job.configs)
    dataset = _load(cfg0.dataset, job.data_dir)
    data = stack_splits(dataset, [c.split for c in job.configs], holdout=cfg0.holdout)
    method = get_method(cfg0.inference)
    seeds = [c.seed for c in job.configs]
    options = resolve_options(cfg0, data.X_train.shape[1], data.y_std)
    width = max(dataset.X.shape[1], *cfg0.architecture.hidden)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        backend = method.make_backend(cfg0.budget, options, seed=seeds, device=job.device, progress=False)
        model = build_model(cfg0, dataset.X.shape[1], replicas=R)
        start = time.perf_counter()
        posterior = backend.fit(model, data.X_train, data.y_train)
        seconds = time.perf_counter() - start
        rmse, ll = evaluate(posterior, data.X_test, data.y_test, cfg0.eval_samples, data.y_std, width)
        val_rmse = val_ll = np.full(R, np.nan)
        if data.X_val is not None:
            val_rmse, val_ll = evaluate(posterior, data.X_val, data.y_val, cfg0.eval_samples, data.y_std, width)
    layer = heatmap_layer(cfg0)
    try:
        weights = np.asarray(posterior.weight_means()[layer])
        weights = weights.reshape((R, *weights.shape[-2:]))
    except (NotImplementedError, KeyError):
        weights = None
    notes = sorted({str(w.message) for w in caught})
    device = _device_name(backend.device)
    versions = _versions()
    stamp = _now()
    rows = []
    for r, cfg in enumerate(job.configs):
        info = _per_replica_info(dict(posterior.info), r, R)
        if notes:
            info["warnings"] = notes
        ok = bool(np.isfinite(rmse[r]) and np.isfinite(ll[r]))
        val_ok = cfg.holdout is None or bool(np.isfinite(val_rmse[r]) and np.isfinite(val_ll[r]))
        rows.append({
            **_base_row(cfg),
            "status": "ok" if ok and val_ok else "failed",
            "error": None if ok and val_ok else f"the {'test' if not ok else 'validation'} metrics are NaN or infinite",
            "rmse": float(rmse[r]),
            "log_likelihood": float(ll[r]),
            "val_rmse": None if cfg.holdout is None else float(val_rmse[r]),
            "val_log_likelihood": None if cfg.holdout is None else float(val_ll[r]),
            "train_seconds": seconds,
            "replicas": R,
            "device": device,
            "timestamp": stamp,
            "weights": None if weights is None else array_to_npy(weights[r].astype(np.float32)),
            "weights_layer": None if weights is None else layer,
            "backend_info": json.dumps(info, default=str),
            **versions,
        })
    return rows


def run_job(job: Job) -> list[dict[str, Any]]:
    """Run a job and return its rows; every failure becomes ``failed`` rows, never an exception.

    A diverging batch is retried one run at a time, so only the diverging runs fail.
    (``KeyboardInterrupt`` is not caught.)
    """
    with _torch_threads(job.threads):
        try:
            return fit_job(job)
        except FitDivergedError as exc:
            if len(job.configs) == 1:
                return failed_rows(job, exc)
            rows = []
            for cfg in job.configs:
                rows.extend(run_job(replace(job, configs=(cfg,))))
            return rows
        except Exception as exc:  # noqa: BLE001 - recorded as the runs' failure
            return failed_rows(job, exc)


# ---------------------------------------------------------------------- driver
@dataclass
class SuiteReport:
    """What a suite did: the runs of its grid and how each ended."""

    results: Path
    configs: list[RunConfig]
    skipped: list[RunConfig] = field(default_factory=list)  # already ok in the store
    unsupported: list[tuple[RunConfig, str]] = field(default_factory=list)
    ok: int = 0
    failed: list[tuple[RunConfig, str]] = field(default_factory=list)
    jobs: int = 0
    seconds: float = 0.0
    interrupted: bool = False

    @property
    def hashes(self) -> list[str]:
        return [c.hash for c in self.configs]

    def summary(self) -> str:
        parts = [f"{len(self.configs)} runs", f"{self.ok} ok", f"{len(self.failed)} failed",
                 f"{len(self.skipped)} already done"]
        if self.unsupported:
            parts.append(f"{len(self.unsupported)} unsupported (skipped)")
        return f"{', '.join(parts)} in {self.jobs} jobs, {self.seconds:.1f} s; results in {self.results}"


def describe_unsupported(refused: Sequence[tuple[RunConfig, str]]) -> str:
    """One line per refused method, with the count of its runs and the backend's reason."""
    by_method: OrderedDict[str, list] = OrderedDict()
    for cfg, reason in refused:
        by_method.setdefault(label_of(cfg), [0, reason])[0] += 1
    return "; ".join(f"{label} ({n} run{'s' if n > 1 else ''}): {reason}" for label, (n, reason) in by_method.items())


def run_suite(
    configs: Sequence[RunConfig],
    results: str | Path = "results.sqlite",
    *,
    executor: str = "local",
    workers: int = 1,
    ray_address: str | None = None,
    device: str = "cpu",
    data_dir: str | Path | None = None,
    progress: bool = True,
    max_replicas: int | None = None,
    threads: int | None = 1,
    on_unsupported: str = "skip",
    on_result: Callable[[list[dict]], None] | None = None,
) -> SuiteReport:
    """Run ``configs`` (from :func:`~bnn_priors.suite.config.expand_grid`) into the results file.

    ``executor``: ``local`` (in-process with ``workers=1``, else ``workers``
    processes) or ``ray`` (``ray_address``, or a new local instance).
    ``threads`` sets torch's threads per job (1 is fastest for these small
    networks; ``None`` leaves torch's setting alone). ``max_replicas``: the most
    runs batched into one model (``None``: :func:`replicas_per_job`). ``on_unsupported``:
    ``"skip"`` (warn and skip, unless nothing else is left) or ``"error"``.
    Returns a :class:`SuiteReport`; Ctrl-C stops the jobs in flight and
    re-raises ``KeyboardInterrupt`` after the finished runs are saved.
    """
    from tqdm.auto import tqdm

    from inference.common import resolve_device

    start = time.perf_counter()
    configs = list(dict.fromkeys(configs))  # equal configs (same hash) run once
    if not configs:
        raise InvalidParameterError("the grid is empty: nothing to run")
    if on_unsupported not in ("skip", "error"):
        raise InvalidParameterError(f"on_unsupported must be 'skip' or 'error', got {on_unsupported!r}")
    device = str(resolve_device(device))
    data_dir = None if data_dir is None else str(Path(data_dir).expanduser())
    infos = {name: data_info(name, data_dir) for name in dict.fromkeys(c.dataset for c in configs)}
    refused = check_support(configs, {name: info.in_features for name, info in infos.items()})
    if refused and (on_unsupported == "error" or len(refused) == len(configs)):
        raise UnsupportedCombinationError(describe_unsupported(refused))
    if refused:
        warnings.warn(
            f"skipping {len(refused)} unsupported run{'s' if len(refused) > 1 else ''}: {describe_unsupported(refused)}",
            UserWarning,
            stacklevel=2,
        )
    refused_hashes = {c.hash for c, _ in refused}
    supported = [c for c in configs if c.hash not in refused_hashes]
    report = SuiteReport(Path(results), supported, unsupported=list(refused))
    with ResultsStore(results) as store:
        done = store.ok_hashes(c.hash for c in supported)
        report.skipped = [c for c in supported if c.hash in done]
        todo = [c for c in supported if c.hash not in done]
        jobs = plan_jobs(todo, infos, max_replicas, device, data_dir, threads)
        report.jobs = len(jobs)
        if not jobs:
            report.seconds = time.perf_counter() - start
            return report
        bar = tqdm(total=len(todo), unit="run", disable=not progress, dynamic_ncols=True, smoothing=0.1)
        configs_by_hash = {c.hash: c for c in todo}
        try:
            with make_executor(executor, workers, ray_address, threads, on_start=lambda job: bar.set_description(job.describe())) as ex:
                for job, result in ex.imap_unordered(run_job, jobs):
                    rows = failed_rows(job, result) if isinstance(result, BaseException) else result
                    store.insert(rows)
                    for row in rows:
                        if row["status"] == "ok":
                            report.ok += 1
                        else:
                            report.failed.append((configs_by_hash[row["config_hash"]], row["error"]))
                    if on_result is not None:
                        on_result(rows)
                    bar.set_description(job.describe())
                    bar.set_postfix(ok=report.ok, failed=len(report.failed), refresh=False)
                    bar.update(len(rows))
        except KeyboardInterrupt:
            report.interrupted = True
            raise
        finally:
            bar.close()
            report.seconds = time.perf_counter() - start
    return report
