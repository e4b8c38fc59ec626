"""Where jobs run: in this process, in local worker processes, or on a Ray cluster.

Every executor maps a job function over jobs and yields ``(job, result)`` as jobs
finish, where ``result`` is what the function returned or the exception that
stopped it; the driver alone writes the results. ``close(cancel=True)`` (on
Ctrl-C) stops the jobs in flight.

* :class:`InProcessExecutor` (``workers=1``): one job after the other.
* :class:`ProcessExecutor` (``--workers N``): a
  :class:`concurrent.futures.ProcessPoolExecutor` with the ``spawn`` start
  method; each worker sets torch to one thread, ignores Ctrl-C (the driver
  handles it and stops the workers) and dies with its driver (a SIGKILLed driver
  cannot stop them itself).
* :class:`RayExecutor` (``--executor ray``): ``ray.init(address=...)`` (a new
  local instance when no address is given), one remote task per job with one
  CPU; the tasks return their rows to the driver.

:data:`EXECUTORS` is the registry of executor kinds (the command line's ``--executor``).

Imports: :mod:`bnn_priors.errors` only.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any

from bnn_priors.errors import InvalidParameterError, lookup

#: Every executor kind by name, with what it runs jobs on.
EXECUTORS: dict[str, str] = {
    "local": "this process, or --workers local processes",
    "ray": "a Ray cluster (--ray-address, else a new local instance)",
}

JobFn = Callable[[Any], Any]


class Executor(ABC):
    name: str = "executor"

    @abstractmethod
    def imap_unordered(self, fn: JobFn, jobs: Sequence[Any]) -> Iterator[tuple[Any, Any]]:
        """Yield ``(job, result or exception)`` as jobs finish."""

    def close(self, cancel: bool = False) -> None:  # noqa: B027 - nothing to release by default
        """Release the workers; ``cancel`` stops jobs still running."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(cancel=exc_type is not None)

    def describe(self) -> str:
        return self.name


class InProcessExecutor(Executor):
    """Runs jobs one after the other in this process; ``on_start(job)`` is called before each."""

    name = "in-process"

    def __init__(self, on_start: Callable[[Any], None] | None = None):
        self.on_start = on_start

    def imap_unordered(self, fn, jobs):
        for job in jobs:
            if self.on_start is not None:
                self.on_start(job)
            try:
                result = fn(job)
            except Exception as exc:  # noqa: BLE001 - reported to the driver as the job's failure
                result = exc
            yield job, result


