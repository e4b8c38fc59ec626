"""Planning a suite: which runs a backend refuses, and which runs train together as one batched job.

Imports: :mod:`bnn_priors.errors`, :mod:`inference.training` (checkpoints) and, of the suite, :mod:`~bnn_priors.suite.config`,
:mod:`~bnn_priors.suite.methods`, :mod:`~bnn_priors.suite.build`,
:mod:`~bnn_priors.suite.data_options` and :mod:`~bnn_priors.suite.loading`.

Configs that differ only in split or seed train as one model with ``replicas=R``,
the splits stacked on the replica axis; backends guarantee that a replica trained
in a batch equals the same run trained alone. So do configs that differ in settings
that the backend takes per replica (:func:`batch_key`): for MC dropout the noise
model's parameters and the ``gal_tau`` option, so that a Gal grid (every split,
dropout rate and precision) trains as one model, or as a few when it has more runs
than a job's replicas. How many replicas a job holds is :func:`replicas_per_job`'s
choice (``max_replicas``: 64 by default; 240 holds a whole grid of 20 splits).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bnn_priors.errors import InvalidParameterError, UnsupportedCombinationError
from bnn_priors.suite.build import build_model, build_prior, run_label
from bnn_priors.suite.config import RunConfig, canonical_json
from bnn_priors.suite.data_options import replica_options_needed, resolve_options
from bnn_priors.suite.loading import DataInfo
from bnn_priors.suite.methods import get_method
from inference.training import Checkpoint

#: Seconds between two checkpoints of a training job (``run_suite(checkpoint_every=...)``).
CHECKPOINT_EVERY = 300.0
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


# ----------------------------------------------------------------------- support
def check_support(configs: Iterable[RunConfig], in_features: Mapping[str, int]) -> list[tuple[RunConfig, str]]:
    """Configs whose backend refuses their model, with the backend's reason.

    Builds one model per distinct (method, prior, architecture, input size) and
    calls ``backend.check_model``. Invalid options raise at once (a user mistake
    that no grid can skip). Data options are resolved for a stand-in training set
    (one point, unit target scale): only their validity matters here.
    """
    verdicts: dict[tuple[str, int], str | None] = {}
    refused = []
    for cfg in configs:
        key = (cfg.method_key, in_features[cfg.dataset])
        if key not in verdicts:
            method = get_method(cfg.inference)
            backend = method.make_backend(cfg.budget, resolve_options(cfg, 1, [1.0]), seed=0)
            try:
                model = build_model(cfg, in_features[cfg.dataset])
                backend.check_model(model)
                verdicts[key] = None
            except UnsupportedCombinationError as exc:
                verdicts[key] = str(exc)
        if verdicts[key] is not None:
            refused.append((cfg, verdicts[key]))
    return refused


def describe_unsupported(refused: Sequence[tuple[RunConfig, str]]) -> str:
    """One line per refused method, with the count of its runs and the backend's reason."""
    by_method: OrderedDict[str, list] = OrderedDict()
    for cfg, reason in refused:
        by_method.setdefault(run_label(cfg), [0, reason])[0] += 1
    return "; ".join(f"{label} ({n} run{'s' if n > 1 else ''}): {reason}" for label, (n, reason) in by_method.items())


# -------------------------------------------------------------------------- jobs
@dataclass(frozen=True)
class Job:
    """Runs that train together as one model with ``len(configs)`` replicas."""

    configs: tuple[RunConfig, ...]
    device: str = "cpu"
    data_dir: str | None = None
    threads: int | None = 1
    #: Where the job's training checkpoints go (``None``: no checkpoints), and how often.
    checkpoint_dir: str | None = None
    checkpoint_every: float = CHECKPOINT_EVERY
    #: The results file the job's rows go to, read before training to skip a job that another
    #: process finished meanwhile (``None``: not read).
    results: str | None = None

    def checkpoint(self) -> Checkpoint | None:
        """The job's checkpoint: a file named by the hash of its runs' hashes, keyed by all of them,
        so that a rerun planning the same job continues it and no other job can."""
        if self.checkpoint_dir is None:
            return None
        key = hashlib.sha256(",".join(c.hash for c in self.configs).encode("ascii")).hexdigest()
        return Checkpoint(Path(self.checkpoint_dir) / f"{key[:24]}.pt", key, self.checkpoint_every, self.describe())

    def describe(self) -> str:
        c = self.configs[0]
        splits = sorted({cfg.split for cfg in self.configs})
        seeds = sorted({cfg.seed for cfg in self.configs})
        where = f"split{'s' if len(splits) > 1 else ''} {_ranges(splits)}"
        if len(seeds) > 1 or seeds != [0]:
            where += f" seed{'s' if len(seeds) > 1 else ''} {_ranges(seeds)}"
        others = len({run_label(cfg) for cfg in self.configs}) - 1
        label = run_label(c) + (f" and {others} other setting{'s' if others > 1 else ''}" if others else "")
        return f"{c.dataset} {where} | {label} | {c.budget} {c.budget_unit}"


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


