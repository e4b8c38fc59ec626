"""Running a suite: train and evaluate each job, record every run, skip what is done.

Imports: torch, :mod:`bnn_priors.data` (stacking splits), :mod:`bnn_priors.errors`,
:mod:`inference.common` (devices, thread counts), :mod:`inference.training` (checkpoints, threads),
:mod:`inference.allocator` (the evaluation's memory) and, of the suite, :mod:`~bnn_priors.suite.config`,
:mod:`~bnn_priors.suite.methods`, :mod:`~bnn_priors.suite.build`,
:mod:`~bnn_priors.suite.data_options`, :mod:`~bnn_priors.suite.loading`,
:mod:`~bnn_priors.suite.planning`, :mod:`~bnn_priors.suite.provenance`,
:mod:`~bnn_priors.suite.evaluation`, :mod:`~bnn_priors.suite.executors` and
:mod:`~bnn_priors.suite.store`.

:func:`run_suite` is the driver:

1. load every data set of the grid once (a missing or corrupt file is an error
   before any training) and ask each backend whether it supports each model
   (:func:`~bnn_priors.suite.planning.check_support`). Unsupported combinations
   are skipped with a warning that lists them when the grid has others to run;
   when *every* run of the grid is unsupported (e.g. a single NUTS run with
   Bernoulli noise) the suite stops with
   :class:`~bnn_priors.UnsupportedCombinationError` before doing anything.
   ``on_unsupported="error"`` makes any unsupported run an error;
2. skip the configs whose hash is already ``ok`` in the results store (a rerun
   resumes; failed runs are tried again);
3. group the configs that differ only in split or seed into batched jobs
   (:func:`~bnn_priors.suite.planning.plan_jobs`): one model with ``replicas=R``,
   the splits stacked on the replica axis (each standardized on its own training
   part), one seed per replica. Runs whose backend options differ per split
   (option ``gal_tau``: a precision per split) are batched only when the backend
   takes them per replica, else they train one split per job. Configs that differ in
   settings the backend takes per replica (MC dropout: the dropout rate and
   ``gal_tau``, so a Gal grid, in jobs of up to ``max_replicas``) batch as well
   (:func:`~bnn_priors.suite.planning.batch_key`);
4. run the jobs on an executor (:func:`run_job`) and write each job's rows, in one
   transaction, as soon as it finishes. A job that raises records its runs as
   ``failed`` with the message and the suite goes on; when a batched job diverges
   (:class:`~bnn_priors.FitDivergedError`), its runs are retried one at a time so
   that only the diverging ones are recorded as failed.

Metrics are in the target's original units (:mod:`~bnn_priors.suite.evaluation`).
A hold-out run (``holdout``) trains on the first part of its training split
(standardized with that part) and records the same metrics on the held-out rest
(``val_rmse``, ``val_log_likelihood``, ``val_sample_mae``) as well. Beside RMSE and
log-likelihood each run records the sample-MAE and the coverage of central
predictive intervals (``coverage``: counts per nominal level, JSON).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from bnn_priors.data import stack_splits
from bnn_priors.errors import (
    CheckpointInUseError,
    DataError,
    FitDivergedError,
    InvalidParameterError,
    UnsupportedCombinationError,
)
from bnn_priors.suite.build import build_model, heatmap_layer
from bnn_priors.suite.config import RunConfig
from bnn_priors.suite.data_options import resolve_job_options
from bnn_priors.suite.evaluation import evaluate, evaluate_metrics
from bnn_priors.suite.executors import make_executor
from bnn_priors.suite.loading import data_info, load
from bnn_priors.suite.methods import get_method
from bnn_priors.suite.planning import (
    CHECKPOINT_EVERY,
    Job,
    check_support,
    describe_unsupported,
    plan_jobs,
)
from bnn_priors.suite.provenance import (
    base_row,
    device_name,
    failed_rows,
    float_path,
    now,
    per_replica_info,
    versions,
)
from bnn_priors.suite.store import ResultsStore, array_to_npy
from inference.allocator import reuse_large_blocks
from inference.common import check_threads, resolve_device
from inference.training import Checkpoint, flush_denormals, torch_threads

#: A fit has blown up when its predictive mean misses the standardized training targets by more
#: than this many of their standard deviations (root mean square; predicting their mean scores 1).
#: Losses and predictions can run away while staying finite (an RMSE of 9e10 was once stored as a
#: valid result); the training data and the targets' own scale decide, never the test data.
BLOWUP_TRAIN_RMSE = 10.0
#: Posterior samples for that check (at most the run's ``eval_samples``).
BLOWUP_CHECK_SAMPLES = 100


def _verdict(test_ok: bool, val_ok: bool, train_rmse: float) -> str | None:
    """Why a trained run is a failure (``None``: it is not)."""
    if not test_ok:
        return "the test metrics are NaN or infinite"
    if not val_ok:
        return "the validation metrics are NaN or infinite"
    if not train_rmse <= BLOWUP_TRAIN_RMSE:
        return (
            f"FitDivergedError: the fit blew up: its predictive mean misses the standardized training targets "
            f"by {train_rmse:.3g} standard deviations (root mean square; at most {BLOWUP_TRAIN_RMSE:g} is "
            "accepted, predicting their mean scores 1); try a smaller lr, clip_norm or a lighter-tailed prior"
        )
    return None


def fit_job(job: Job) -> list[dict[str, Any]]:
    """Train and evaluate one batched job; raises what the backend raises."""
    cfg0 = job.configs[0]
    R = len(job.configs)
    dataset = load(cfg0.dataset, job.data_dir)
    data = stack_splits(dataset, [c.split for c in job.configs], holdout=cfg0.holdout)
    method = get_method(cfg0.inference)
    seeds = [c.seed for c in job.configs]
    options = resolve_job_options(job.configs, data.X_train.shape[1], data.y_std, method.backend_class.replica_options)
    width = max(dataset.X.shape[1], *cfg0.architecture.hidden)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        backend = method.make_backend(cfg0.budget, options, seed=seeds, device=job.device, progress=False,
                                      threads=job.threads)
        model = build_model(cfg0, dataset.X.shape[1], replicas=R)
        checkpoint = job.checkpoint() if backend.checkpoints else None
        extra = {} if checkpoint is None else {"checkpoint": checkpoint}
        if backend.diagnoses_test_inputs:  # the inputs only: NUTS's R-hat and ESS of f(x) there
            extra["X_test"] = data.X_test
        start = time.perf_counter()
        posterior = backend.fit(model, data.X_train, data.y_train, **extra)
        # A job continued from a checkpoint: its earlier processes' training seconds count too.
        seconds = time.perf_counter() - start + float(posterior.info.get("seconds_before_resume", 0.0))
        # An evaluation chunk's tensors are up to 8 MiB per replica: on the CPU, kept on the heap, not faulted in anew
        with reuse_large_blocks() if backend.device.type == "cpu" else contextlib.nullcontext(False):
            test = evaluate_metrics(posterior, data.X_test, data.y_test, cfg0.eval_samples, data.y_std, width)
            rmse, ll = test.rmse, test.log_likelihood
            val_rmse = val_ll = val_mae = np.full(R, np.nan)
            if data.X_val is not None:
                val = evaluate_metrics(posterior, data.X_val, data.y_val, cfg0.eval_samples, data.y_std, width)
                val_rmse, val_ll, val_mae = val.rmse, val.log_likelihood, val.sample_mae
            # standardized units (y_scale 1): the blow-up check of each replica
            train_rmse, _ = evaluate(posterior, data.X_train, data.y_train,
                                     min(cfg0.eval_samples, BLOWUP_CHECK_SAMPLES), np.ones(R), width)
    layer = heatmap_layer(cfg0)
    try:
        weights = np.asarray(posterior.weight_means()[layer])
        weights = weights.reshape((R, *weights.shape[-2:]))
    except (NotImplementedError, KeyError):
        weights = None
    notes = sorted({str(w.message) for w in caught})
    device = device_name(backend.device)
    software = {**versions(), **float_path(job.threads)}
    stamp = now()
    rows = []
    for r, cfg in enumerate(job.configs):
        info = per_replica_info(dict(posterior.info), r, R)
        info["train_rmse_standardized"] = float(train_rmse[r])
        if notes:
            info["warnings"] = notes
        ok = bool(np.isfinite(rmse[r]) and np.isfinite(ll[r]))
        val_ok = cfg.holdout is None or bool(np.isfinite(val_rmse[r]) and np.isfinite(val_ll[r]))
        failure = _verdict(ok, val_ok, float(train_rmse[r]))
        rows.append({
            **base_row(cfg),
            "status": "ok" if failure is None else "failed",
            "error": failure,
            "rmse": float(rmse[r]),
            "log_likelihood": float(ll[r]),
            "sample_mae": float(test.sample_mae[r]),
            "coverage": test.coverage_json(r),
            "val_rmse": None if cfg.holdout is None else float(val_rmse[r]),
            "val_log_likelihood": None if cfg.holdout is None else float(val_ll[r]),
            "val_sample_mae": None if cfg.holdout is None else float(val_mae[r]),
            "train_seconds": seconds,
            "replicas": R,
            "device": device,
            "timestamp": stamp,
            "weights": None if weights is None else array_to_npy(weights[r].astype(np.float32)),
            "weights_layer": None if weights is None else layer,
            "backend_info": json.dumps(info, default=str),
            **software,
        })
    return rows


@dataclass(frozen=True)
class JobSkipped:
    """What :func:`run_job` returns for a job it did not train: another process holds the job's
    checkpoint (``reason="held"``, ``holder`` names it) or stored all its runs meanwhile
    (``reason="done"``). Nothing of such a job is stored or removed."""

    reason: str
    holder: str = ""


def _stored_meanwhile(job: Job) -> bool:
    """Whether every run of ``job`` is ok in its results file (another process ran the same grid)."""
    if job.results is None or not Path(job.results).is_file():
        return False
    try:
        with ResultsStore(job.results, create=False) as store:
            return len(store.ok_hashes(c.hash for c in job.configs)) == len(job.configs)
    except (DataError, sqlite3.Error):  # unreadable now: train, as without the check
        return False


def run_job(job: Job) -> list[dict[str, Any]] | JobSkipped:
    """Run a job and return its rows, or :class:`JobSkipped` when another process holds the job
    (:meth:`~inference.training.Checkpoint.claim` of its checkpoint: two processes never train one
    job side by side) or has stored its runs meanwhile. Every failure becomes ``failed`` rows,
    never an exception.

    Two processes on one machine running the same grid (a rerun while the first still runs) so
    share its jobs; a job that one finishes while the other has it
    planned trains again only if it was already claimed.
    """
    checkpoint = job.checkpoint()
    if checkpoint is None:
        return _run_job(job)
    try:
        with checkpoint.claim():
            if _stored_meanwhile(job):
                return JobSkipped("done")
            return _run_job(job)
    except CheckpointInUseError as exc:
        return JobSkipped("held", exc.holder)


def _run_job(job: Job) -> list[dict[str, Any]]:
    """Train and evaluate ``job`` (no claim): its rows, every failure as ``failed`` rows.

    When a batched fit diverges and the backend names the replicas that did
    (``FitDivergedError.replicas``, as MC dropout does), those runs fail and the others
    train again as one job without them; otherwise the batch is retried one run at a
    time, so only the diverging runs fail (the batch's checkpoint is dropped; each retried
    job checkpoints on its own). (``KeyboardInterrupt`` is not caught.)
    """
    with flush_denormals(), torch_threads(job.threads):
        try:
            return fit_job(job)
        except FitDivergedError as exc:
            if len(job.configs) == 1:
                return failed_rows(job, exc)
            _drop_checkpoint(job)
            named = sorted(set(exc.replicas or ()))
            if named and all(0 <= r < len(job.configs) for r in named):
                if len(named) == len(job.configs):  # every replica diverged, independently of the others
                    return failed_rows(job, exc)
                bad = tuple(job.configs[r] for r in named)
                rest = replace(job, configs=tuple(c for r, c in enumerate(job.configs) if r not in named))
                return failed_rows(replace(job, configs=bad), exc) + _run_claimed(rest)
            rows = []
            for cfg in job.configs:
                rows.extend(_run_claimed(replace(job, configs=(cfg,))))
            return rows
        except Exception as exc:  # noqa: BLE001 - recorded as the runs' failure
            return failed_rows(job, exc)


def _run_claimed(job: Job) -> list[dict[str, Any]]:
    """A retried part of a job, claimed as a job is and its checkpoint removed once it is done
    (a part another process holds fails here, and a rerun trains it)."""
    checkpoint = job.checkpoint()
    if checkpoint is None:
        return _run_job(job)
    try:
        with checkpoint.claim():
            rows = _run_job(job)
            checkpoint.remove()
            return rows
    except CheckpointInUseError as exc:
        return failed_rows(job, exc)


def _drop_checkpoint(job: Job) -> None:
    """Remove ``job``'s checkpoint in a process that holds the job (its retry paths)."""
    checkpoint = job.checkpoint()
    if checkpoint is not None:
        checkpoint.remove()