#: Seconds between two looks of a worker's watchdog at its parent.
WATCHDOG_INTERVAL = 0.5

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _init_worker(threads: int, driver_pid: int, death_signal: bool) -> None:
    """Set up a local worker process: dies with its driver, one torch thread, Ctrl-C left to the driver."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_driver(driver_pid, death_signal)
    import torch

    torch.set_num_threads(max(1, int(threads)))


def _die_with_driver(driver_pid: int, death_signal: bool) -> None:
    """End this worker when ``driver_pid``, its parent, ends, however it ends.

    A driver killed with SIGKILL runs no clean-up, and its workers would go on with
    their jobs and then wait for more for ever (their queues hold both ends of the
    pipe, so they never read end-of-file). Two guards:

    * on Linux, ``death_signal`` asks the kernel for SIGKILL when the parent dies
      (``prctl(PR_SET_PDEATHSIG)``). The kernel sends it when the *thread* that
      started the worker ends, so the driver asks for it only when that thread is
      its main thread, which lives as long as the process;
    * everywhere, a daemon thread that looks every :data:`WATCHDOG_INTERVAL`
      seconds whether the parent is still ``driver_pid`` (an orphan is adopted by
      another process) and ends the worker otherwise.

    A driver that died before the signal was asked for is caught by the first look.
    """
    if death_signal and sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # no prctl in this libc: the watchdog alone
            pass
    if os.getppid() != driver_pid:
        os._exit(1)
    threading.Thread(target=_watch_driver, args=(driver_pid,), name="driver-watchdog", daemon=True).start()


def _watch_driver(driver_pid: int) -> None:
    while os.getppid() == driver_pid:
        time.sleep(WATCHDOG_INTERVAL)
    os._exit(1)  # no clean-up: nobody is left to report to


class ProcessExecutor(Executor):
    """A pool of ``workers`` local processes (spawn start method)."""

    name = "local processes"

    def __init__(self, workers: int, threads: int = 1):
        if workers < 1:
            raise InvalidParameterError(f"workers must be a positive integer, got {workers}")
        self.workers = workers
        self.threads = threads
        self.pool: ProcessPoolExecutor | None = None

    def describe(self) -> str:
        return f"{self.workers} local processes"

    def _start_pool(self) -> ProcessPoolExecutor:
        """The pool, made on first use: with ``spawn`` it starts its workers in the thread that
        submits jobs, which decides whether they may ask for a parent-death signal."""
        if self.pool is None:
            starter_is_main = threading.current_thread() is threading.main_thread()
            self.pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(self.threads, os.getpid(), starter_is_main),
            )
        return self.pool

    def imap_unordered(self, fn, jobs):
        pool = self._start_pool()
        futures = {pool.submit(fn, job): job for job in jobs}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                try:
                    result = fut.result()
                except Exception as exc:  # noqa: BLE001 - a crashed worker fails its job
                    result = exc
                yield futures[fut], result

    def close(self, cancel: bool = False) -> None:
        if self.pool is None:
            return
        if not cancel:
            self.pool.shutdown(wait=True)
            return
        processes = list(getattr(self.pool, "_processes", {}).values())
        self.pool.shutdown(wait=False, cancel_futures=True)
        for proc in processes:  # the pool's own workers, by their process objects
            if proc.is_alive():
                proc.terminate()
        for proc in processes:
            proc.join(timeout=5)
        self.pool.shutdown(wait=True)  # joins the pool's manager thread, which closes its queues


class RayExecutor(Executor):
    """One Ray task per job; ``address=None`` starts a local Ray instance for this suite."""

    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None, threads: int = 1):
        try:
            import ray
        except ImportError:
            raise InvalidParameterError(
                "--executor ray needs the ray package: pip install 'bnn-priors[distributed]'"
            ) from None
        self.ray = ray
        self.address = address
        self.threads = threads
        self._owns = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {
                "include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING,
            }
            if address is None and workers is not None:
                kwargs["num_cpus"] = workers
            try:
                ray.init(address=address, **kwargs)
            except (ConnectionError, ValueError, RuntimeError) as exc:
                raise InvalidParameterError(f"cannot connect to Ray at {address!r}: {exc}") from None
            self._owns = True
        self._refs: dict[Any, Any] = {}

    def describe(self) -> str:
        return f"ray ({self.address or 'local instance'})"

    def imap_unordered(self, fn, jobs):
        ray = self.ray
        remote = ray.remote(num_cpus=1, max_retries=0)(fn)
        self._refs = {remote.remote(job): job for job in jobs}
        pending = list(self._refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                try:
                    result = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - a failed task fails its job
                    result = getattr(exc, "cause", None) or exc
                yield self._refs.pop(ref), result

    def close(self, cancel: bool = False) -> None:
        if cancel:
            for ref in list(self._refs):
                try:
                    self.ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001 - best effort on the way out
                    pass
        self._refs = {}
        if self._owns and self.ray.is_initialized():
            self.ray.shutdown()


def make_executor(
    kind: str = "local",
    workers: int = 1,
    ray_address: str | None = None,
    threads: int = 1,
    on_start: Callable[[Any], None] | None = None,
) -> Executor:
    """``local`` with one worker runs in this process, with more a process pool; ``ray`` uses Ray."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise InvalidParameterError(f"workers must be a positive integer, got {workers!r}")
    key = lookup("executor", kind, EXECUTORS)
    if key == "ray":
        return RayExecutor(ray_address, workers if workers > 1 else None, threads)
    if ray_address is not None:
        raise InvalidParameterError("--ray-address needs --executor ray")
    if workers == 1:
        return InProcessExecutor(on_start)
    return ProcessExecutor(workers, threads)
