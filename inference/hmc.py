"""A batched No-U-Turn sampler: many independent chains advancing in lockstep.

The sampler knows nothing of networks. It takes a batched potential ``U(q) -> (C,)``
(the negative log density, differentiable) over flattened positions ``q`` of shape
``(C, D)``, one row per chain, and moves all ``C`` chains at once: every leapfrog
step is one evaluation of ``U`` and its gradient for the whole batch. Each chain has
its own tree, step size and diagonal mass matrix; a chain whose trajectory has ended
(a U-turn, a divergence) is masked: its state is frozen while the others go on,
and once at most 3/4 of the chains are still building, only theirs are evaluated
(``row_potential``), so a few long trees do not cost a full batch per leapfrog step.
The arithmetic of each step (potential and gradient, leapfrog update, a leaf's
bookkeeping, a block's U-turn check) lives in :mod:`inference.hmc_kernels`, eager or
compiled.

The transition is the iterative NUTS of Phan, Pradhan & Jankowiak (2019): the
trajectory doubles (Hoffman & Gelman 2014), each new subtree is built leaf by leaf
with no recursion, and the U-turn checks inside a subtree use a stack of
checkpoints, one per level, holding the momentum at the start and end of the
latest block of ``2**k`` leaves and the running momentum sum before it. As in Stan
(Betancourt 2017):

* multinomial sampling: inside a subtree a leaf replaces the subtree's proposal
  with probability ``w_leaf / (w_subtree so far)``, ``w = exp(-H)``; between
  subtrees the new subtree's proposal replaces the tree's with probability
  ``min(1, w_new / w_old)`` (biased progressive sampling);
* the generalized U-turn criterion ``rho . M^{-1} p_minus > 0`` and
  ``rho . M^{-1} p_plus > 0`` (``rho`` the sum of momenta of the checked span),
  for every merge of two halves, with the two extra checks across the merge (the
  first half plus the first leaf of the second, the last leaf of the first plus
  the second half);
* a divergence when the energy error ``H - H0`` exceeds 1000 (or is not finite);
* the acceptance statistic: the mean over the tree's leaves of
  ``min(1, exp(H0 - H))``.

Warm-up adapts per chain as Stan does: a fast initial window (75 iterations), slow
windows of 25, 50, 100, ... (the last stretched to the terminal window) whose
draws give the diagonal mass matrix (the Welford variance, regularised towards
1e-3 as Stan does), and a terminal fast window (50); the step size follows dual
averaging (target acceptance 0.8 by default) throughout, restarted after each mass
matrix update, and ends at its averaged value. Short warm-ups scale the windows
to 15% / 75% / 10% of the iterations, as Stan does; below 20 only the step size adapts.

Random numbers: each chain draws from its own generator (:class:`ChainRandom`), and
how many numbers it draws depends on that chain's own trajectory only (its
momentum, then per doubling one direction, one number for the progressive
sampling and one per new leaf, drawn only while the chain is still building). No
chain's arithmetic reads another's, so a chain moves as it would alone, whatever the
other chains in the batch do, and a replica of a batched fit gives what it gives
fitted alone: to the last bit where the floating-point kernels round alike, which
the tests pin with ``ATEN_CPU_CAPABILITY=default`` and ``MKL_CBWR=COMPATIBLE``. With
a CPU's SIMD kernels and MKL's default paths, the last bit of a transcendental
function (vectorized body or scalar tail of a kernel, which depends on the tensor's
size) and of a matrix product (which depends on the operands' alignment in memory)
can depend on the batch; a trajectory amplifies that bit, and the chain then draws
another, equally valid, sequence.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from bnn_priors.errors import InvalidParameterError
from inference.common import ReplicaRandom, progress_bar
from inference.hmc_kernels import (
    MAX_ENERGY_ERROR,
    Kernels,
    Potential,
    RowPotential,
    criterion,
    finite,
    log_add_exp,
)

INIT_BUFFER, BASE_WINDOW, TERM_BUFFER = 75, 25, 50


# --------------------------------------------------------------------- randomness
def chain_seeds(seeds: Sequence[int], num_chains: int) -> list[int]:
    """One generator seed per chain, replica-major: chain ``k`` of the replica seeded ``s``
    gets a seed that depends on ``(s, k)`` alone."""
    out = []
    for s in seeds:
        for k in range(num_chains):
            state = np.random.SeedSequence([int(s), k, 0x4E555453]).generate_state(2, np.uint32)
            out.append(int(state[0]) << 31 | int(state[1]) >> 1)
    return out


class ChainRandom(ReplicaRandom):
    """One random stream per chain; masked draws leave the streams of masked chains untouched."""

    def masked_rand(self, n: int, dtype: torch.dtype, active: torch.Tensor) -> torch.Tensor:
        """Uniform draws ``(C, n)``: ``n`` from each active chain's stream, zeros for the others."""
        out = torch.zeros((len(self.generators), n), dtype=dtype, device=self.device)
        for c in active.nonzero().flatten().tolist():
            out[c] = torch.rand(n, generator=self.generators[c], device=self.device, dtype=dtype)
        return out