#: Options that a job's replicas may differ in, with the backend options they set (all of which the
#: backend must take per replica).
PER_REPLICA_CONFIG_OPTIONS: dict[str, tuple[str, ...]] = {"gal_tau": ("weight_decay", "precision")}


def batch_key(cfg: RunConfig) -> str:
    """Configs with equal keys may train as one job: they differ at most in split and seed and in the
    settings that the backend takes per replica: the noise model's parameters (``noise_params``) and
    the options of :data:`PER_REPLICA_CONFIG_OPTIONS`."""
    fields = cfg.hashed_fields()
    fields.pop("split")
    fields.pop("seed")
    takes = set(get_method(cfg.inference).backend_class.replica_options)
    free = {k for k in cfg.options if k in PER_REPLICA_CONFIG_OPTIONS and set(PER_REPLICA_CONFIG_OPTIONS[k]) <= takes}
    # The noise's parameters may differ when the backend takes them per replica, and every option
    # derived from them (gal_tau's weight decay depends on p) is per replica too.
    if "noise_params" in takes and free == {k for k in cfg.options if k in PER_REPLICA_CONFIG_OPTIONS}:
        noise = build_prior(cfg).noise
        if noise is not None:
            fields["prior"] = {k: v for k, v in cfg.prior.items() if k not in noise.parameters}
    # A marker, not the value: a config with the option and one without do not share a job.
    fields["options"] = {k: "<per replica>" if k in free else v for k, v in cfg.options.items()}
    return canonical_json(fields)


def trains_alone(cfg: RunConfig) -> bool:
    """Whether each split of ``cfg`` needs a job of its own: its data options set an option per
    replica that its backend takes only once for all (see the backends' ``replica_options``)."""
    return bool(replica_options_needed(cfg) - set(get_method(cfg.inference).backend_class.replica_options))


def plan_jobs(
    configs: Iterable[RunConfig],
    infos: dict[str, DataInfo] | None = None,
    max_replicas: int | None = None,
    device: str = "cpu",
    data_dir: str | None = None,
    threads: int | None = 1,
) -> list[Job]:
    """Group configs that differ only in split or seed, or in settings that the backend takes per
    replica (:func:`batch_key`), into jobs of at most ``max_replicas`` runs (``None``:
    :func:`replicas_per_job` chooses by device and training size).

    Runs are grouped only when their splits have equal train and test sizes (as
    all splits of a UCI set do), since they are stacked on one replica axis.
    Runs that need backend options per split are grouped across splits only if
    the backend takes those options per replica (:func:`trains_alone`).
    Jobs keep the order in which their first config appears.
    """
    if max_replicas is not None and (
        isinstance(max_replicas, bool) or not isinstance(max_replicas, int) or max_replicas < 1
    ):
        raise InvalidParameterError(f"max_replicas must be a positive integer or None, got {max_replicas!r}")
    groups: OrderedDict[tuple, list[RunConfig]] = OrderedDict()
    for cfg in configs:
        size = infos[cfg.dataset].sizes[cfg.split] if infos else None
        groups.setdefault((batch_key(cfg), size, cfg.split if trains_alone(cfg) else None), []).append(cfg)
    jobs = []
    for (_, size, _), members in groups.items():
        members = sorted(members, key=lambda c: (c.split, c.seed))
        per_job = replicas_per_job(max_replicas, device, _rows_per_step(members[0], size[0] if size else None))
        for i in range(0, len(members), per_job):
            jobs.append(Job(tuple(members[i:i + per_job]), device, data_dir, threads))
    return jobs
