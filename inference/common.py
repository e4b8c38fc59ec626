"""What the inference backends share: the backend interface, the posterior, seeding, progress.

No backend imports another; each imports this module.
"""

from __future__ import annotations

import math
import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pyro
import torch
from tqdm.auto import tqdm

from bnn_priors.checks import (  # noqa: F401 - re-exported
    check_bool,
    check_nonnegative_float,
    check_nonnegative_int,
    check_positive_float,
    check_positive_int,
)
from bnn_priors.errors import (
    DataError,
    FitDivergedError,
    InvalidParameterError,
    UnsupportedCombinationError,
)
from models.networks import BayesianNetwork

#: ``sampler(X, num_samples, random) -> (f, precision)`` with ``X`` of shape ``(R, N, D)``,
#: ``f`` of shape ``(S, R, N, out)`` and ``precision`` of shape ``(S, R)``.
Sampler = Callable[[torch.Tensor, int, "ReplicaRandom"], tuple[torch.Tensor, torch.Tensor]]


def check_seed(seed) -> int:
    """A seed as an int; a clear error for anything but a non-negative integer."""
    return check_nonnegative_int("seed", seed)


def check_seeds(seed) -> int | list[int]:
    """A backend's ``seed``: one non-negative integer, or a list or tuple of them (one per replica).

    Anything else (a string, a float, ``None``, a bool, a list holding one of these) is one
    :class:`InvalidParameterError` naming the value as given, not the element that failed:
    a string is a sequence too, and its first character is not what the user typed.
    """
    many = isinstance(seed, Sequence) and not isinstance(seed, (str, bytes))
    try:
        return [check_seed(s) for s in seed] if many else check_seed(seed)
    except InvalidParameterError:
        raise InvalidParameterError(
            f"seed must be a non-negative integer or a list of them (one per replica), got {seed!r}"
        ) from None


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy, torch and Pyro: the same seed on CPU gives the same numbers."""
    seed = check_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    pyro.set_rng_seed(seed)


def resolve_device(device: str | torch.device) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InvalidParameterError(f"device must be 'cpu' or 'cuda' (or 'cuda:N'), got {device!r}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidParameterError("device 'cuda' was asked for but no CUDA device is available; use device='cpu'")
    if dev.type not in ("cpu", "cuda"):
        raise InvalidParameterError(f"device must be 'cpu' or 'cuda', got {device!r}")
    return dev


def make_generator(device: torch.device, seed: int) -> torch.Generator:
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    return gen


def replica_seeds(seed: int | Sequence[int], replicas: int) -> list[int]:
    """One seed per replica: a sequence is taken as given, an int ``s`` gives ``s, s+1, ...``."""
    seeds = check_seeds(seed)
    if isinstance(seeds, int):
        seeds = [seeds + r for r in range(replicas)]
    if len(seeds) != replicas:
        raise InvalidParameterError(f"got {len(seeds)} seeds for a model with {replicas} replicas")
    return seeds


class ReplicaRandom:
    """Independent random streams, one per replica.

    Replica ``r`` draws from its own generator seeded with ``seeds[r]``, so a replica
    trained inside a batch of ``R`` sees exactly the random numbers it would see
    trained alone with the same seed: batched and one-at-a-time training agree. It is
    the :class:`bnn_priors.random_source.RandomSource` the noise models draw from.
    """

    def __init__(self, seeds: Sequence[int], device: torch.device):
        self.seeds = list(seeds)
        self.generators = [make_generator(device, s) for s in self.seeds]
        self.device = device

    @property
    def replicas(self) -> int:
        return len(self.generators)

    def subset(self, streams: Sequence[int]) -> ReplicaRandom:
        """The replicas ``streams`` only, as a source of their own that shares their generators:
        its draws are the numbers those replicas draw here, and they advance here too."""
        sub = object.__new__(ReplicaRandom)
        sub.seeds = [self.seeds[r] for r in streams]
        sub.generators = [self.generators[r] for r in streams]
        sub.device = self.device
        return sub

    def _draws(self, fill, shape: Sequence[int], dtype: torch.dtype, axis: int) -> torch.Tensor:
        """Every replica's draws ``fill(shape, generator, out)`` in one tensor, the replica axis at ``axis``.

        When a replica's slice of the result is contiguous (no axis of length > 1 before
        the replica axis), each generator fills its slice in place: a generator fills a
        contiguous ``out`` with exactly the numbers of a fresh tensor (tested), and the
        copy that stacking the draws would make is saved (one pass over all the noise of
        a step). Otherwise the draws are stacked.
        """
        shape = tuple(shape)
        if len(self.generators) == 1:
            return fill(shape, self.generators[0], None).unsqueeze(axis)
        if all(n == 1 for n in shape[:axis]):
            out = torch.empty((*shape[:axis], len(self.generators), *shape[axis:]), dtype=dtype, device=self.device)
            for g, view in zip(self.generators, out.unbind(axis)):  # one call makes every replica's view
                fill(shape, g, view)
            return out
        return torch.stack([fill(shape, g, None) for g in self.generators], axis)

    def rand_streams(self, streams: Sequence[int], shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
        """Uniform(0, 1) draws of ``shape`` from the replicas ``streams`` only: ``(len(streams), *shape)``."""
        out = torch.empty((len(streams), *shape), dtype=dtype, device=self.device)
        for r, view in zip(streams, out.unbind(0)):
            view.uniform_(generator=self.generators[r])
        return out

    def randn(self, shape: Sequence[int], dtype: torch.dtype, axis: int = 0) -> torch.Tensor:
        """Standard normals of ``shape`` per replica, the replica axis inserted at ``axis``."""
        return self._draws(
            lambda s, g, out: torch.randn(s, generator=g, device=self.device, dtype=dtype) if out is None
            else out.normal_(generator=g),  # in place: the numbers of torch.randn(out=out), without its resize
            shape, dtype, axis,
        )

    def rand(self, shape: Sequence[int], dtype: torch.dtype, axis: int = 0) -> torch.Tensor:
        """Uniform(0, 1) draws of ``shape`` per replica, the replica axis inserted at ``axis``."""
        return self._draws(
            lambda s, g, out: torch.rand(s, generator=g, device=self.device, dtype=dtype) if out is None
            else out.uniform_(generator=g),  # in place: the numbers of torch.rand(out=out), without its resize
            shape, dtype, axis,
        )

    def bits(self, shape: Sequence[int], axis: int = 0) -> torch.Tensor:
        """Random integers of ``shape`` per replica, the replica axis inserted at ``axis``: int64 in
        ``[0, 2^63)``, 63 independent fair bits each (``Tensor.random_``: one 64-bit draw of the
        generator per element, where a uniform float takes one 32-bit draw for one number)."""
        return self._draws(
            lambda s, g, out: torch.empty(s, dtype=torch.int64, device=self.device).random_(generator=g)
            if out is None else out.random_(generator=g),
            shape, torch.int64, axis,
        )

    def standard_gamma(self, shape: Sequence[int], concentration: float, dtype: torch.dtype, axis: int = 0) -> torch.Tensor:
        """Gamma(concentration, rate 1) draws of ``shape`` per replica, the replica axis inserted at ``axis``."""
        alpha = torch.full(tuple(shape), concentration, dtype=dtype, device=self.device)
        draws = [torch._standard_gamma(alpha, generator=g) for g in self.generators]
        return draws[0].unsqueeze(axis) if len(draws) == 1 else torch.stack(draws, axis)

    def batch_indices(self, n: int, size: int) -> torch.Tensor:
        """A random subset of ``size`` of ``range(n)`` per replica: shape ``(R, size)``."""
        return torch.stack([torch.randperm(n, generator=g, device=self.device)[:size] for g in self.generators])


def progress_bar(total: int, desc: str, enabled: bool):
    return tqdm(total=total, desc=desc, disable=not enabled, leave=False, dynamic_ncols=True)


def raise_diverged(backend: str, step: int, what: str, hint: str, replicas: Sequence[int] | None = None) -> None:
    """Raise :class:`FitDivergedError`; ``replicas``: the replicas whose fit diverged, where known."""
    where = ""
    if replicas is not None:
        replicas = tuple(int(r) for r in replicas)
        where = f" (replica{'s' if len(replicas) > 1 else ''} {', '.join(map(str, replicas))})"
    raise FitDivergedError(f"{backend}: the {what} became NaN or infinite at step {step}{where}; {hint}", replicas)


@dataclass
class Prediction:
    """Predictive mean and standard deviation of y, and the function samples.

    Shapes: ``mean``/``std`` ``(N,)``, ``samples`` ``(S, N)`` for a single-output,
    single-replica model; a replica axis ``R`` (after ``S``) and an output axis
    appear when the model has them.
    """

    mean: np.ndarray
    std: np.ndarray
    samples: np.ndarray


class Posterior:
    """The result of a fit: predictions and metrics, the same for every backend."""

    def __init__(self, model: BayesianNetwork, backend: str, sampler: Sampler, seeds: Sequence[int], info: dict | None = None,
                 weight_means: Callable[[], dict[str, torch.Tensor]] | None = None):
        self.model = model
        self.backend = backend
        self._sampler = sampler
        self.seeds = list(seeds)
        self.info = dict(info or {})
        self._weight_means = weight_means

    def __repr__(self) -> str:
        return f"Posterior(backend={self.backend!r}, model={type(self.model).__name__}, replicas={self.model.replicas})"

    def _squeeze(self, t: torch.Tensor, sample_axis: bool) -> np.ndarray:
        """Drop the replica axis for R = 1 and the output axis for out = 1."""
        a = t.detach().cpu().numpy()
        if self.model.out_features == 1:
            a = a[..., 0]
        if self.model.replicas == 1:
            a = np.take(a, 0, axis=1 if sample_axis else 0)
        return a

    def sample_functions(self, X, num_samples: int = 100, seed: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw samples: ``f`` of shape ``(S, R, N, out)`` and the precision ``(S, R)``."""
        num_samples = check_positive_int("num_samples", num_samples)
        X = self.model.check_inputs(X)
        seeds = self.sampling_seeds(seed)
        with torch.no_grad():
            f, precision = self._sampler(X, num_samples, ReplicaRandom(seeds, X.device))
        return f, precision.expand(f.shape[:2])

    def predict(self, X, num_samples: int = 100, seed: int | None = None) -> Prediction:
        """Predictive mean and standard deviation of ``y`` (function spread plus noise) and the samples."""
        f, precision = self.sample_functions(X, num_samples, seed)
        mean = f.mean(0)
        var = f.var(0, unbiased=False) + (1.0 / precision).mean(0)[:, None, None]
        return Prediction(self._squeeze(mean, False), self._squeeze(var.sqrt(), False), self._squeeze(f, True))

    #: Nominal levels of the central predictive intervals whose coverage :meth:`evaluation_sums` counts.
    COVERAGE_LEVELS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)

    def evaluation_sums(self, X, y, num_samples: int = 100, seed: int | None = None) -> dict:
        """The per-replica sums behind :meth:`evaluate`, in standardized units.

        ``squared_error``: the squared error of the predictive mean ``mean_s f_s(x)``,
        summed over points and outputs; ``absolute_error``: ``mean_s |y - f_s(x)|`` (the
        error of each draw, not of the mean) summed over points and outputs;
        ``log_likelihood``: ``log mean_s N(y | f_s(x), 1/tau_s)`` summed over points
        (tensors of shape ``(R,)``); ``coverage``: per level ``a`` of
        :attr:`COVERAGE_LEVELS`, the number of targets inside the central ``a`` interval
        of the predictive distribution (an integer tensor ``(R, levels)``); ``count``:
        the number of points.

        The coverage is exact for the mixture of the draws: a target is inside the
        central ``a`` interval when its predictive CDF ``F(y) = mean_s P(y_s <= y)``
        (the likelihood's CDF under each draw; ``mean_s Phi((y - f_s(x)) sqrt(tau_s))``
        for Gaussian noise) has ``|F(y) - 1/2| <= a/2``, so no quantile is searched for.
        Every backend draws its function samples independently of the points, so the
        sums of disjoint sets of points (with the same ``seed``) add up to those of their union.
        """
        f, precision = self.sample_functions(X, num_samples, seed)
        Xt = self.model.check_inputs(X)
        yt = self.model.check_targets(y, Xt)
        squared_error = ((f.mean(0) - yt) ** 2).sum((-2, -1))
        absolute_error = (f - yt).abs().mean(0).sum((-2, -1))
        predictive = self.model.likelihood.distribution(f, precision)
        dens = predictive.log_prob(yt).sum(-1)  # (S, R, N)
        log_likelihood = (torch.logsumexp(dens, 0) - math.log(f.shape[0])).sum(-1)
        cdf = predictive.cdf(yt).to(torch.float64).mean(0)  # (R, N, out)
        half_widths = torch.tensor(self.COVERAGE_LEVELS, dtype=torch.float64, device=cdf.device) / 2
        coverage = ((cdf - 0.5).abs()[..., None] <= half_widths).sum((-3, -2))  # (R, levels)
        return {"squared_error": squared_error, "absolute_error": absolute_error, "log_likelihood": log_likelihood,
                "coverage": coverage, "count": int(yt.shape[-2])}

    def metrics_from_sums(self, sums: dict, y_scale=1.0) -> dict:
        """:meth:`evaluate`'s metrics from :meth:`evaluation_sums`' sums (tensors over replicas).

        ``y_scale`` (a number, or one per replica) is the training standard deviation used
        to standardize ``y``: RMSE and sample-MAE scale by it, the log-likelihood shifts by
        ``-log y_scale`` per output; the coverage is a fraction of the targets, per level.
        """
        squared_error, n, out_features = sums["squared_error"], sums["count"], self.model.out_features
        scale = torch.as_tensor(np.asarray(y_scale, dtype=np.float64), dtype=squared_error.dtype,
                                device=squared_error.device).reshape(-1)
        if scale.numel() not in (1, self.model.replicas) or not bool((scale > 0).all()):
            raise DataError(f"y_scale must be positive, a number or one per replica ({self.model.replicas}), got {y_scale!r}")
        rmse = (squared_error / (n * out_features)).sqrt() * scale
        ll = sums["log_likelihood"] / n - out_features * scale.log()
        sample_mae = sums["absolute_error"] / (n * out_features) * scale
        coverage = sums["coverage"].to(torch.float64) / (n * out_features)
        return {"rmse": rmse, "log_likelihood": ll, "sample_mae": sample_mae, "coverage": coverage}

    def evaluate(self, X, y, num_samples: int = 100, y_scale=1.0, seed: int | None = None) -> dict:
        """Test RMSE, log-likelihood, sample-MAE and interval coverage, in original units when given the target's scale.

        The RMSE is that of the predictive mean. The log-likelihood is, per test point,
        ``log mean_s N(y | f_s(x), 1/tau_s)``, averaged over test points (Hernández-Lobato
        & Adams 2015; Gal & Ghahramani 2016). The sample-MAE is ``|y - f_s(x)|`` averaged
        over points and draws (the figure Nalisnick et al.'s released code prints as
        "RMSE"; for a point estimate it is the MAE). The coverage is, per level of
        :attr:`COVERAGE_LEVELS`, the fraction of targets inside the central predictive
        interval of that level. ``y_scale`` (a number, or one per replica) is the training
        standard deviation used to standardize ``y``. All come from :meth:`evaluation_sums`
        (:meth:`metrics_from_sums`). Returns floats (the coverage an array over levels), or
        arrays with a leading replica axis.
        """
        metrics = self.metrics_from_sums(self.evaluation_sums(X, y, num_samples, seed), y_scale)
        if self.model.replicas == 1:
            return {k: (v[0].detach().cpu().numpy() if v.dim() > 1 else float(v.reshape(-1)[0]))
                    for k, v in metrics.items()}
        return {k: v.detach().cpu().numpy() for k, v in metrics.items()}

    def weight_means(self) -> dict[str, np.ndarray]:
        """Posterior means of the weight matrices, ``{layer: (in, out)}`` (``(R, in, out)`` with replicas)."""
        if self._weight_means is None:
            raise NotImplementedError(f"the {self.backend} posterior does not expose weight means")
        means = self._weight_means()
        return {
            k: (v.detach().cpu().numpy()[0] if self.model.replicas == 1 else v.detach().cpu().numpy())
            for k, v in means.items()
        }

    def sampling_seeds(self, seed: int | Sequence[int] | None = None) -> list[int]:
        """The replica seeds of a fresh random stream: ``seed`` as :func:`replica_seeds` reads it,
        or for ``None`` the posterior's default (the fit's seeds offset by 1_000_003)."""
        return [s + 1_000_003 for s in self.seeds] if seed is None else replica_seeds(seed, self.model.replicas)

    def to_arviz(self, X=None, y=None, num_samples: int = 500, replica: int | None = None, seed: int | None = None):
        """The posterior as an :class:`arviz.InferenceData`, the same groups for every backend.

        ``posterior`` holds the parameter draws by site name (``layer0.weight``, ...);
        with ``X``, ``posterior_predictive`` holds ``y`` drawn at ``X`` under every draw;
        with ``X`` and ``y``, ``log_likelihood`` holds the pointwise log density of ``y``
        under every draw (the terms :meth:`evaluate` averages) and ``observed_data`` holds
        ``y``, so ``az.loo``, ``az.compare`` and ``az.plot_ppc`` work on it; the backend's
        ``sample_stats`` where it has some. The attrs' ``draws`` says what a draw is:
        SVI draws ``num_samples`` weights from ``q``; MC dropout makes ``num_samples``
        stochastic passes, each drawn as its effective (noise-multiplied) weights; a MAP
        fit (``guide="map"``) is ONE point, so all its ``num_samples`` draws are that
        point (``az.loo`` then gives the plug-in log-likelihood and flags every Pareto
        k; ArviZ cannot compute it from a single draw); NUTS gives its stored draws,
        by chain (``num_samples`` does not apply). See :mod:`inference.arviz_data`.

        ``replica``: with replicas (``R > 1``) the fits are independent and converted one
        at a time (``replica=r``); ``None`` keeps a ``replica`` dimension in the
        parameters, and is refused with data. ``seed`` (default: the stream of
        :meth:`sample_functions`) seeds the draws and the predictive noise; a fresh
        stream, so converting changes nothing that :meth:`predict` draws.
        """
        from inference.arviz_data import to_inference_data

        return to_inference_data(self, X, y, num_samples=num_samples, replica=replica, seed=seed)

    def _arviz_draws(self, num_samples: int, rng: ReplicaRandom) -> dict[str, torch.Tensor]:
        """Backend hook of :meth:`to_arviz`: parameter draws ``{site: (chains, draws, R, *shape)}``.

        Must hold ``<layer>.weight`` and ``<layer>.bias`` for every layer (the network of
        each draw) and ``likelihood.precision`` (the draw's noise precision, even when
        fixed); scale sites where the backend has them. Draws from ``rng`` only.
        """
        raise NotImplementedError(f"the {self.backend} posterior cannot give parameter draws")

    def _arviz_sample_stats(self) -> dict[str, np.ndarray] | None:
        """Backend hook of :meth:`to_arviz`: sampler statistics ``{name: (chains, draws, R)}``, if any."""
        return None

    def _arviz_attrs(self) -> dict[str, str]:
        """Backend hook of :meth:`to_arviz`: attributes of every group, at least ``draws`` (what a draw is)."""
        return {}

    def __getstate__(self) -> dict:
        """Pickle the weight means as values: the function that gives them may be a local one."""
        state = dict(self.__dict__)
        if state.get("_weight_means") is not None:
            state["_weight_means"] = _FixedValues({k: v.detach() for k, v in self._weight_means().items()})
        return state