# --------------------------------------------------------------------- adaptation
def adaptation_windows(warmup: int) -> list[tuple[int, int]]:
    """Stan's slow adaptation windows ``[start, end)`` for ``warmup`` iterations.

    An initial fast window of 75, slow windows of 25, 50, 100, ... and a terminal fast
    window of 50; a slow window that would leave less than twice its successor's size
    before the terminal window is stretched to it. Fewer than 150 iterations: 15%,
    75%, 10%. Fewer than 20: no slow window (step size only).
    """
    if warmup < 20:
        return []
    init, term, base = INIT_BUFFER, TERM_BUFFER, BASE_WINDOW
    if init + term + base > warmup:
        init, term = int(0.15 * warmup), int(0.1 * warmup)
        base = warmup - init - term
    windows, start, size, last = [], init, base, warmup - term
    while start < last:
        end = start + size
        if end + 2 * size > last:
            end = last
        windows.append((start, end))
        start, size = end, 2 * size
    return windows


class DualAveraging:
    """Nesterov dual averaging of the log step size, one per chain (Hoffman & Gelman 2014, Alg. 5)."""

    def __init__(self, step_size: torch.Tensor, target: float, gamma=0.05, t0=10.0, kappa=0.75):
        self.target, self.gamma, self.t0, self.kappa = target, gamma, t0, kappa
        self.restart(step_size)

    def restart(self, step_size: torch.Tensor) -> None:
        self.mu = torch.log(10 * step_size)
        self.t = 0
        self.h_bar = torch.zeros_like(step_size)
        self.x_bar = torch.zeros_like(step_size)

    def update(self, accept_stat: torch.Tensor) -> torch.Tensor:
        """Fold in one iteration's acceptance statistics; the next step sizes."""
        self.t += 1
        eta = 1.0 / (self.t + self.t0)
        self.h_bar = (1 - eta) * self.h_bar + eta * (self.target - accept_stat)
        x = self.mu - math.sqrt(self.t) / self.gamma * self.h_bar
        w = self.t ** (-self.kappa)
        self.x_bar = w * x + (1 - w) * self.x_bar
        return x.exp()

    def final(self) -> torch.Tensor:
        return self.x_bar.exp()


class Welford:
    """Running per-chain, per-coordinate mean and variance of the draws."""

    def __init__(self, shape, dtype, device):
        self.n = 0
        self.mean = torch.zeros(shape, dtype=torch.float64, device=device)
        self.m2 = torch.zeros(shape, dtype=torch.float64, device=device)
        self.dtype = dtype

    def add(self, q: torch.Tensor) -> None:
        self.n += 1
        q = q.double()
        delta = q - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (q - self.mean)

    def regularized_variance(self) -> torch.Tensor:
        """Stan's estimate: the sample variance shrunk towards 1e-3 with weight 5 / (n + 5)."""
        n = self.n
        var = self.m2 / (n - 1)
        return ((n / (n + 5.0)) * var + 1e-3 * (5.0 / (n + 5.0))).to(self.dtype)


