"""The one training loop of the gradient backends (SVI and MC dropout).

A backend describes one optimisation step as a function of a mini-batch and gives
it to :func:`train`, which owns everything around it: which rows each step sees
(:class:`FullBatch`, :class:`RandomSubsets`, :class:`Shuffled`, with or without its last partial batch), the optimizer step
(with optional gradient clipping), the checks for a loss that turns NaN or
infinite (one device sync per *round*, not per step), the progress bar, timing,
and checkpoints.

Steps are grouped into rounds: an epoch for epoch-based training (MC dropout),
``report_every`` steps for step-based training (SVI). At the end of every round
the loop syncs once, raises :class:`~bnn_priors.FitDivergedError` if any step of
the round had a non-finite loss, calls the backend's ``end_round`` (where MC
dropout updates its precision and both record their loss history), and writes a
checkpoint when one is due.

Checkpoints (:class:`Checkpoint`): the whole state of a fit at a round boundary:
the step and round counters, every parameter tensor, the optimizer's state, the
states of every random generator, and the backend's own state (``state`` /
``load_state`` callables, e.g. MC dropout's precision). Written atomically (a
temporary file renamed over the old one) at most every ``every`` seconds; a
fit given a checkpoint whose file exists and whose ``key`` matches continues from
it. Because every random number comes from generators whose state is saved, a
continued fit performs exactly the computations the uninterrupted fit would have
performed after that round: the results are equal bit for bit (tested).

Threads: the loop runs with one torch thread by default (``threads=1``). The steps of
these networks are small (tens of thousands of multiply-adds per replica), too small
for intra-op parallelism to pay, and a second thread that spins while a neighbouring
process holds the other core makes a step many times slower: on this project's 2-core
machine, with another process running two torch threads, a 200-step SVI fit of a
10-50-50-1 residual net took 4.1 s with one thread and 125 s with two
(``benchmarks/thread_contention.py``). ``threads=None`` leaves torch's setting alone.

Subnormal floats: the loop runs with them flushed to zero (:func:`flush_denormals`): on some
x86 CPUs a weight shrunk into the subnormal range makes every multiply with it many times
slower.

Memory: on the CPU the loop asks the C allocator to keep freed memory for reuse
(:func:`inference.allocator.keep_freed_memory`): without it every step's activations land on
fresh pages.

Imports: torch, ``bnn_priors.errors``, ``inference.allocator``, ``inference.common``; nothing of the
backends.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import socket
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bnn_priors.errors import CheckpointInUseError, InvalidParameterError

try:  # POSIX: a checkpoint's claim is an advisory lock (flock) on a file beside it
    import fcntl
except ImportError:  # pragma: no cover - Windows: claims are not enforced
    fcntl = None
from inference.allocator import keep_freed_memory
from inference.common import check_threads, progress_bar, raise_diverged

#: A training step: ``step(X_batch, y_batch) -> (loss to minimise, loss to monitor)``. The first is
#: what ``backward`` is called on (a scalar); the second is checked for NaN/inf (any shape).
Step = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
#: Called after every round with the loop's :class:`Progress`; may raise to stop the fit. A number it
#: returns is shown as the loss in the progress bar.
EndRound = Callable[["Progress"], "float | None"]

#: Format of the checkpoint files; bump when their content changes.
CHECKPOINT_VERSION = 1


# ------------------------------------------------------------------- batches
def _take(X: torch.Tensor, y: torch.Tensor, idx: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ``idx`` (one row of indices per replica, ``(R, B)``) of ``(R, N, ...)`` data; all for ``None``."""
    if idx is None:
        return X, y
    # One index_select of the flattened rows: the rows advanced indexing X[r, idx] gives, in about
    # a quarter of its time at R = 240 (boston's shape).
    R, N = X.shape[0], X.shape[1]
    flat = (idx + torch.arange(0, R * N, N, device=idx.device)[:, None]).reshape(-1)

    def take(t: torch.Tensor) -> torch.Tensor:
        if t.stride(0) == 0:  # one data set expanded to every replica: reshaping it would copy it all
            return t[0].index_select(0, idx.reshape(-1)).view(*idx.shape, *t.shape[2:])
        return t.reshape(R * N, *t.shape[2:]).index_select(0, flat).view(*idx.shape, *t.shape[2:])

    return take(X), take(y)


