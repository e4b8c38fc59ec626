"""Hamiltonian Monte Carlo with the No-U-Turn sampler: the NUTS backend and its posterior.

Two engines sample the same posterior:

``batched`` (default)
    the project's own iterative NUTS (:mod:`inference.hmc`) on the network's log
    density written directly (:mod:`inference.network_density`): every chain of every
    replica advances in lockstep as one batched computation, each with its own tree,
    step size and diagonal mass matrix (Stan's windowed adaptation), and its own
    random stream, so a replica fitted in a batch gives what it gives alone (to the
    last bit where the CPU's kernels round alike: see :mod:`inference.hmc`). Chains
    start from a short MAP fit from a prior draw (``init="map"``, jittered) or from
    the prior draw itself (``init="prior"``).
``pyro``
    Pyro's ``NUTS`` and ``MCMC`` on the Pyro model ``model(X, y)``, replica after
    replica and chain after chain, started uniformly in (-2, 2) (Pyro's default).

Either engine makes one choice about the model: the parametrization of the weights.

``centered``
    ``w ~ N(0, sigma0^2 prod_k lambda_k^2)`` as the model declares it. Under a
    heavy-tailed scale prior this is Neal's funnel: where the scales are small
    the weights must be tiny, where they are large the weights spread out, and no
    single step size suits both.
``non-centered``
    ``w = sigma0 prod_k lambda_k * z`` with ``z ~ N(0, 1)`` (with Pyro's engine,
    ``LocScaleReparam(centered=0.0)`` on every weight site), so the sampler moves
    the independent ``z`` and the scales instead.
``auto`` (default)
    non-centered for the layers with a scale-mixture prior (the funnel), centered
    for the others (a plain ``N(0, sigma0^2)`` prior has no funnel).

Either way the stored samples are those of the model's own sites: ``<layer>.weight``
(recomputed from ``z`` and the scales when non-centered), ``<layer>.bias``,
``<layer>.<kind>`` for the scales and ``likelihood.precision`` when it is learned.

With ``engine="pyro"``, replicas are sampled one after another, each with its own
step size and mass matrix: replica ``r`` runs on a copy of the model with
``replicas=1`` on its data ``X[r], y[r]`` after ``pyro.set_rng_seed(seeds[r])``, so a batched fit is exactly a
stack of one-at-a-time fits with the same seeds. Chains of one replica also run
one after another in this process (deterministic under the seed; no
multiprocessing), continuing that replica's random stream.

Weight-space diagnostics mean little for a network, whose posterior is symmetric
under permutations of hidden units: the posterior also reports split R-hat and
bulk/tail ESS of the predictions ``f(x)`` at a set of inputs (the test inputs given
to ``fit``, otherwise up to 50 training inputs).

Refused up front: Bernoulli noise (discrete scales have no gradient) and the
improper log-uniform prior (the posterior may be improper).
"""

from __future__ import annotations

import copy
import hashlib
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer.reparam import LocScaleReparam

from bnn_priors.errors import (
    BNNPriorsError,
    FitDivergedError,
    InvalidParameterError,
    normalize_name,
)
from inference.arviz_data import import_arviz, quiet_arviz
from inference.common import (
    InferenceBackend,
    Posterior,
    ReplicaRandom,
    check_bool,
    check_nonnegative_float,
    check_nonnegative_int,
    check_positive_int,
    raise_diverged,
    unsupported,
)
from inference.hmc import BatchedNUTS, ChainRandom, chain_seeds
from inference.hmc_kernels import Kernels
from inference.network_density import NetworkDensity
from inference.training import (
    Checkpoint,
    denormals_flushed,
    flush_denormals,
    torch_threads,
)
from models.networks import BayesianNetwork

PARAMETRIZATIONS = ("auto", "centered", "non-centered")
ENGINES = ("batched", "pyro")
INITS = ("map", "prior")
_DIAGNOSTIC_POINTS = 50  # training inputs at which f(x) is diagnosed when no test inputs are given
_INIT_LR = 0.02  # Adam's step size of the initial MAP fit
_INIT_BOUND = 2.0  # the initial MAP fit starts with unconstrained scales and log precision in [-2, 2]
#: An adapted step size below this is a chain that does not move: in the mass matrix's units a
#: posterior needs steps near 1, and the stiffest models here adapt to 1e-4..1e-3 (yacht); a chain
#: started far out (yacht with ``init="prior"``, potential about 2e7) ended at 1.5e-9, its draws
#: all but equal, its acceptance statistic 0.8 only because float rounding of the potential hid
#: every change.
STUCK_STEP_SIZE = 1e-6
_DRAW_CHUNK = 256  # draws per vectorized replay when recomputing non-centered weights


def _check_parametrization(value) -> str:
    key = normalize_name(value).replace("noncentered", "non-centered")
    if key not in PARAMETRIZATIONS:
        raise InvalidParameterError(
            f"unknown parametrization {value!r}; valid choices are: {', '.join(PARAMETRIZATIONS)}"
        )
    return key


def _check_choice(label: str, value, choices: tuple[str, ...]) -> str:
    key = normalize_name(value) if isinstance(value, str) else value
    if key not in choices:
        raise InvalidParameterError(f"unknown {label} {value!r}; valid choices are: {', '.join(choices)}")
    return key


def rhat(draws: np.ndarray) -> np.ndarray:
    """Rank-normalized split R-hat of ``draws`` shaped ``(chains, draws, *element)``, per element.

    With two or more chains this is ArviZ's ``az.rhat`` (which splits every chain in
    half). ArviZ returns NaN for a single chain, so a single chain is cut into its
    two halves, passed to ``az.rhat`` as two chains (which ArviZ splits again):
    the single-chain split R-hat. Fewer than 4 draws per chain (8 for a single
    chain) give NaN.
    """
    az = import_arviz()
    draws = np.asarray(draws, dtype=np.float64)
    if draws.shape[0] == 1:
        half = draws.shape[1] // 2
        draws = np.concatenate([draws[:, :half], draws[:, draws.shape[1] - half:]], axis=0)
    with quiet_arviz():
        out = az.rhat(az.convert_to_dataset({"x": draws}), method="rank")["x"].values
    return np.asarray(out, dtype=np.float64).reshape(draws.shape[2:])