def checkpoint_dir(results: str | Path) -> Path:
    """The folder of a results file's job checkpoints: ``<results>.checkpoints`` beside it."""
    results = Path(results)
    return results.with_name(results.name + ".checkpoints")


@dataclass(frozen=True)
class JobProgress:
    """How far an unfinished job got, from its checkpoint file (:func:`job_progress`)."""

    path: Path
    #: the job's description (:meth:`Job.describe`); empty for a file saved before labels were
    label: str
    #: steps (gradient backends) or iterations (NUTS) done and in all (``None``: not recorded)
    done: int
    total: int | None
    unit: str
    #: training seconds of the job so far, over all the processes that worked on it
    seconds: float
    #: when the file was written (seconds since the epoch)
    saved: float
    #: why the file could not be read (then the other fields say nothing), else empty
    error: str = ""
    #: the live process training the job now (pid and host), or ``None`` (a stopped job)
    holder: str | None = None

    @property
    def seconds_left(self) -> float | None:
        """The rest at the job's average pace so far (``None`` without a total or progress)."""
        if self.total is None or self.done <= 0 or self.error:
            return None
        return self.seconds * max(self.total - self.done, 0) / self.done


def job_progress(results: str | Path) -> list[JobProgress]:
    """The unfinished jobs of a results file: one :class:`JobProgress` per checkpoint in
    ``<results>.checkpoints/`` (a job removes its file once its runs are stored), oldest first.
    A file that cannot be read as a checkpoint gets an entry whose ``error`` says why; one that
    a finishing job removed meanwhile is left out."""
    import torch  # only here: reading a checkpoint

    folder = checkpoint_dir(results)
    out = []
    for path in sorted(folder.glob("*.pt")) if folder.is_dir() else []:
        try:
            saved = path.stat().st_mtime
            # memory-mapped: a NUTS checkpoint holds its draws so far, and only a few numbers are read
            state = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
            nuts = "iteration" in state
            done = int(state["iteration"] if nuts else state["step"])
        except FileNotFoundError:
            continue
        except Exception as exc:  # noqa: BLE001 - a truncated or foreign file
            why = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
            out.append(JobProgress(path, "", 0, None, "steps", 0.0, saved, why))
            continue
        total = state.get("total_iterations" if nuts else "total_steps")
        out.append(JobProgress(path, str(state.get("label", "")), done, None if total is None else int(total),
                               "iterations" if nuts else "steps", float(state.get("seconds", 0.0)), saved,
                               holder=Checkpoint(path, "").holder()))
    return sorted(out, key=lambda p: p.saved)


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
    #: Jobs left to another process that held them: ``(job description, holder, runs)``.
    held: list[tuple[str, str, int]] = field(default_factory=list)
    #: The distinct warnings of the backends, ``(run label, message) -> data sets`` in the order met.
    #: They come back in the rows (``backend_info``), also from worker processes.
    warnings: dict[tuple[str, str], list[str]] = field(default_factory=dict)

    @property
    def hashes(self) -> list[str]:
        return [c.hash for c in self.configs]

    def add_warnings(self, row: dict[str, Any]) -> None:
        """Note the backend warnings stored in ``row`` (a results row), each once per (label, message)."""
        info = json.loads(row.get("backend_info") or "{}")
        for message in info.get("warnings", ()):
            datasets = self.warnings.setdefault((row["label"], " ".join(str(message).split())), [])
            if row["dataset"] not in datasets:
                datasets.append(row["dataset"])

    def warning_lines(self) -> list[str]:
        """One line per distinct warning, naming the configuration: ``LABEL on DATA SETS: MESSAGE``."""
        return [f"{label} on {', '.join(datasets)}: {message}" for (label, message), datasets in self.warnings.items()]

    def summary(self) -> str:
        parts = [f"{len(self.configs)} runs", f"{self.ok} ok", f"{len(self.failed)} failed",
                 f"{len(self.skipped)} already done"]
        if self.unsupported:
            parts.append(f"{len(self.unsupported)} unsupported (skipped)")
        if self.held:
            parts.append(f"{sum(n for *_, n in self.held)} being trained by another process (left to it)")
        return f"{', '.join(parts)} in {self.jobs} jobs, {self.seconds:.1f} s; results in {self.results}"


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
    checkpoint_every: float | None = CHECKPOINT_EVERY,
) -> SuiteReport:
    """Run ``configs`` (from :func:`~bnn_priors.suite.config.expand_grid`) into the results file.

    ``executor``: ``local`` (in-process with ``workers=1``, else ``workers``
    processes) or ``ray`` (``ray_address``, or a new local instance).
    ``threads`` sets torch's threads per job (1 is fastest for these small
    networks; ``None`` leaves torch's setting alone). ``max_replicas``: the most
    runs batched into one model (``None``: :func:`~bnn_priors.suite.planning.replicas_per_job`). ``on_unsupported``:
    ``"skip"`` (warn and skip, unless nothing else is left) or ``"error"``.
    ``checkpoint_every``: seconds between two checkpoints of a training job, written
    to ``<results>.checkpoints/`` (:func:`checkpoint_dir`) and removed once the job's
    rows are saved; a rerun continues a killed job from its last checkpoint and gets
    the numbers of an uninterrupted run (``None``: no checkpoints). With Ray, workers
    on other machines need that folder on a shared file system.
    Returns a :class:`SuiteReport` (with the backends' distinct warnings, which the fits
    record in their rows rather than raise); Ctrl-C stops the jobs in flight and
    re-raises ``KeyboardInterrupt`` after the finished runs are saved.
    """
    start = time.perf_counter()
    configs = list(dict.fromkeys(configs))  # equal configs (same hash) run once
    if not configs:
        raise InvalidParameterError("the grid is empty: nothing to run")
    if on_unsupported not in ("skip", "error"):
        raise InvalidParameterError(f"on_unsupported must be 'skip' or 'error', got {on_unsupported!r}")
    check_threads(threads)
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
        if checkpoint_every is not None:
            # absolute: a worker in another folder (Ray) finds them
            folder = str(checkpoint_dir(Path(results).resolve()))
            jobs = [replace(job, checkpoint_dir=folder, checkpoint_every=float(checkpoint_every),
                            results=str(Path(results).resolve())) for job in jobs]
        report.jobs = len(jobs)
        if not jobs:
            report.seconds = time.perf_counter() - start
            return report
        bar = tqdm(total=len(todo), unit="run", disable=not progress, dynamic_ncols=True, smoothing=0.1)
        configs_by_hash = {c.hash: c for c in todo}
        try:
            with make_executor(executor, workers, ray_address, threads, on_start=lambda job: bar.set_description(job.describe())) as ex:
                for job, result in ex.imap_unordered(run_job, jobs):
                    if isinstance(result, JobSkipped):  # another process's: nothing stored, nothing removed
                        if result.reason == "held":
                            report.held.append((job.describe(), result.holder, len(job.configs)))
                        else:
                            report.skipped.extend(job.configs)
                        bar.update(len(job.configs))
                        continue
                    rows = failed_rows(job, result) if isinstance(result, BaseException) else result
                    store.insert(rows)
                    # Its rows are saved: nothing to continue, unless another process took the job up
                    # between this one's release and now (then the file is that process's).
                    checkpoint = job.checkpoint()
                    if checkpoint is not None:
                        checkpoint.remove_unless_held()
                    for row in rows:
                        report.add_warnings(row)
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
    with contextlib.suppress(OSError):  # the folder goes once no job left a checkpoint in it
        checkpoint_dir(results).rmdir()
    return report