class BatchSchedule(ABC):
    """Which rows of the training data each step of a round sees."""

    #: Optimisation steps in one round.
    steps_per_round: int

    @abstractmethod
    def round(self, steps: int) -> Iterator[torch.Tensor | None]:
        """The row indices of each of the next ``steps`` steps (a round, or the shorter last one),
        ``(R, B)`` per step (``None``: every row).

        Drawn lazily, step by step, so that draws from a random stream shared with
        the step function interleave with the step's own draws as they always did.
        """

    def generators(self) -> list[torch.Generator]:
        """The random generators the schedule draws from (saved in checkpoints)."""
        return []


@dataclass
class FullBatch(BatchSchedule):
    """Every step sees every row (rounds of ``steps_per_round`` steps)."""

    steps_per_round: int

    def round(self, steps):
        for _ in range(steps):
            yield None


@dataclass
class RandomSubsets(BatchSchedule):
    """Every step a fresh random subset of ``size`` rows per replica, drawn without replacement
    from ``rng`` (an object with ``batch_indices(n, size)``, e.g. a ``ReplicaRandom``)."""

    rng: Any
    n: int
    size: int
    steps_per_round: int

    def round(self, steps):
        for _ in range(steps):
            yield self.rng.batch_indices(self.n, self.size)

    def generators(self):
        return list(self.rng.generators)


@dataclass
class Shuffled(BatchSchedule):
    """Epochs: a fresh permutation of the rows per replica at the start of each round, cut into
    ``ceil(n / size)`` batches in order (the last one smaller), as Keras does; with ``drop_last``
    into ``floor(n / size)`` full batches, the rest of the permutation unused in that epoch (as the
    released training script of Nalisnick et al. 2019 does)."""

    rng: Any
    n: int
    size: int
    drop_last: bool = False
    steps_per_round: int = field(init=False)

    def __post_init__(self) -> None:
        if self.drop_last and self.size > self.n:
            raise InvalidParameterError(f"a batch of {self.size} rows out of {self.n}: dropping the last partial batch leaves none")
        self.steps_per_round = self.n // self.size if self.drop_last else math.ceil(self.n / self.size)

    def round(self, steps):
        perm = self.rng.batch_indices(self.n, self.n)
        for j in range(steps):
            yield perm[:, j * self.size:(j + 1) * self.size]

    def generators(self):
        return list(self.rng.generators)


# --------------------------------------------------------------- checkpoints
#: Attempts of :meth:`Checkpoint.claim` 50 ms apart before it reports the fit held (a reader's
#: momentary lock, :meth:`Checkpoint.holder`, is not a holder).
CLAIM_TRIES = 5
#: The errors of a non-blocking ``flock`` that mean "another holds it"; any other (``ENOSYS``,
#: ``ENOLCK``, ``EOPNOTSUPP``: a file system without locks) means the claim cannot be enforced.
_HELD = (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)


def _holder_text(fd: int) -> str:
    """What :meth:`Checkpoint.claim` wrote into an open lock file ("pid N on host"), or ``""``."""
    return os.read(fd, 256).decode("utf-8", "replace").strip()