def ess(draws: np.ndarray, method: str = "bulk") -> np.ndarray:
    """ArviZ's bulk or tail effective sample size of ``draws`` ``(chains, draws, *element)``, per element."""
    az = import_arviz()
    draws = np.asarray(draws, dtype=np.float64)
    with quiet_arviz():
        out = az.ess(az.convert_to_dataset({"x": draws}), method=method)["x"].values
    return np.asarray(out, dtype=np.float64).reshape(draws.shape[2:])


@dataclass
class _ReplicaRun:
    """What the sampler gave for one replica."""

    chains: dict[str, torch.Tensor]  # site -> (C, D, *shape), thinned
    divergences: list[list[int]]  # per chain: post-warmup iterations (before thinning)
    step_size: list[float] = field(default_factory=list)
    acceptance_rate: list[float] = field(default_factory=list)  # fraction of iterations that moved
    mean_accept_prob: list[float] = field(default_factory=list)  # mean NUTS acceptance statistic
    seconds: float = 0.0


class NUTSPosterior(Posterior):
    """Posterior samples from NUTS: predictions, weight means, diagnostics and ArviZ export.

    ``samples`` holds every latent site of the model with shape ``(D, R, *site)``,
    ``D = num_chains * ceil(num_samples / thin)`` draws, chain after chain.

    Predictions (``predict``, ``evaluate``, ``sample_functions``) use ``num_samples``
    of the stored draws per replica, drawn with that replica's random stream: a
    random subset without replacement when ``num_samples <= D``; otherwise every
    stored draw is used ``num_samples // D`` or one more times (a random
    permutation, cycled). Asking for ``D`` draws uses each stored draw exactly once.

    ``diagnostic_inputs`` ``(R, N, in)``: where :meth:`diagnostics` looks at the
    predictions ``f(x)``; ``stats``: the batched engine's per-draw sampler statistics
    ``{name: (C, D_chain, R)}`` (``None`` for Pyro's engine).
    """

    def __init__(
        self,
        model: BayesianNetwork,
        chains: dict[str, torch.Tensor],
        divergences: list[list[list[int]]],
        thin: int,
        seeds: Sequence[int],
        info: dict,
        diagnostic_inputs: torch.Tensor | None = None,
        stats: dict[str, torch.Tensor] | None = None,
    ):
        self.chains = chains  # site -> (C, D_chain, R, *shape)
        self.samples = {name: t.reshape(-1, *t.shape[2:]) for name, t in chains.items()}
        self.divergences = divergences  # [replica][chain] -> iterations
        self.thin = thin
        self.diagnostic_inputs = diagnostic_inputs
        self.stats = stats
        self._diagnostics_cache: dict[str, dict[str, np.ndarray]] | None = None
        super().__init__(
            model,
            "nuts",
            self._sample,
            seeds=seeds,
            info=info,
            weight_means=lambda: {
                layer.name: self.samples[f"{layer.name}.weight"].mean(0) for layer in model.layers
            },
        )

    # ------------------------------------------------------------------ samples
    @property
    def num_chains(self) -> int:
        return next(iter(self.chains.values())).shape[0]

    @property
    def num_draws(self) -> int:
        """Stored draws per replica, all chains together."""
        return next(iter(self.samples.values())).shape[0]

    @property
    def sites(self) -> list[str]:
        return list(self.samples)

    def get_samples(self, group_by_chain: bool = False) -> dict[str, torch.Tensor]:
        """The stored draws: ``{site: (D, R, *shape)}``, or ``(C, D / C, R, *shape)`` by chain."""
        return dict(self.chains if group_by_chain else self.samples)

    def _draw_indices(self, num_samples: int, rng: ReplicaRandom) -> torch.Tensor:
        D = self.num_draws
        steps = torch.arange(num_samples, device=rng.device) % D
        return rng.batch_indices(D, D)[:, steps].T  # a permutation of the draws per replica: (S, R)

    def _sample(self, X: torch.Tensor, num_samples: int, rng: ReplicaRandom):
        model = self.model
        idx = self._draw_indices(num_samples, rng).to(model.device)
        rows = torch.arange(model.replicas, device=model.device)
        params = {}
        for layer in model.layers:
            for kind in ("weight", "bias"):
                params[f"{layer.name}.{kind}"] = self.samples[f"{layer.name}.{kind}"][idx, rows]
        f = model.forward_params(X, params)
        lik = model.likelihood
        if lik.learned:
            precision = self.samples[lik.site][idx, rows]
        else:
            precision = torch.full((num_samples, model.replicas), lik.precision, device=f.device, dtype=f.dtype)
        return f, precision

    # -------------------------------------------------------------- diagnostics
    def predictions(self, X=None) -> torch.Tensor:
        """The network's output at ``X`` under every stored draw, by chain: ``(C, D_chain, R, N, out)``.

        ``X`` defaults to the diagnostic inputs (the test inputs given to ``fit``, or a
        subsample of the training inputs).
        """
        X = self.diagnostic_inputs if X is None else self.model.check_inputs(X)
        C, D = next(iter(self.chains.values())).shape[:2]
        parts = []
        with torch.no_grad():
            for start in range(0, C * D, _DRAW_CHUNK):
                params = {}
                for layer in self.model.layers:
                    for kind in ("weight", "bias"):
                        t = self.chains[f"{layer.name}.{kind}"]
                        params[f"{layer.name}.{kind}"] = t.reshape(C * D, *t.shape[2:])[start:start + _DRAW_CHUNK]
                parts.append(self.model.forward_params(X, params))
        f = torch.cat(parts)
        return f.reshape(C, D, *f.shape[1:])

    @staticmethod
    def _summaries(a: np.ndarray) -> dict[str, np.ndarray]:
        return {"r_hat": rhat(a), "ess_bulk": ess(a, "bulk"), "ess_tail": ess(a, "tail")}

    def _elementwise(self) -> dict[str, dict[str, np.ndarray]]:
        """Per site (and ``f``): R-hat, bulk and tail ESS per replica and element, shape ``(R, *site)``."""
        if self._diagnostics_cache is None:
            out: dict[str, dict[str, np.ndarray]] = {}
            for name, t in self.chains.items():
                out[name] = self._summaries(t.detach().cpu().double().numpy())  # (C, D, R, *shape)
            if self.diagnostic_inputs is not None:
                out["f"] = self._summaries(self.predictions().cpu().double().numpy())
            self._diagnostics_cache = out
        return self._diagnostics_cache

    def predictive_diagnostics(self, X=None) -> dict[str, np.ndarray]:
        """Split R-hat, bulk and tail ESS of ``f(x)`` per replica and point, ``(R, N, out)``, at ``X``
        (default: the diagnostic inputs)."""
        if X is None and self.diagnostic_inputs is not None:
            return self._elementwise()["f"]
        return self._summaries(self.predictions(X).cpu().double().numpy())

    def diagnostics(self, elementwise: bool = False):
        """Convergence diagnostics as a :class:`pandas.DataFrame`, one row per replica and site.

        Columns: ``replica``, ``site``, ``size`` (elements), ``r_hat_max`` (the largest
        rank-normalized split R-hat over the site's elements; with one chain, over the
        chain's two halves, see :func:`rhat`), ``ess_bulk_min``, ``ess_bulk_median``,
        ``ess_tail_min`` (ArviZ's ``az.ess``), ``draws`` and ``divergences`` (the
        replica's divergent post-warmup iterations, all chains, before thinning: the
        same number on every row of a replica). ``elementwise=True`` gives one row per
        element instead (``index``, ``r_hat``, ``ess_bulk``, ``ess_tail``).

        The site ``f`` (last) is the network's output at the diagnostic inputs: its
        R-hat and ESS are the figures that mean something for a network, whose weights
        can swap places (hidden units permuted) without changing the function. With
        the batched engine, the columns ``tree_depth`` (mean), ``step_size`` (mean over
        chains) and ``mean_accept_prob`` come from the sampler.
        """
        import pandas as pd

        stats = self._elementwise()
        rows = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN statistics of very short chains
            for r in range(self.model.replicas):
                rows += self._rows(stats, r, elementwise)
        df = pd.DataFrame(rows)
        df.attrs["r_hat"] = (
            f"rank-normalized split R-hat over {self.num_chains} chains"
            if self.num_chains > 1
            else "rank-normalized split R-hat of one chain (its two halves as two chains)"
        )
        return df

    def _rows(self, stats, r: int, elementwise: bool) -> list[dict]:
        rows = []
        n_div = sum(len(c) for c in self.divergences[r])
        for name, s in stats.items():
            r_hat, bulk, tail = s["r_hat"][r], s["ess_bulk"][r], s["ess_tail"][r]
            if elementwise:
                for index in np.ndindex(r_hat.shape):
                    rows.append({
                        "replica": r, "site": name, "index": index, "r_hat": float(r_hat[index]),
                        "ess_bulk": float(bulk[index]), "ess_tail": float(tail[index]),
                    })
                continue
            row = {
                "replica": r,
                "site": name,
                "size": int(r_hat.size),
                "r_hat_max": float(np.nanmax(r_hat)),
                "ess_bulk_min": float(np.nanmin(bulk)),
                "ess_bulk_median": float(np.nanmedian(bulk)),
                "ess_tail_min": float(np.nanmin(tail)),
                "draws": self.num_draws,
                "divergences": n_div,
            }
            if self.stats is not None:
                row["tree_depth"] = float(self.stats["tree_depth"][:, :, r].double().mean())
                row["step_size"] = float(self.stats["step_size"][:, :, r].double().mean())
                row["mean_accept_prob"] = float(self.stats["acceptance_rate"][:, :, r].double().mean())
            rows.append(row)
        return rows

    def _arviz_draws(self, num_samples: int, rng: ReplicaRandom) -> dict[str, torch.Tensor]:
        """Every stored draw, by chain (``num_samples`` does not apply); the precision even when fixed."""
        draws = {name: t.detach() for name, t in self.chains.items()}
        site = self.model.likelihood.site
        if site not in draws:
            first = next(iter(draws.values()))
            draws[site] = torch.full((*first.shape[:2], self.model.replicas), self.model.likelihood.precision,
                                     device=first.device, dtype=first.dtype)
        return draws

    def _arviz_sample_stats(self) -> dict[str, np.ndarray]:
        """``diverging``: whether the iteration of each kept draw diverged, ``(C, D, R)``; with the
        batched engine also ``tree_depth``, ``n_steps``, ``acceptance_rate``, ``energy`` and ``step_size``."""
        if self.stats is not None:
            return {name: t.detach().cpu().numpy() for name, t in self.stats.items()}
        C, D = next(iter(self.chains.values())).shape[:2]
        diverging = np.zeros((C, D, self.model.replicas), dtype=bool)
        for r, per_chain in enumerate(self.divergences):
            for c, its in enumerate(per_chain):
                for it in its:
                    if it % self.thin == 0 and it // self.thin < D:
                        diverging[c, it // self.thin, r] = True
        return {"diverging": diverging}

    def _arviz_attrs(self) -> dict[str, str]:
        library = "pyro" if self.stats is None else "bnn-priors (batched iterative NUTS)"
        return {"draws": "MCMC draws (NUTS), by chain", "sampler": "NUTS", "sampler_library": library}


class NUTS(InferenceBackend):
    """The No-U-Turn sampler: ``NUTS(num_samples=200, warmup=200).fit(model, X, y)``.

    Parameters: ``num_samples`` (draws kept per chain before thinning), ``warmup``
    (adaptation iterations per chain, discarded; 0 for none), ``num_chains`` (4 by
    default; in lockstep with the batched engine, one after another with Pyro's), ``thin`` (keep every ``thin``-th draw: ``ceil(num_samples / thin)``
    per chain), ``target_accept`` (step-size adaptation target, in (0, 1)),
    ``max_tree_depth`` (at most ``2**max_tree_depth`` leapfrog steps per iteration),
    ``parametrization`` (``"auto"``, ``"centered"`` or ``"non-centered"``, see
    :mod:`inference.nuts`), ``engine`` (``"batched"``, the project's own sampler, or
    ``"pyro"``), and ``device``, ``seed`` (one int, replica ``r`` gets ``seed + r``, or
    one per replica), ``progress`` (a progress bar) and ``threads`` (torch threads of the fit, 1 by
    default as for the training loop, :mod:`inference.training`: a second thread that spins
    while another process holds the other core slows every operation. The backend matrix's
    NUTS fit on 2 cores (``benchmarks/thread_contention.py --backend nuts``): alone 11.0 s with
    one thread, 8.1 s with two; beside a process running two torch threads 10.6 s with one,
    32.9 s with two; in the test suite, two threads in each of two pytest workers took 40-100 s
    per fit; ``None`` leaves torch's setting alone).

    Batched engine only: ``init`` (``"map"``: each chain starts from ``init_steps``
    Adam steps on its log density from its own prior draw, its unconstrained scales
    and log precision clipped to [-2, 2], plus a jitter of
    N(0, ``init_jitter``^2), 0.1 by default (none with ``init_steps=0``, which starts at the
    prior draw), in the unconstrained coordinates (the chains
    already start from prior draws of their own; on yacht, 0 instead of 0.1 gave no better
    R-hat, ``benchmarks/nuts_convergence.py``); ``"prior"``: from the prior draw).
    ``compile`` (compile the log density with its gradient (``torch.func.grad``,
    one graph), the leapfrog step and the tree's per-leaf bookkeeping with inductor, see
    :mod:`inference.hmc_kernels`: on the CPU the potential and gradient of one chain of
    boston 13-50-1 take 0.16-0.18 ms against 1.19 ms eager, and a whole leaf of a tree about
    0.22 ms against 1.7 ms, after 10-60 s of compilation (less from inductor's on-disk
    cache), so it pays for runs of thousands of leapfrog steps; the same random stream,
    float rounding of the fused kernels; falls back to eager with a warning if compilation
    fails or disagrees with eager).
    Pyro's engine only: ``jit_compile`` (trace the potential with the PyTorch JIT; if
    that fails for a model, sampling falls back to no JIT with a warning); it starts
    from Pyro's default (``init_to_uniform``: uniform in (-2, 2), unconstrained).

    ``fit(model, X, y, X_test=None)``: the predictions are diagnosed at ``X_test``
    when given, otherwise at up to 50 training inputs. ``info`` reports ``seconds`` (wall time of warmup and
    sampling, JIT compilation included), ``divergences``, ``ess_per_second`` (median
    bulk ESS of the first layer's weights per second of that replica's run, median
    over replicas), ``step_size`` (adapted, per replica and chain),
    ``mean_accept_prob`` (mean NUTS acceptance statistic after warmup, to compare
    with ``target_accept``), ``acceptance_rate`` (Pyro's fraction of iterations
    that moved, near 1 for NUTS; Pyro's engine only) and a ``per_replica`` list of the
    same per replica. Both engines add ``predictive`` (per replica: the largest split
    R-hat, the median and smallest bulk ESS and the smallest tail ESS of ``f(x)`` at
    the diagnostic inputs, and that median bulk ESS per second); the batched engine
    adds ``tree_depth`` and ``n_steps`` (means per replica and chain),
    ``warmup_divergences``, ``init``, ``engine`` and ``stuck_chains`` (per replica, the chains
    whose adapted step size fell below :data:`STUCK_STEP_SIZE`: such a chain barely moves, and
    the fit warns naming it).

    Supports every prior with continuous scales (Gaussian, Rayleigh, inverse
    Nakagami, half-Cauchy noise, and the normal prior) on every model.
    """

    name = "nuts"
    diagnoses_test_inputs = True

    @property
    def checkpoints(self) -> bool:
        """Whether ``fit`` takes a checkpoint: the batched engine saves its state, Pyro's does not."""
        return self.engine == "batched"

    #: Keyword options and their defaults (``device``, ``seed`` and ``progress`` aside): what a caller
    #: such as the benchmark runner may set. Equal to ``__init__``'s defaults (tested).
    options = {
        "num_samples": 200, "warmup": 200, "num_chains": 4, "thin": 1, "target_accept": 0.8,
        "max_tree_depth": 10, "jit_compile": True, "parametrization": "auto", "engine": "batched",
        "init": "map", "init_steps": 200, "init_jitter": 0.1, "compile": False,
    }
    #: The option that counts the training budget, and its unit.
    budget_option, budget_unit = "num_samples", "samples"
    #: Options that take one value per replica (a list) as well as one for all.
    replica_options: tuple[str, ...] = ()

    def __init__(
        self,
        num_samples: int = 200,
        warmup: int = 200,
        num_chains: int = 4,
        thin: int = 1,
        target_accept: float = 0.8,
        max_tree_depth: int = 10,
        jit_compile: bool = True,
        parametrization: str = "auto",
        engine: str = "batched",
        init: str = "map",
        init_steps: int = 200,
        init_jitter: float = 0.1,
        compile: bool = False,
        device="cpu",
        seed: int | Sequence[int] = 0,
        progress: bool = True,
        threads: int | None = 1,
    ):
        super().__init__(device, seed, progress, threads)
        self.num_samples = check_positive_int("num_samples", num_samples)
        self.warmup = check_nonnegative_int("warmup", warmup)
        self.num_chains = check_positive_int("num_chains", num_chains)
        self.thin = check_positive_int("thin", thin)
        if (
            isinstance(target_accept, bool)
            or not isinstance(target_accept, (int, float, np.floating))
            or not 0.0 < target_accept < 1.0
        ):
            raise InvalidParameterError(f"target_accept must be a number in (0, 1), got {target_accept!r}")
        self.target_accept = float(target_accept)
        self.max_tree_depth = check_positive_int("max_tree_depth", max_tree_depth)
        if self.max_tree_depth > 20:
            raise InvalidParameterError(
                f"max_tree_depth must be at most 20 (2**20 leapfrog steps per iteration), got {max_tree_depth!r}"
            )
        self.jit_compile = check_bool("jit_compile", jit_compile)
        self.parametrization = _check_parametrization(parametrization)
        self.engine = _check_choice("engine", engine, ENGINES)
        self.init = _check_choice("init", init, INITS)
        self.init_steps = check_nonnegative_int("init_steps", init_steps)
        self.init_jitter = check_nonnegative_float("init_jitter", init_jitter)
        self.compile = check_bool("compile", compile)
        self.progress = check_bool("progress", progress)

    def __repr__(self) -> str:
        return (
            f"NUTS(num_samples={self.num_samples}, warmup={self.warmup}, num_chains={self.num_chains}, "
            f"thin={self.thin}, target_accept={self.target_accept:g}, max_tree_depth={self.max_tree_depth}, "
            f"jit_compile={self.jit_compile}, parametrization={self.parametrization!r}, engine={self.engine!r}, "
            f"init={self.init!r}, init_steps={self.init_steps}, init_jitter={self.init_jitter:g}, "
            f"compile={self.compile}, threads={self.threads})"
        )

    # ------------------------------------------------------------------ checks
    def check_model(self, model: BayesianNetwork) -> None:
        for layer in model.layers:
            prior, noise = layer.prior, layer.prior.noise
            if noise is not None and noise.discrete:
                alternative = noise.continuous_alternative
                raise unsupported(
                    "NUTS",
                    f"the {prior.describe()} prior of {layer.name}",
                    f"{noise.name} scales are discrete, and Hamiltonian Monte Carlo needs a "
                    "differentiable density over continuous latent variables",
                    "inference.MCDropout (dropout as approximate inference)"
                    + (f", or {alternative}" if alternative else ""),
                )
            if not prior.proper:
                raise unsupported(
                    "NUTS",
                    f"the {prior.describe()} prior of {layer.name}",
                    f"it is improper ({prior.density} does not integrate), so the posterior may be improper "
                    "and a sampler has no distribution to converge to",
                    "SVI(guide='variational-dropout')",
                )

    def layer_parametrization(self, model: BayesianNetwork) -> dict[str, str]:
        """How each layer's weights are sampled: ``{layer: "centered" | "non-centered"}``.

        ``auto``: non-centered where the prior has scales (the funnel), centered elsewhere.
        """
        out = {}
        for layer in model.layers:
            if self.parametrization == "auto":
                out[layer.name] = "non-centered" if layer.prior.noise is not None else "centered"
            else:
                out[layer.name] = self.parametrization
        return out

    # --------------------------------------------------------------------- fit
    def fit(self, model: BayesianNetwork, X, y, X_test=None, checkpoint: Checkpoint | None = None) -> NUTSPosterior:
        """Sample the posterior of ``model`` given ``(X, y)``; ``X_test``: inputs (never targets) at which
        to diagnose the predictions. With a :class:`~inference.training.Checkpoint` (batched engine
        only), the sampler saves its whole state every ``checkpoint.every`` seconds and a rerun with
        the same checkpoint continues from it, giving the draws of an uninterrupted run (on the same
        device, with the same kernels: eager, or compiled in every segment); a checkpoint of another
        fit (data, model, options, seeds) is refused. ``info["seconds"]`` counts every segment up to
        its last save."""
        X, y, seeds = self.prepare(model, X, y)
        X_diag = _diagnostic_inputs(model, X, X_test)
        if checkpoint is not None and self.engine != "batched":
            raise InvalidParameterError("NUTS: checkpoints are saved by the batched engine only, not by engine='pyro'")
        # as the training loop: subnormal floats read and written as zero, one torch thread
        with flush_denormals(), torch_threads(self.threads):
            if self.engine == "batched":
                post = self._fit_batched(model, X, y, seeds, X_diag, checkpoint)
            else:
                post = self._fit_pyro(model, X, y, seeds, X_diag)
            post.info["denormals_flushed"] = denormals_flushed()
        post.info["predictive"] = _predictive_info(post)
        return post

    def _fit_pyro(self, model, X, y, seeds, X_diag) -> NUTSPosterior:
        forms = self.layer_parametrization(model)
        noncentered = {f"{name}.weight" for name, form in forms.items() if form == "non-centered"}
        single = copy.copy(model)
        single.replicas = 1
        pyro_model = _reparametrized(single, noncentered)
        start = time.perf_counter()
        jit = self.jit_compile
        try:
            runs = self._sample_replicas(pyro_model, X, y, seeds, jit, noncentered)
        except (BNNPriorsError, FitDivergedError):
            raise
        except Exception as exc:  # any failure of the traced potential: sample again without the JIT
            if not jit:
                raise
            first_line = str(exc).splitlines()[0] if str(exc) else ""
            warnings.warn(
                f"NUTS: sampling with jit_compile=True failed for this model ({type(exc).__name__}: "
                f"{first_line}); sampling again without the JIT (slower)",
                RuntimeWarning,
                stacklevel=2,
            )
            jit = False
            runs = self._sample_replicas(pyro_model, X, y, seeds, jit, noncentered)
        elapsed = time.perf_counter() - start
        chains = {name: torch.cat([run.chains[name] for run in runs], dim=2) for name in _site_order(model, runs[0])}
        chains = {name: t.to(model.device) for name, t in chains.items()}
        info = self._info(model, runs, chains, forms, jit, elapsed, seeds)
        info["engine"] = "pyro"
        return NUTSPosterior(model, chains, [run.divergences for run in runs], self.thin, seeds, info, X_diag)

    # ------------------------------------------------------------ batched engine
    def _fit_batched(self, model, X, y, seeds, X_diag, checkpoint=None) -> NUTSPosterior:
        """Every chain of every replica in lockstep on the direct log density."""
        forms = self.layer_parametrization(model)
        density = NetworkDensity(model, X, y, {name for name, form in forms.items() if form == "non-centered"})
        K, R = self.num_chains, model.replicas
        rng = ChainRandom(chain_seeds(seeds, K), model.device)
        start = time.perf_counter()
        at_rows = lambda q, rows: density.potential(q, rows // K)  # noqa: E731  (chain rows to replicas)
        if K * R == 1:  # one chain is never a subset of the batch: nothing to compile the row potential for
            at_rows = None
        if self.compile:  # checked at prior draws from a copy of the chains' streams, which stay untouched
            q_check = density.prior_draw(ChainRandom(chain_seeds(seeds, K), model.device), bound=_INIT_BOUND)
            kernels = Kernels.compiled_at(q_check, density.potential, at_rows)
        else:
            kernels = Kernels(density.potential, at_rows)
        # A saved state has the start (the sampler reads and checks it; a file that is not one is refused there)
        resuming = checkpoint is not None and Path(checkpoint.path).exists()
        q0 = None if resuming else self._initial_positions(density, kernels.value_and_grad, rng)
        sampler = BatchedNUTS(density.potential, rng, max_tree_depth=self.max_tree_depth,
                              target_accept=self.target_accept, kernels=kernels)
        out = sampler.sample(q0, self.warmup, self.num_samples, self.thin, self.progress, checkpoint=checkpoint,
                             fingerprint=None if checkpoint is None else _fit_fingerprint(model, X, y, forms, density, self),
                             started=start)
        elapsed = time.perf_counter() - start + out.seconds_before  # with the earlier segments of a continued run
        S = out.draws.shape[1]
        with torch.no_grad():
            sites = density.sites(out.draws.reshape(-1, density.dim))  # rows (R, K, S): {site: (R, K * S, ...)}
        chains = {}
        for name in _site_names(model):
            t = sites[name].reshape(R, K, S, *sites[name].shape[2:])
            chains[name] = t.movedim(0, 2).contiguous().detach()  # (K, S, R, *shape)
        for r in range(R):
            _check_finite(_ReplicaRun({k: v[:, :, r] for k, v in chains.items()}, []), r, self.thin)
        by_chain = {k: v.reshape(R, K, -1) for k, v in out.stats.items()}  # every iteration after warmup
        divergences = [[by_chain["diverging"][r, k].nonzero().flatten().tolist() for k in range(K)] for r in range(R)]
        stats = {k: v[:, :, :: self.thin].movedim(0, 2).contiguous() for k, v in by_chain.items()}  # (K, S, R)
        info = self._batched_info(model, chains, by_chain, out, forms, elapsed, seeds)
        stuck = _warn_stuck_chains(out.step_size.reshape(R, K), self.warmup)
        info["stuck_chains"] = [[k for rr, k in stuck if rr == r] for r in range(R)]  # per replica
        info["compile"] = kernels.compiled  # False after a fallback to eager
        info["resumed_from_iteration"] = out.resumed_from  # where a checkpoint continued, or None
        if out.resumed_from is not None:
            info["seconds_before_resume"] = out.seconds_before
        return NUTSPosterior(model, chains, divergences, self.thin, seeds, info, X_diag, stats)

    def _initial_positions(self, density: NetworkDensity, value_and_grad, rng: ChainRandom) -> torch.Tensor:
        """A prior draw per chain; with ``init="map"``, ``init_steps`` of Adam on each chain's log
        density from there (the chains do not interact: Adam acts elementwise), then a jitter.

        The MAP fit starts from a prior draw whose unconstrained scales and log precision are
        clipped to ``[-2, 2]`` (Stan's range for random inits): from a half-Cauchy scale of e^8
        the network's outputs are so far off that 200 Adam steps left the potential near 1e9, the
        step size search then settled at 1e-8, and the chain never moved (measured on yacht).
        """
        if self.init == "prior" or self.init_steps == 0:
            return density.prior_draw(rng).detach()
        q = density.prior_draw(rng, bound=_INIT_BOUND).detach()
        q = q.clone().requires_grad_(True)
        opt = torch.optim.Adam([q], lr=_INIT_LR)
        for _ in range(self.init_steps):
            opt.zero_grad()
            _, grad = value_and_grad(q.detach())
            ok = torch.isfinite(grad).all(-1, keepdim=True)
            q.grad = torch.where(ok, grad, torch.zeros_like(grad))
            opt.step()
        q = q.detach()
        return q + self.init_jitter * rng.randn(q.shape[1:], q.dtype)

    def _batched_info(self, model, chains, by_chain, out, forms, elapsed, seeds) -> dict:
        R, K = model.replicas, self.num_chains
        step = out.step_size.reshape(R, K)
        per_replica = []
        for r in range(R):
            med = _first_layer_ess(model, chains, r)
            per_replica.append({
                "seed": seeds[r],
                "seconds": elapsed,  # all replicas ran together
                "divergences": int(by_chain["diverging"][r].sum()),
                "warmup_divergences": int(out.warmup_divergences.reshape(R, K)[r].sum()),
                "step_size": step[r].tolist(),
                "mean_accept_prob": by_chain["acceptance_rate"][r].double().mean(-1).tolist(),
                "tree_depth": by_chain["tree_depth"][r].double().mean(-1).tolist(),
                "n_steps": by_chain["n_steps"][r].double().mean(-1).tolist(),
                "ess_bulk_median_first_layer": med,
                "ess_per_second": med / elapsed,
            })
        return {
            "engine": "batched",
            "init": self.init,
            **self._common_info(model, chains, per_replica, forms, elapsed),
            "warmup_divergences": sum(p["warmup_divergences"] for p in per_replica),
            "jit_compile": False,
            "tree_depth": [p["tree_depth"] for p in per_replica],
            "n_steps": [p["n_steps"] for p in per_replica],
        }

    def _common_info(self, model, chains, per_replica: list[dict], forms, elapsed: float) -> dict:
        """The facts both engines report: budget, draws, divergences, step sizes, acceptance, ESS."""
        first = f"{model.layers[0].name}.weight"
        return {
            "seconds": elapsed,
            "num_samples": self.num_samples,
            "warmup": self.warmup,
            "num_chains": self.num_chains,
            "thin": self.thin,
            "draws": math.prod(chains[first].shape[:2]),  # chains x draws per chain
            "divergences": sum(p["divergences"] for p in per_replica),
            "parametrization": forms,
            "target_accept": self.target_accept,
            "max_tree_depth": self.max_tree_depth,
            "step_size": [p["step_size"] for p in per_replica],
            "mean_accept_prob": [p["mean_accept_prob"] for p in per_replica],
            "ess_bulk_median_first_layer": float(np.median([p["ess_bulk_median_first_layer"] for p in per_replica])),
            "ess_per_second": float(np.median([p["ess_per_second"] for p in per_replica])),
            "per_replica": per_replica,
        }

    def _sample_replicas(self, pyro_model, X, y, seeds, jit: bool, noncentered: set[str]) -> list[_ReplicaRun]:
        """Every replica in turn, each on its own data and seed; weights recomputed and checked."""
        runs = []
        for r, seed in enumerate(seeds):
            Xr, yr = X[r : r + 1], y[r : r + 1]
            run = self._run_replica(pyro_model, Xr, yr, seed, jit)
            _fill_weights(run, pyro_model, Xr, yr, noncentered)
            _check_finite(run, r, self.thin)
            runs.append(run)
        return runs

    def _run_replica(self, pyro_model, X, y, seed: int, jit: bool) -> _ReplicaRun:
        pyro.set_rng_seed(seed)
        t0 = time.perf_counter()
        per_chain: list[dict[str, torch.Tensor]] = []
        run = _ReplicaRun(chains={}, divergences=[])
        for _ in range(self.num_chains):
            kernel = pyro.infer.NUTS(
                pyro_model,
                target_accept_prob=self.target_accept,
                max_tree_depth=self.max_tree_depth,
                jit_compile=jit,
                ignore_jit_warnings=True,
            )
            accept = {"mean": math.nan}

            def hook(kernel, params, stage, i, accept=accept):
                # The running mean of the acceptance statistic, read before MCMC resets the kernel.
                if stage.startswith("Sample"):
                    accept["mean"] = float(getattr(kernel, "_mean_accept_prob", math.nan))

            mcmc = pyro.infer.MCMC(
                kernel,
                num_samples=self.num_samples,
                warmup_steps=self.warmup,
                disable_progbar=not self.progress,
                hook_fn=hook,
            )
            with warnings.catch_warnings():
                # torch >= 2.10 deprecates torch.jit.trace, which Pyro's jit_compile uses.
                warnings.filterwarnings("ignore", message=r".*torch\.jit\.trace.*deprecated", category=DeprecationWarning)
                mcmc.run(X, y)
            samples = mcmc.get_samples()
            per_chain.append({k: v[:: self.thin].detach() for k, v in samples.items()})
            diag = mcmc.diagnostics()
            run.divergences.append(sorted(int(i) for i in diag["divergences"]["chain 0"]))
            run.acceptance_rate.append(float(diag["acceptance rate"]["chain 0"]))
            run.step_size.append(float(kernel.step_size))
            run.mean_accept_prob.append(accept["mean"])
        run.chains = {k: torch.stack([c[k] for c in per_chain]) for k in per_chain[0]}
        run.seconds = time.perf_counter() - t0
        return run

    def _info(self, model, runs, chains, forms, jit, elapsed, seeds) -> dict:
        per_replica = []
        for r, run in enumerate(runs):
            med = _first_layer_ess(model, chains, r)
            per_replica.append({
                "seed": seeds[r],
                "seconds": run.seconds,
                "divergences": sum(len(c) for c in run.divergences),
                "step_size": run.step_size,
                "acceptance_rate": run.acceptance_rate,
                "mean_accept_prob": run.mean_accept_prob,
                "ess_bulk_median_first_layer": med,
                "ess_per_second": med / run.seconds,
            })
        return {
            **self._common_info(model, chains, per_replica, forms, elapsed),
            "jit_compile": jit,
            "acceptance_rate": [p["acceptance_rate"] for p in per_replica],
        }


# ---------------------------------------------------------------------- helpers
def _fit_fingerprint(model: BayesianNetwork, X, y, forms, density: NetworkDensity, backend: NUTS) -> dict:
    """What a checkpoint of this fit must match beyond the sampler's own settings: the data, the
    model's coordinates and how the chains start."""
    digest = hashlib.sha256()
    for t in (X, y):
        digest.update(t.detach().cpu().contiguous().numpy().tobytes())
    return {"data": digest.hexdigest(), "dimension": density.dim, "dtype": str(model.dtype),
            "parametrization": dict(forms), "init": _init_identity(backend), "model": repr(model)}


def _init_identity(backend: NUTS) -> tuple:
    """How the chains start, as a checkpoint records it: ``(init, init_steps)`` with the default jitter
    (the form of the files saved before ``init_jitter`` was an option, which stay continuable),
    ``(init, init_steps, init_jitter)`` otherwise."""
    if backend.init_jitter == NUTS.options["init_jitter"]:
        return (backend.init, backend.init_steps)
    return (backend.init, backend.init_steps, backend.init_jitter)


def _first_layer_ess(model: BayesianNetwork, chains: dict, r: int) -> float:
    """Median bulk ESS of replica ``r``'s first weight matrix (NaN for chains too short to tell)."""
    a = chains[f"{model.layers[0].name}.weight"][:, :, r].detach().cpu().double().numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all NaN for very short chains
        return float(np.nanmedian(ess(a, "bulk")))


def _diagnostic_inputs(model: BayesianNetwork, X: torch.Tensor, X_test) -> torch.Tensor:
    """Where the predictions are diagnosed: ``X_test``, or up to 50 evenly spaced training inputs."""
    if X_test is not None:
        return model.check_inputs(X_test)
    n = X.shape[1]
    idx = torch.linspace(0, n - 1, min(n, _DIAGNOSTIC_POINTS)).round().long().to(X.device)
    return X[:, idx]


def _predictive_info(post: NUTSPosterior) -> list[dict]:
    """Per replica: convergence of ``f(x)`` at the diagnostic inputs (R-hat, bulk and tail ESS)."""
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all NaN for very short chains
        d = post.predictive_diagnostics()
        for r in range(post.model.replicas):
            bulk = d["ess_bulk"][r]
            seconds = post.info["per_replica"][r]["seconds"]
            out.append({
                "points": int(post.diagnostic_inputs.shape[1]),
                "r_hat_max": float(np.nanmax(d["r_hat"][r])),
                "ess_bulk_median": float(np.nanmedian(bulk)),
                "ess_bulk_min": float(np.nanmin(bulk)),
                "ess_tail_min": float(np.nanmin(d["ess_tail"][r])),
                "ess_per_second": float(np.nanmedian(bulk)) / seconds,
            })
    return out


def _site_names(model: BayesianNetwork) -> list[str]:
    """The model's latent sites in declaration order: per layer scales, weight, bias; then the precision."""
    names = []
    for layer in model.layers:
        names += [f"{layer.name}.{kind}" for kind in layer.prior.scale_shapes(layer.in_features, layer.out_features)]
        names += [f"{layer.name}.weight", f"{layer.name}.bias"]
    if model.likelihood.learned:
        names.append(model.likelihood.site)
    return names


def _unwrap(fn):
    while isinstance(fn, torch.distributions.Independent):
        fn = fn.base_dist
    return fn


def _reparametrized(model: BayesianNetwork, noncentered: set[str]):
    """The Pyro model with ``LocScaleReparam(centered=0.0)`` on the weight sites in ``noncentered``."""
    if not noncentered:
        return model

    def config(msg):
        if msg["name"] in noncentered and isinstance(_unwrap(msg["fn"]), dist.Normal):
            return LocScaleReparam(centered=0.0)
        return None

    return poutine.reparam(model, config=config)


def _site_order(model: BayesianNetwork, run: _ReplicaRun) -> list[str]:
    """The sites of a Pyro run in the model's declaration order."""
    return [n for n in _site_names(model) if n in run.chains]


def _warn_stuck_chains(step_size: torch.Tensor, warmup: int, stacklevel: int = 4) -> list[tuple[int, int]]:
    """Warn about the chains whose adapted step size ``(R, K)`` is below :data:`STUCK_STEP_SIZE`
    (their draws are not posterior samples) and return them as ``(replica, chain)`` pairs."""
    stuck = [(r, k) for r, k in (step_size < STUCK_STEP_SIZE).nonzero().tolist()]
    if stuck and warmup:
        named = ", ".join(f"replica {r} chain {k} ({float(step_size[r, k]):.2g})" for r, k in stuck)
        warnings.warn(
            f"NUTS: {len(stuck)} chain(s) ended warm-up with a step size below {STUCK_STEP_SIZE:g}: {named}. "
            "Such a chain barely moves, so its draws are not posterior samples and its diagnostics mislead; "
            "it usually started far from the posterior (init='prior', or too few init_steps): use init='map' "
            "with more init_steps, or drop the chain",
            RuntimeWarning, stacklevel=stacklevel,
        )
    return stuck


def _check_finite(run: _ReplicaRun, replica: int, thin: int = 1) -> None:
    """Raise :class:`FitDivergedError` naming the first site with a NaN or infinite draw.

    The step reported is the post-warmup iteration of that draw.
    """
    for name, t in run.chains.items():
        bad = ~torch.isfinite(t.reshape(t.shape[0], t.shape[1], -1)).all(-1)  # (C, D)
        if bool(bad.any()):
            chain, draw = (int(i) for i in bad.nonzero()[0])
            raise_diverged(
                "NUTS",
                draw * thin,
                f"samples of {name} (replica {replica}, chain {chain})",
                "a heavy-tailed scale may be running away; try parametrization='non-centered', a larger "
                "target_accept, or a lighter-tailed prior",
            )


@torch.no_grad()
def _fill_weights(run: _ReplicaRun, pyro_model, X, y, noncentered: set[str]) -> None:
    """Recompute non-centered weight sites ``w = loc + scale * z`` from the draws of ``z`` and the scales.

    The model is replayed once per chunk of draws, vectorized over a plate of draws
    (dim -2, outside the model's replica plate) and conditioned on the sampled sites.
    """
    if not noncentered:
        return
    C, D = next(iter(run.chains.values())).shape[:2]
    latent = {k: v.reshape(C * D, *v.shape[2:]) for k, v in run.chains.items()}
    found: dict[str, list[torch.Tensor]] = {name: [] for name in noncentered}
    for start in range(0, C * D, _DRAW_CHUNK):
        part = {k: v[start : start + _DRAW_CHUNK] for k, v in latent.items()}
        n = next(iter(part.values())).shape[0]

        def vectorized(n=n):
            with pyro.plate("_nuts_draws", n, dim=-2):
                return pyro_model(X, y)

        trace = poutine.trace(poutine.condition(vectorized, data=part)).get_trace()
        for name in noncentered:
            value = trace.nodes[name]["value"]
            found[name].append(value.expand(n, *value.shape[-3:]))
    for name, parts in found.items():
        w = torch.cat(parts)
        run.chains[name] = w.reshape(C, D, *w.shape[1:])
    for name in [k for k in run.chains if k.endswith("_decentered")]:
        del run.chains[name]