class _FixedValues:
    """A picklable function returning the values it was given."""

    def __init__(self, values):
        self.values = values

    def __call__(self):
        return self.values


def check_threads(threads) -> int | None:
    """A torch thread count: a positive integer, or ``None`` for torch's own setting."""
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise InvalidParameterError(f"threads must be a positive integer or None, got {threads!r}")
    return threads


class InferenceBackend(ABC):
    """Interface of every backend: ``fit(model, X, y) -> Posterior``.

    A backend says up front what it supports (:meth:`check_model`) and refuses the
    rest before doing any work, naming what to use instead.
    """

    name: str
    #: Whether the backend trains in :func:`inference.training.train`: then it takes
    #: ``fit(model, X, y, checkpoint=...)``.
    training_loop: bool = False
    #: Whether ``fit(model, X, y, checkpoint=...)`` saves its state as it goes and continues from a
    #: saved one (:class:`inference.training.Checkpoint`): a killed job of the runner then resumes.
    checkpoints: bool = False
    #: Whether ``fit(model, X, y, X_test=...)`` takes the test inputs (never their targets) to
    #: diagnose the fit's predictions there (NUTS: R-hat and ESS of ``f(x)``).
    diagnoses_test_inputs: bool = False

    def __init__(self, device: str | torch.device = "cpu", seed: int | Sequence[int] = 0, progress: bool = True,
                 threads: int | None = 1):
        self.device = resolve_device(device)
        check_seeds(seed)
        self.seed = seed
        self.progress = bool(progress)
        #: torch threads of a fit (``None``: torch's own setting); see :mod:`inference.training`
        self.threads = check_threads(threads)

    @abstractmethod
    def check_model(self, model: BayesianNetwork) -> None:
        """Raise :class:`UnsupportedCombinationError` if this backend cannot fit ``model``."""

    def supports(self, model: BayesianNetwork) -> bool:
        try:
            self.check_model(model)
        except UnsupportedCombinationError:
            return False
        return True

    def prepare(self, model, X, y) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """Check the combination and the data, move the model, seed; returns ``X, y`` and the replica seeds.

        ``seed`` may be one int (replica ``r`` gets ``seed + r``) or one seed per replica.
        """
        if not isinstance(model, BayesianNetwork):
            raise InvalidParameterError(f"model must be a models.BayesianNetwork, got {type(model).__name__}")
        self.check_model(model)
        model.to(self.device)
        X = model.check_inputs(X)
        y = model.check_targets(y, X)
        seeds = replica_seeds(self.seed, model.replicas)
        seed_everything(seeds[0])
        return X, y, seeds

    @abstractmethod
    def fit(self, model: BayesianNetwork, X, y) -> Posterior:
        """Fit ``model`` to ``(X, y)`` and return its :class:`Posterior`."""


def unsupported(backend: str, what: str, why: str, instead: str) -> UnsupportedCombinationError:
    return UnsupportedCombinationError(f"{backend} cannot fit {what}: {why}. Use {instead} instead.")