# ----------------------------------------------------------------------- results
@dataclass
class SamplerOutput:
    """Kept draws ``(C, ceil(S / thin), D)``, statistics of every iteration after warm-up ``(C, S)``,
    and the adapted values."""

    draws: torch.Tensor
    stats: dict[str, torch.Tensor]  # diverging, tree_depth, n_steps, acceptance_rate, energy, step_size
    step_size: torch.Tensor  # (C,)
    inv_mass: torch.Tensor  # (C, D)
    warmup_divergences: torch.Tensor  # (C,)
    resumed_from: int | None = None  # the iteration a checkpoint continued from
    seconds_before: float = 0.0  # seconds of the earlier segments of a continued run, up to their last save


def _pick(mask: torch.Tensor, a: list, b: list) -> list:
    """Per chain, the items of ``a`` where ``mask`` holds and those of ``b`` elsewhere."""
    return [torch.where(mask[:, None] if x.dim() == 2 else mask, x, z) for x, z in zip(a, b)]


class BatchedNUTS:
    """NUTS over ``C`` chains in lockstep on a batched potential; see the module docstring.

    ``potential``: ``(C, D) -> (C,)``; ``rng``: one stream per chain; ``max_tree_depth``:
    at most ``2**max_tree_depth`` leapfrog steps per iteration; ``target_accept``: the
    dual-averaging target.

    ``row_potential`` (optional): the potential of a subset of the chains. Chains finish
    their trees at different times and lockstep then computes the finished ones' potential
    for nothing; where the cost of the potential grows with the rows (a CPU), a leapfrog
    step with at most ``compact`` of the chains still building evaluates only theirs.
    That leaves every chain's arithmetic its own, as without it, though the last bit of a
    row's potential may differ with the batch it is computed in (see the module docstring).

    ``kernels`` (optional): the per-step functions, e.g. compiled ones
    (:meth:`inference.hmc_kernels.Kernels.compiled_at`), used in place of ``potential`` and
    ``row_potential`` (their divergence threshold must be ``max_energy_error``); by default the
    eager ones of ``potential`` and ``row_potential``.
    """

    def __init__(self, potential: Potential, rng: ChainRandom, max_tree_depth: int = 10,
                 target_accept: float = 0.8, max_energy_error: float = MAX_ENERGY_ERROR,
                 row_potential: RowPotential | None = None, compact: float = 0.75, kernels: Kernels | None = None):
        if kernels is not None and kernels.max_energy_error != max_energy_error:
            raise ValueError(f"BatchedNUTS: max_energy_error={max_energy_error} but the kernels apply "
                             f"{kernels.max_energy_error}; build the kernels with the threshold to use")
        self.kernels = kernels if kernels is not None else Kernels(potential, row_potential, max_energy_error)
        self.compact = compact
        self.rng = rng
        self.max_tree_depth = max_tree_depth
        self.target_accept = target_accept

    # ----------------------------------------------------------------- dynamics
    def _grad(self, q, rows=None):
        """``U`` and its gradient at ``q``: all chains, or the chains ``rows`` through the row potential;
        a non-finite ``U`` becomes ``inf`` with a zero gradient (the sampler's divergence)."""
        if rows is None:
            return finite(*self.kernels.value_and_grad(q))
        return finite(*self.kernels.row_value_and_grad(q, rows))

    def _leapfrog(self, q, p, g, U, eps, inv_mass, active):
        """One leapfrog step of signed size ``eps`` ``(C,)`` for the active chains; the others stay."""
        if bool(active.all()):  # the common case: no masking
            return self.kernels.leapfrog(q, p, g, eps, inv_mass)
        e = eps[:, None]
        rows = active.nonzero().flatten()
        if self.kernels.row_value_and_grad is not None and rows.numel() <= self.compact * q.shape[0]:
            e_a = e[rows]  # only the chains still building: the same arithmetic on their rows
            p_half = p[rows] - 0.5 * e_a * g[rows]
            q_a = q[rows] + e_a * inv_mass[rows] * p_half
            U_a, g_a = self._grad(q_a, rows)
            p_a = p_half - 0.5 * e_a * g_a
            return (q.index_copy(0, rows, q_a), p.index_copy(0, rows, p_a), g.index_copy(0, rows, g_a),
                    U.index_copy(0, rows, U_a))
        p_half = p - 0.5 * e * g
        q_new = torch.where(active[:, None], q + e * inv_mass * p_half, q)
        U_new, g_new = self._grad(q_new)
        p_new = torch.where(active[:, None], p_half - 0.5 * e * g_new, p)
        return (q_new, p_new, torch.where(active[:, None], g_new, g), torch.where(active, U_new, U))

    @staticmethod
    def _kinetic(p, inv_mass):
        return 0.5 * (p * p * inv_mass).sum(-1)

    def _momentum(self, inv_mass):
        return self.rng.randn(inv_mass.shape[1:], inv_mass.dtype) / inv_mass.sqrt()

    # ------------------------------------------------------------------- subtree
    def _subtree(self, q, p, g, U, eps, inv_mass, H0, depth, leaf_u, alive):
        """Build ``2**depth`` new leaves from ``(q, p, g)`` with signed step ``eps``, per chain
        (``leaf_u`` ``(2**depth, C)``: each leaf's uniform draw per chain, rows contiguous).

        Returns the subtree's proposal, its log weight (relative to ``H0``), momentum sum,
        first and last leaves, whether it turned or diverged, and its leapfrog statistics.
        """
        C = q.shape[0]
        dev, dt = q.device, q.dtype
        active = alive.clone()
        log_w = torch.full((C,), -math.inf, device=dev, dtype=dt)
        rho = torch.zeros_like(q)
        # copies, not the start's tensors: a compiled kernel is specialised to which inputs are one tensor
        prop_q, prop_U, prop_g, prop_H = q.clone(), U.clone(), g.clone(), torch.zeros_like(U)
        bad = torch.zeros(C, dtype=torch.bool, device=dev)
        diverging = torch.zeros_like(bad)
        n_steps = torch.zeros(C, dtype=torch.long, device=dev)
        sum_accept = torch.zeros(C, dtype=dt, device=dev)
        start: dict[int, tuple] = {}  # level -> (p, p_sharp, rho before) of the latest block's first leaf
        end: dict[int, tuple] = {}  # level -> (p, p_sharp) of the latest completed block's last leaf
        first = None
        for n in range(2**depth):
            rho_before_leaf = rho
            state = (log_w, leaf_u[n])
            tree = (prop_q, prop_g, prop_U, prop_H, rho, diverging, n_steps, sum_accept)
            if bool(active.all()):  # the leapfrog step and the leaf's bookkeeping in one call
                q, p, g, U, ps, div, ok, log_w, *tree = self.kernels.step(q, p, g, eps, inv_mass, H0, active, *state,
                                                                          *tree)
            else:
                q, p, g, U = self._leapfrog(q, p, g, U, eps, inv_mass, active)
                ps, div, ok, log_w, *tree = self.kernels.leaf(p, U, H0, inv_mass, active, *state, q, g, *tree)
            prop_q, prop_g, prop_U, prop_H, rho, diverging, n_steps, sum_accept = tree
            # checkpoints: leaf n opens a block of 2**k leaves where 2**k divides n
            for k in range(depth + 1):
                if n % 2**k == 0:
                    start[k] = (p, ps, rho_before_leaf)
            if n == 0:
                first = (p, ps)
            # U-turn checks of every block of 2**k leaves (k >= 1) that leaf n closes
            turn = torch.zeros_like(bad)
            for k in range(1, depth + 1):
                if (n + 1) % 2**k:
                    break
                _, ps_start, rho_before = start[k]
                p_mid, ps_mid, rho_mid = start[k - 1]  # first leaf of the block's second half
                p_last_half, ps_last_half = end[k - 1]  # last leaf of its first half
                turn |= self.kernels.block_turn(ps_start, ps, rho, rho_before, p_mid, ps_mid, rho_mid, p_last_half,
                                                ps_last_half)
            for k in range(depth + 1):
                if (n + 1) % 2**k == 0:
                    end[k] = (p, ps)
            turn &= ok
            bad |= div | turn
            active = active & ~(div | turn)
            if not bool(active.any()):
                break
        return {
            "q": prop_q, "U": prop_U, "g": prop_g, "H": prop_H, "log_w": log_w, "rho": rho,
            "first": first, "last": (q, p, g, U, inv_mass * p), "bad": bad, "diverging": diverging,
            "n_steps": n_steps, "sum_accept": sum_accept,
        }

    # ---------------------------------------------------------------- transition
    def transition(self, q, U, g, step_size, inv_mass):
        """One NUTS iteration for every chain: the new ``(q, U, g)`` and the iteration's statistics."""
        C = q.shape[0]
        dev, dt = q.device, q.dtype
        p = self._momentum(inv_mass)
        ps = inv_mass * p
        H0 = U + 0.5 * (p * ps).sum(-1)
        minus = [q, p, g, U, ps]
        plus = [q, p, g, U, ps]
        prop_q, prop_U, prop_g, prop_H = q, U, g, H0
        log_w = torch.zeros(C, device=dev, dtype=dt)
        rho = p.clone()
        done = torch.zeros(C, dtype=torch.bool, device=dev)
        diverging = torch.zeros_like(done)
        depth = torch.zeros(C, dtype=torch.long, device=dev)
        n_steps = torch.zeros(C, dtype=torch.long, device=dev)
        sum_accept = torch.zeros(C, dtype=dt, device=dev)
        for j in range(self.max_tree_depth):
            alive = ~done
            if not bool(alive.any()):
                break
            u = self.rng.masked_rand(2**j + 2, dt, alive)
            forward = u[:, 0] < 0.5
            sign = torch.where(forward, 1.0, -1.0).to(dt)
            near = _pick(forward, plus, minus)  # the end the new subtree grows from
            far = _pick(forward, minus, plus)
            sub = self._subtree(near[0], near[1], near[2], near[3], sign * step_size, inv_mass, H0, j,
                                u[:, 2:].t().clone(memory_format=torch.contiguous_format), alive)
            depth = torch.where(alive, j + 1, depth)
            n_steps += sub["n_steps"]
            sum_accept += sub["sum_accept"]
            diverging |= sub["diverging"]
            valid = alive & ~sub["bad"]
            # biased progressive sampling between the old tree and the new subtree
            take = valid & (torch.log(u[:, 1]) < sub["log_w"] - log_w)
            prop_q = torch.where(take[:, None], sub["q"], prop_q)
            prop_g = torch.where(take[:, None], sub["g"], prop_g)
            prop_U = torch.where(take, sub["U"], prop_U)
            prop_H = torch.where(take, sub["H"], prop_H)
            log_w = torch.where(valid, log_add_exp(log_w, sub["log_w"]), log_w)
            # the merged tree: new ends in the direction of travel, and its U-turn checks
            new_end = list(sub["last"])
            plus = _pick(forward & valid, new_end, plus)
            minus = _pick(~forward & valid, new_end, minus)
            rho_total = rho + sub["rho"]
            p_first, ps_first = sub["first"]
            turn = ~criterion(minus[4], plus[4], rho_total)
            turn |= ~criterion(far[4], ps_first, rho + p_first)
            turn |= ~criterion(near[4], new_end[4], near[1] + sub["rho"])
            rho = torch.where(valid[:, None], rho_total, rho)
            done = done | sub["bad"] | (valid & turn)
        stats = {
            "diverging": diverging,
            "tree_depth": depth,
            "n_steps": n_steps,
            "acceptance_rate": sum_accept / n_steps.clamp(min=1).to(dt),
            "energy": prop_H,
        }
        return prop_q, prop_U, prop_g, stats

    # -------------------------------------------------------------- step size
    def reasonable_step_size(self, q, U, g, step_size, inv_mass, max_iter: int = 100) -> torch.Tensor:
        """Stan's initial step size per chain: double or halve until one leapfrog step's acceptance
        ``exp(H0 - H)`` crosses 0.8. One momentum draw per chain, reused."""
        p = self._momentum(inv_mass)
        H0 = U + self._kinetic(p, inv_mass)
        everyone = torch.ones_like(U, dtype=torch.bool)
        log_target = math.log(0.8)

        def delta(eps):
            _, p1, _, U1 = self._leapfrog(q, p, g, U, eps, inv_mass, everyone)
            d = H0 - (U1 + self._kinetic(p1, inv_mass))
            return torch.where(torch.isnan(d), torch.full_like(d, -math.inf), d)

        d = delta(step_size)
        up = d > log_target
        active = everyone.clone()
        for _ in range(max_iter):
            step_size = torch.where(active, torch.where(up, step_size * 2, step_size / 2), step_size)
            d = delta(step_size)
            stop = torch.where(up, ~(d > log_target), ~(d < log_target))
            stop |= (step_size < 1e-8) | (step_size > 1e7)
            active &= ~stop
            if not bool(active.any()):
                break
        return step_size.clamp(1e-8, 1e7)

    # -------------------------------------------------------------------- run
    def sample(self, q0: torch.Tensor | None, warmup: int, num_samples: int, thin: int = 1,
               progress: bool = False, step_size: float = 1.0, checkpoint=None, fingerprint: dict | None = None,
               started: float | None = None) -> SamplerOutput:
        """Warm up (adapting step size and mass matrix per chain), then keep every ``thin``-th of
        ``num_samples`` draws.

        ``checkpoint`` (an :class:`inference.training.Checkpoint`): save the whole state (positions,
        adaptation, draws and statistics so far, every chain's random stream) at iteration
        boundaries, at least ``checkpoint.every`` seconds apart, and continue from a saved state
        when there is one (``q0`` is then not used and may be ``None``). On the same device, with
        the same kernels (eager, or compiled in both segments), a continued run gives the draws of
        an uninterrupted one to the last bit. A saved state is refused unless the schedule, the
        chains' seeds, the tree depth, target acceptance, divergence threshold, the positions'
        shape, dtype and device type, and the caller's ``fingerprint`` (anything else the run
        depends on, e.g. a hash of the data) all match. ``started``: the
        ``time.perf_counter()`` at which the caller's fit began; the seconds of every segment up to
        its last save are kept in the checkpoint and returned as ``seconds_before``. The file
        stays after the last iteration; the caller removes it once the results are safe.
        """
        saved = checkpoint.load() if checkpoint is not None else None
        if saved is None and q0 is None:
            raise ValueError("BatchedNUTS.sample: q0 is needed when there is no saved state to continue from")
        started = time.perf_counter() if started is None else started
        names = ("diverging", "tree_depth", "n_steps", "acceptance_rate", "energy", "step_size")
        C, D = len(self.rng.generators), (q0 if saved is None else saved["q"]).shape[1]
        dev, dt = self.rng.device, (q0 if saved is None else saved["q"]).dtype
        identity = None if checkpoint is None else self._fingerprint(C, D, dt, dev, warmup, num_samples, thin,
                                                                     fingerprint)
        if saved is None:
            q = q0.detach().clone()
            U, g = self._grad(q)
            inv_mass = torch.ones((C, D), device=dev, dtype=dt)
            eps = torch.full((C,), float(step_size), device=dev, dtype=dt)
            if warmup:
                eps = self.reasonable_step_size(q, U, g, eps, inv_mass)
            averaging = DualAveraging(eps, self.target_accept)
            welford, window_end = None, None
            kept = math.ceil(num_samples / thin)
            draws = torch.empty((C, kept, D), device=dev, dtype=dt)
            stats = {name: [] for name in names}
            warm_div = torch.zeros(C, dtype=torch.long, device=dev)
            first = 0
            seconds_before = 0.0
        else:
            (first, q, U, g, inv_mass, eps, averaging, welford, window_end, draws, stats,
             warm_div) = self._restore(saved, identity, num_samples, thin)
            seconds_before = saved["seconds"]
        windows = adaptation_windows(warmup)
        window_of = {s: e for s, e in windows}
        bar = progress_bar(warmup + num_samples, "NUTS", progress)
        bar.update(first)
        last_save = time.monotonic()
        for it in range(first, warmup + num_samples):
            q, U, g, st = self.transition(q, U, g, eps, inv_mass)
            if it < warmup:
                warm_div += st["diverging"].long()
                eps = averaging.update(st["acceptance_rate"])
                if it in window_of:
                    welford, window_end = Welford((C, D), dt, dev), window_of[it]
                if welford is not None:
                    welford.add(q)
                    if it + 1 == window_end:
                        inv_mass = welford.regularized_variance()
                        welford = None
                        eps = self.reasonable_step_size(q, U, g, eps, inv_mass)
                        averaging.restart(eps)
                if it + 1 == warmup:
                    eps = averaging.final()
            else:
                s = it - warmup
                if s % thin == 0:
                    draws[:, s // thin] = q
                for name in names[:-1]:
                    stats[name].append(st[name])
                stats["step_size"].append(eps)
            bar.update(1)
            if checkpoint is not None and time.monotonic() - last_save >= checkpoint.every:
                filled = math.ceil(max(0, it + 1 - warmup) / thin)
                checkpoint.save({
                    "sampler": "BatchedNUTS", "identity": identity, "iteration": it + 1,
                    "total_iterations": warmup + num_samples,
                    "seconds": seconds_before + time.perf_counter() - started,
                    "q": q, "U": U, "g": g, "inv_mass": inv_mass, "eps": eps,
                    "averaging": dict(vars(averaging)), "welford": None if welford is None else dict(vars(welford)),
                    "window_end": window_end, "draws": draws[:, :filled],
                    "stats": {name: torch.stack(v, 1) if v else None for name, v in stats.items()},
                    "warm_div": warm_div, "generators": [gen.get_state() for gen in self.rng.generators],
                })
                last_save = time.monotonic()
        bar.close()
        stacked = {name: torch.stack(v, 1) if v else torch.empty((C, 0), device=dev) for name, v in stats.items()}
        return SamplerOutput(draws, stacked, eps, inv_mass, warm_div, None if saved is None else first, seconds_before)

    def _fingerprint(self, C, D, dtype, device, warmup, num_samples, thin, extra) -> dict:
        """What a saved state must have been saved by: this sampler's settings and the run's."""
        return {
            "schedule": (warmup, num_samples, thin), "chains": C, "dimension": D, "dtype": str(dtype),
            "device": torch.device(device).type, "seeds": list(self.rng.seeds), "max_tree_depth": self.max_tree_depth,
            "target_accept": self.target_accept, "max_energy_error": self.kernels.max_energy_error,
            **(extra or {}),
        }

    def _restore(self, saved: dict, identity: dict, num_samples: int, thin: int):
        """A checkpoint's state, checked against this run's ``identity`` (:meth:`_fingerprint`) and put
        back (the chains' streams too)."""
        if saved.get("sampler") != "BatchedNUTS":
            raise InvalidParameterError("the checkpoint is not a NUTS sampler's; delete it")
        if "identity" not in saved:
            raise InvalidParameterError("the checkpoint was saved by an earlier version of the NUTS sampler, which "
                                        "did not record what it belongs to; delete it to start afresh")
        differ = sorted(k for k in set(identity) | set(saved["identity"]) if identity.get(k) != saved["identity"].get(k))
        if differ:
            shown = ", ".join(f"{k} {saved['identity'].get(k)!r} there, {identity.get(k)!r} here" for k in differ)
            raise InvalidParameterError(f"the checkpoint belongs to another run ({shown}); delete it to start afresh")
        C, D = saved["q"].shape
        dev = self.rng.device
        for gen, state in zip(self.rng.generators, saved["generators"]):
            gen.set_state(state)
        on = {k: saved[k].to(dev) for k in ("q", "U", "g", "inv_mass", "eps", "warm_div")}
        kept = saved["draws"].to(dev)
        draws = torch.empty((C, math.ceil(num_samples / thin), D), device=dev, dtype=kept.dtype)
        draws[:, : kept.shape[1]] = kept
        def rebuilt(cls, fields):  # an adaptation object from its saved attributes
            obj = cls.__new__(cls)
            obj.__dict__.update({k: v.to(dev) if torch.is_tensor(v) else v for k, v in fields.items()})
            return obj

        averaging = rebuilt(DualAveraging, saved["averaging"])
        welford = None if saved["welford"] is None else rebuilt(Welford, saved["welford"])
        stats = {name: [] if t is None else list(t.to(dev).unbind(1)) for name, t in saved["stats"].items()}
        return (saved["iteration"], on["q"], on["U"], on["g"], on["inv_mass"], on["eps"], averaging, welford,
                saved["window_end"], draws, stats, on["warm_div"])
