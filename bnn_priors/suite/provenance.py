"""What a results row records besides its metrics: which run it is, where, when and with what software.

The same seed gives the same numbers to the last bit only on the same floating-point path: the
CPU (its model and the instruction set torch's kernels use), the torch thread count and the
BLAS/LAPACK library. Another CPU rounds otherwise, and an optimiser can amplify the difference
(README, "Reproducibility"), so every row records them (:func:`float_path`).

Imports: torch, Pyro, :mod:`bnn_priors` (its version, errors) and, of the suite, :mod:`~bnn_priors.suite.config`,
:mod:`~bnn_priors.suite.build` and :mod:`~bnn_priors.suite.planning` (the job type).
"""

from __future__ import annotations

import functools
import platform
import re
import traceback
from datetime import datetime, timezone
from typing import Any

import pyro
import torch

import bnn_priors
from bnn_priors.errors import BNNPriorsError, FitDivergedError
from bnn_priors.suite.build import run_label
from bnn_priors.suite.config import RunConfig, canonical_json
from bnn_priors.suite.planning import Job


def versions() -> dict[str, str]:
    """The versions of torch, Pyro, this package and Python, by results column."""
    return {
        "torch_version": torch.__version__,
        "pyro_version": pyro.__version__,
        "bnn_priors_version": bnn_priors.__version__,
        "python_version": platform.python_version(),
    }


@functools.cache
def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what :func:`platform.processor` says, else the machine type."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, sep, value = line.partition(":")
                if sep and key.strip() == "model name" and value.strip():
                    return " ".join(value.split())
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


@functools.cache
def blas_backend() -> str:
    """torch's BLAS (and LAPACK where it differs) with the library's version where torch states it,
    e.g. ``mkl 2024.2`` or ``open 0.3.27; LAPACK open`` (from ``torch.__config__.show()``)."""
    text = torch.__config__.show()
    info = dict(re.findall(r"\b(BLAS_INFO|LAPACK_INFO)=([^,\s]*)", text))
    blas = info.get("BLAS_INFO") or "unknown"
    version = None
    if blas == "mkl":
        version = re.search(r"Math Kernel Library Version ([0-9][0-9.]*)", text)
    elif blas.startswith("open"):
        version = re.search(r"OpenBLAS\D*([0-9][0-9.]*)", text)
    out = blas if version is None else f"{blas} {version.group(1)}"
    lapack = info.get("LAPACK_INFO")
    return out if not lapack or lapack == blas else f"{out}; LAPACK {lapack}"


def float_path(threads: int | None) -> dict[str, Any]:
    """What decides a run's floating-point path, by results column: the CPU model, the instruction set
    torch's CPU kernels use (``torch.backends.cpu.get_cpu_capability()``), the torch threads of the job
    (``threads``; ``None``: torch's current setting) and the BLAS/LAPACK library."""
    return {
        "cpu_model": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": int(threads) if threads is not None else torch.get_num_threads(),
        "blas": blas_backend(),
    }


def device_name(device) -> str:
    """``cpu``, or ``cuda:N (the card's name)``."""
    dev = torch.device(device)
    if dev.type == "cuda":
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return str(dev)


def now() -> str:
    """The time, UTC, ISO 8601 to the microsecond."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def base_row(cfg: RunConfig) -> dict[str, Any]:
    """The columns that name the run: its hash, its config, its label and its grid axes."""
    return {
        "config_hash": cfg.hash,
        "config": canonical_json(cfg.to_dict()),
        "label": run_label(cfg),
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
    stamp, software = now(), {**versions(), **float_path(job.threads)}
    return [
        {
            **base_row(cfg),
            "status": "failed",
            "error": message,
            "traceback": tb,
            "replicas": len(job.configs),
            "device": job.device,
            "timestamp": stamp,
            **software,
        }
        for cfg in job.configs
    ]


def per_replica_info(info: dict, r: int, R: int) -> dict[str, Any]:
    """The facts of a backend's ``info`` for replica ``r`` (histories left out): scalars, a per-replica
    list's element ``r`` (a number, a short list of numbers such as one per chain, or the scalar facts of
    a dict such as NUTS's ``predictive`` diagnostics) and, recursively, the same of dicts."""
    out = {}
    for key, value in info.items():
        if key.endswith("history"):
            continue
        per_replica = isinstance(value, (list, tuple)) and len(value) == R
        if per_replica and all(isinstance(v, (int, float)) for v in value):
            out[key] = value[r]
        elif per_replica and all(isinstance(v, dict) for v in value):
            sub = {k: v for k, v in value[r].items() if isinstance(v, (int, float, str, bool)) or v is None}
            if sub:
                out[key] = sub
        elif per_replica and all(
            isinstance(v, (list, tuple)) and len(v) <= 64 and all(isinstance(x, (int, float)) for x in v) for v in value
        ):
            out[key] = list(value[r])
        elif isinstance(value, (int, float, str, bool)) or value is None:
            out[key] = value
        elif isinstance(value, dict):
            sub = per_replica_info(value, r, R)
            if sub:
                out[key] = sub
    return out