@dataclass(frozen=True)
class Checkpoint:
    """Where and how often a fit saves its state, and the key that a saved state must carry.

    ``key`` names what is being fitted (the runner uses the job's run hashes): a file
    with another key is refused, never silently continued. ``every`` is the least
    number of seconds between two saves (0: at every round boundary). ``label``, saved
    with the state, says in words what is being fitted (the runner's job description;
    ``bnn-priors jobs`` shows it).
    """

    path: str | Path
    key: str
    every: float = 300.0
    label: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.every, (int, float)) or isinstance(self.every, bool) or not self.every >= 0:
            raise InvalidParameterError(f"checkpoint interval must be a non-negative number of seconds, got {self.every!r}")

    def load(self) -> dict | None:
        """The saved state, or ``None`` when there is none; a file of another fit is an error."""
        path = Path(self.path)
        if not path.exists():
            return None
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:  # noqa: BLE001 - a truncated or foreign file
            raise InvalidParameterError(f"checkpoint {path} cannot be read ({exc}); delete it to start afresh") from None
        if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION:
            raise InvalidParameterError(f"checkpoint {path} is not a checkpoint of this version; delete it to start afresh")
        if state.get("key") != self.key:
            raise InvalidParameterError(
                f"checkpoint {path} belongs to another fit (key {state.get('key')!r}, expected {self.key!r}); "
                "delete it or use another path"
            )
        return state

    def save(self, state: dict) -> None:
        """Write ``state`` atomically: a reader sees the old file or the new one, never half of one."""
        path = Path(self.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        torch.save({"version": CHECKPOINT_VERSION, "key": self.key, "label": self.label, **state}, tmp)
        os.replace(tmp, path)

    @property
    def lock_path(self) -> Path:
        """The file whose lock :meth:`claim` holds: ``<path>.lock``, there only while a process holds it."""
        path = Path(self.path)
        return path.with_name(f"{path.name}.lock")

    @contextlib.contextmanager
    def claim(self) -> Iterator[None]:
        """Hold this fit for the calling process while the ``with`` block runs: a second process (or a
        second claim in this one) that asks meanwhile gets :class:`~bnn_priors.CheckpointInUseError`
        naming the holder, at once, instead of training the same fit beside it from the same file.

        The claim is an advisory ``flock`` on :attr:`lock_path`, which holds the holder's pid and host
        and is removed on release; the kernel releases it when its process dies, however it dies, so
        a killed job's checkpoint is free to continue. Not enforced where ``fcntl`` is missing
        (Windows), nor on a file system without ``flock`` (it warns there and goes on unclaimed).
        """
        if fcntl is None:
            yield
            return
        lock = self.lock_path
        tries = 0
        while True:
            try:
                lock.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
            except FileNotFoundError:  # the folder went meanwhile (a finishing suite removes it when empty)
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = _holder_text(fd)
                os.close(fd)
                if exc.errno not in _HELD:  # no flock on this file system: go on unclaimed, and say so
                    warnings.warn(f"cannot claim checkpoint {self.path} ({exc.strerror}): nothing stops another "
                                  "process from training the same fit beside this one", RuntimeWarning, stacklevel=3)
                    yield
                    return
                tries += 1
                if tries < CLAIM_TRIES:  # perhaps only a reader (:meth:`holder`) for an instant
                    time.sleep(0.05)
                    continue
                raise CheckpointInUseError(
                    f"checkpoint {self.path} is held by another process ({holder or 'unknown'}), which is "
                    "training this fit now; wait for it or stop it", holder) from None
            try:  # the last holder removes the file on release: a lock on a removed file holds nothing
                same = os.fstat(fd).st_ino == os.stat(lock).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode())
            yield
        finally:
            lock.unlink(missing_ok=True)  # while still locked: no one can take the file being removed
            os.close(fd)

    def holder(self) -> str | None:
        """Who holds this fit now (pid and host, as :meth:`claim` wrote them), or ``None`` when no
        live process does (or the file system cannot tell)."""
        if fcntl is None:
            return None
        try:
            fd = os.open(self.lock_path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in _HELD:
                    return None
                return _holder_text(fd) or "unknown"
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    def remove_unless_held(self) -> bool:
        """:meth:`remove` under a claim, so that a file another process continues is left to it;
        whether it was removed. (Not for a process that holds the claim itself.)"""
        try:
            with self.claim():
                self.remove()
            return True
        except CheckpointInUseError:
            return False

    def remove(self) -> None:
        """Delete the file, and the partial files of saves that a kill interrupted (a process killed
        while writing leaves its ``.<name>.<pid>.tmp`` behind)."""
        path = Path(self.path)
        path.unlink(missing_ok=True)
        for partial in path.parent.glob(f".{path.name}.*.tmp"):
            partial.unlink(missing_ok=True)


# ---------------------------------------------------------------------- loop

#: Environment variable that turns off :func:`flush_denormals` (``0``): fits then compute with
#: subnormal floats as IEEE 754 defines them, at their cost.
FLUSH_DENORMALS_ENV = "BNN_PRIORS_FLUSH_DENORMALS"


def denormals_flushed() -> bool:
    """Whether the calling thread's CPU arithmetic treats subnormal floats as zero (x86's FTZ/DAZ
    flags, as :func:`torch.set_flush_denormal` sets them): the smallest positive float32 times 2
    is then 0."""
    tiny = torch.ones(1, dtype=torch.int32).view(torch.float32)  # 1.4e-45, the smallest subnormal
    return (tiny * 2).item() == 0.0


@contextlib.contextmanager
def flush_denormals(on: bool | None = None):
    """Run a block with subnormal floats (magnitude below 2**-126, about 1.2e-38 in float32) read
    and written as zero on the CPU, restoring the thread's setting after.

    A prior that shrinks weights drives some towards zero without end (ARD-ADD's inverse-gamma
    scales do on power), and once they are subnormal an x86 CPU may take a slow microcode path
    for every multiply with them: on an Intel Xeon (AVX512) a (20, 320, 50) x (20, 50, 50)
    ``bmm`` took 158 ms with subnormal weights against 0.62 ms with them flushed, and the
    released network's SVI step ran 2.7x slower than on an AMD EPYC, where the same numbers
    cost almost nothing (``benchmarks/denormal_cost.py``). Flushing changes a result only where
    a value would have been subnormal, a magnitude no float32 computation of this project
    relies on; the change of arithmetic is the same on every x86 CPU.

    ``on``: ``None`` (default) flushes unless the environment variable
    :data:`FLUSH_DENORMALS_ENV` is ``0``. The flags belong to each thread: torch's own threads
    started inside the block inherit them, threads started before keep theirs (with the
    training loop's one thread, the calling thread does all the work). Where the CPU has no
    such flags (:func:`torch.set_flush_denormal` returns False) it does nothing.
    """
    if on is None:
        on = os.environ.get(FLUSH_DENORMALS_ENV, "1") != "0"
    before = denormals_flushed()
    if on == before or not torch.set_flush_denormal(on):
        yield
        return
    try:
        yield
    finally:
        torch.set_flush_denormal(before)


@contextlib.contextmanager
def torch_threads(threads: int | None):
    """Run a block with ``threads`` torch threads, restoring the setting after (``None``: unchanged)."""
    if check_threads(threads) is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def adam(params: Sequence[torch.Tensor], lr: float, fused: bool = False) -> torch.optim.Adam:
    """The gradient backends' optimizer: Adam with its multi-tensor (``foreach``) update.

    On the CPU torch's default is the per-tensor loop, a few Python-level calls per
    parameter tensor and step; the ``foreach`` update does the same arithmetic element
    by element (bitwise equal results, tested) in one call per operation. On CUDA it is
    torch's default already. ``fused=True``: torch's fused kernel, one pass over each
    parameter; it rounds differently, so it is only used where results may move at the
    rounding level (MC dropout's ``fast=True``).
    """
    if fused:
        return torch.optim.Adam(params, lr=lr, fused=True)
    return torch.optim.Adam(params, lr=lr, foreach=True)


@dataclass
class Progress:
    """Where the loop is: steps and rounds done, and the monitored loss of the last step."""

    step: int = 0
    round: int = 0
    last_loss: torch.Tensor | None = None
    resumed_from: int | None = None  # the step a checkpoint continued from
    seconds_before: float = 0.0  # training seconds of the segments before that checkpoint


@dataclass
class TrainingResult:
    """Steps and rounds done, the seconds of training, the step a checkpoint continued from.

    ``seconds`` counts every segment of a continued fit: this call's training plus
    ``seconds_before``, the training seconds of the earlier segments up to the checkpoint
    this call continued from (0 for a fit that did not continue one, and for checkpoint
    files written before the count was kept)."""

    steps: int
    rounds: int
    seconds: float
    resumed_from: int | None
    seconds_before: float = 0.0
    denormals_flushed: bool = False

    def resume_info(self) -> dict:
        """The ``info`` entries of a fit continued from a checkpoint (none for a fresh fit):
        ``resumed_from_step`` and ``seconds_before_resume``."""
        if self.resumed_from is None:
            return {}
        return {"resumed_from_step": self.resumed_from, "seconds_before_resume": self.seconds_before}

    def arithmetic_info(self) -> dict:
        """The ``info`` entry saying how the steps treated subnormal floats (:func:`flush_denormals`)."""
        return {"denormals_flushed": self.denormals_flushed}

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.seconds if self.seconds > 0 else math.inf


def train(
    step: Step,
    X: torch.Tensor,
    y: torch.Tensor,
    params: Sequence[torch.Tensor],
    optimizer: torch.optim.Optimizer,
    schedule: BatchSchedule,
    steps: int,
    *,
    backend: str,
    hint: str,
    end_round: EndRound | None = None,
    clip_norm: float | None = None,
    generators: Sequence[torch.Generator] = (),
    state: Callable[[], dict] | None = None,
    load_state: Callable[[dict], None] | None = None,
    checkpoint: Checkpoint | None = None,
    progress: bool = True,
    desc: str | None = None,
    threads: int | None = 1,
    independent_replicas: bool = False,
) -> TrainingResult:
    """Run ``steps`` optimisation steps of ``step``, in rounds of ``schedule.steps_per_round``.

    ``params`` are the tensors the optimizer updates; ``generators`` every random
    generator the fit draws from besides the schedule's; ``state`` / ``load_state``
    save and restore the backend's own state for checkpoints. A step whose
    monitored loss is not finite stops the fit at the end of its round with
    :class:`~bnn_priors.FitDivergedError` naming the step and ``hint`` and, with
    ``independent_replicas`` (the backend's replicas share nothing, so one replica's NaN
    cannot reach another's numbers), no ``clip_norm`` (one norm over all replicas) and a
    step that monitors one loss per replica (shape ``(R,)``), the replicas whose loss was not
    finite (``FitDivergedError.replicas``). The steps run
    with ``threads`` torch threads (see the module docstring).
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise InvalidParameterError(f"steps must be a positive integer, got {steps!r}")
    params = list(params)
    if X.device.type == "cpu":
        keep_freed_memory()
    gens = list(generators)
    gens += [g for g in schedule.generators() if all(g is not h for h in gens)]
    where = Progress()
    if checkpoint is not None:
        saved = checkpoint.load()
        if saved is not None:
            _restore(saved, params, optimizer, gens, load_state)
            where.step, where.round, where.resumed_from = saved["step"], saved["round"], saved["step"]
            where.seconds_before = float(saved.get("seconds", 0.0))
    first_bad = torch.tensor(-1, device=X.device)
    # A step that monitors one loss per replica, shape (R,), of independent replicas tells which diverged.
    per_replica = independent_replicas and clip_norm is None
    bad_rows = torch.zeros(X.shape[0], dtype=torch.bool, device=X.device)
    bar = progress_bar(steps, desc or backend, progress)
    bar.update(where.step)
    last_save = time.monotonic()
    start = time.perf_counter()
    try:
        with flush_denormals(), torch_threads(threads):
            flushed = denormals_flushed()
            while where.step < steps:
                for idx in schedule.round(min(schedule.steps_per_round, steps - where.step)):
                    Xb, yb = _take(X, y, idx)
                    loss, monitor = step(Xb, yb)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    if clip_norm is not None:
                        torch.nn.utils.clip_grad_norm_(params, clip_norm)
                    optimizer.step()
                    monitor = monitor.detach()
                    finite = torch.isfinite(monitor)
                    first_bad = torch.where((first_bad < 0) & ~finite.all(), where.step, first_bad)
                    if per_replica and monitor.shape == bad_rows.shape:
                        bad_rows |= ~finite
                    where.last_loss = monitor
                    where.step += 1
                where.round += 1
                bad = int(first_bad)  # the round's one device sync
                if bad >= 0:
                    named = per_replica and monitor.shape == bad_rows.shape
                    rows = bad_rows.nonzero().flatten().tolist() if named else None
                    raise_diverged(backend, bad, "loss", hint, rows or None)
                shown = end_round(where) if end_round is not None else None
                if shown is not None:
                    bar.set_postfix(loss=f"{shown:.4g}")
                bar.update(where.step - bar.n)
                due = checkpoint is not None and time.monotonic() - last_save >= checkpoint.every
                if due and where.step < steps:
                    _save(checkpoint, where, params, optimizer, gens, state,
                          where.seconds_before + time.perf_counter() - start, steps)
                    last_save = time.monotonic()
    finally:
        bar.close()
    seconds = where.seconds_before + time.perf_counter() - start
    return TrainingResult(where.step, where.round, seconds, where.resumed_from, where.seconds_before, flushed)


def _save(checkpoint: Checkpoint, where: Progress, params, optimizer, generators, state, seconds: float,
          steps: int) -> None:
    """Write the fit's state at a round boundary (see :func:`_restore`), with the training seconds so far
    and the fit's number of steps (for a reader of its progress)."""
    checkpoint.save({
        "step": where.step,
        "total_steps": steps,
        "round": where.round,
        "seconds": seconds,
        "params": [p.detach().cpu().clone() for p in params],
        "optimizer": optimizer.state_dict(),
        "generators": [g.get_state() for g in generators],
        "generator_devices": [g.device.type for g in generators],
        "backend": state() if state is not None else {},
    })


def _restore(saved: dict, params, optimizer, generators, load_state) -> None:
    """Put a checkpoint's state back into the fit's tensors, optimizer, generators and backend."""
    if len(saved["params"]) != len(params) or len(saved["generators"]) != len(generators):
        raise InvalidParameterError("the checkpoint does not match this fit (another model or backend); delete it")
    ours = [g.device.type for g in generators]
    if saved.get("generator_devices", ours) != ours:  # files of before this check carry none
        raise InvalidParameterError(
            f"the checkpoint was saved by a fit on {saved['generator_devices'][0]}, and this fit runs on {ours[0]}: "
            "random streams do not carry over between devices; continue it there, or delete it"
        )
    with torch.no_grad():
        for p, value in zip(params, saved["params"]):
            if p.shape != value.shape:
                raise InvalidParameterError(
                    f"the checkpoint holds a parameter of shape {tuple(value.shape)} where the fit has "
                    f"{tuple(p.shape)}; delete it"
                )
            p.copy_(value.to(p.device))
    optimizer.load_state_dict(saved["optimizer"])
    for g, s in zip(generators, saved["generators"]):
        g.set_state(s)
    if load_state is not None:
        load_state(saved["backend"])
