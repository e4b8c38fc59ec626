"""The arithmetic of one leapfrog step of :class:`inference.hmc.BatchedNUTS`, eager or compiled.

Per leaf of a trajectory the sampler evaluates the potential and its gradient, moves
the chains by one leapfrog step, updates the subtree's bookkeeping (energy error,
divergence, acceptance statistic, multinomial proposal, momentum sum) and checks the
U-turn criterion of every block the leaf closes. In eager PyTorch each of these is a
few dozen small tensor operations, and for a few chains on a CPU their dispatch costs
as much as the arithmetic. :class:`Kernels` holds them as plain functions of tensors;
:meth:`Kernels.compiled_at` gives the same functions compiled by inductor (without
``torch.compile``'s per-call guards where it can, :func:`inference.compiled.compile_static`), with
the gradient taken by ``torch.func.grad`` inside the compiled graph (one graph for the
potential, its gradient and the leapfrog update, instead of a compiled forward, a
compiled backward and the autograd engine between them).

Measured on boston 13-50-1 (one chain, one thread, ``benchmarks/nuts_ess.py``'s model,
beside two benchmark jobs): the potential and its gradient took 1.19 ms eager, 0.35 ms
compiled through autograd and 0.16-0.18 ms compiled with ``torch.func.grad``; a whole leaf
of a tree (leapfrog step, bookkeeping, U-turn checks) 0.31 ms with the leapfrog step and
the bookkeeping in one compiled call (:func:`step`), 0.35 ms in two. Compiled without
``torch.compile``'s per-call guards (:func:`inference.compiled.compile_static`), the whole
leaf took 0.23 ms against 0.33 ms through ``torch.compile`` (same machine, 2026-12-01); at 20
chains the arithmetic dominates (about 1.5 ms per leaf either way).

Compiled graphs are specialised to their inputs' shapes and strides (and, through
``torch.compile``, aliasing), so the sampler passes each leaf's draws as a contiguous row
and the proposal as copies of the start (else each tree depth would compile a graph of its
own, or a static kernel would copy its inputs), and each :class:`Kernels` compiles functions
with code objects of their own (torch.compile keeps at most ``recompile_limit`` graphs per
function, then runs eager code).

The eager kernels are the arithmetic the sampler always did, operation for operation,
so eager results do not change. Compiled kernels may round differently in the last bit
(inductor fuses and reorders), so a compiled run is reproducible against compiled runs,
not against eager ones; :meth:`Kernels.compiled_at` checks every compiled function
once against the eager one, with the kinds of inputs the sampler passes, and falls back
to eager with a warning when compilation fails or disagrees.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch

from inference.compiled import agree, compile_static, own_code, quiet_compiler

#: ``potential(q) -> U``: positions ``(C, D)`` to potential energies ``(C,)``, differentiable.
Potential = Callable[[torch.Tensor], torch.Tensor]
#: ``row_potential(q, rows) -> U``: the same for a subset of the chains, ``q`` of shape ``(A, D)``
#: holding the positions of chains ``rows`` ``(A,)`` (indices into the ``C`` chains).
RowPotential = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

MAX_ENERGY_ERROR = 1000.0


def potential_and_grad(potential: Potential, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``U(q)`` and ``dU/dq`` for every chain (the chains are independent: the gradient of the sum)."""
    with torch.enable_grad():
        q = q.detach().requires_grad_(True)
        U = potential(q)
        (grad,) = torch.autograd.grad(U.sum(), q)
    return U.detach(), grad


def functional_value_and_grad(potential: Callable, q: torch.Tensor, *args) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`potential_and_grad` through ``torch.func.grad``, which ``torch.compile`` traces into the
    potential's own graph (``args`` are passed on to ``potential``)."""

    def total(x):
        U = potential(x, *args)
        return U.sum(), U

    g, U = torch.func.grad(total, has_aux=True)(q)
    return U.detach(), g


def finite(U: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A non-finite ``U`` becomes ``inf`` with a zero gradient (the sampler's divergence)."""
    bad = ~torch.isfinite(U)
    return torch.where(bad, torch.full_like(U, math.inf), U), torch.where(bad[:, None], torch.zeros_like(g), g)


def log_add_exp(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``log(exp(a) + exp(b))``, rounded the same way for every element whatever the tensor's length.

    ``torch.logaddexp``'s CPU kernel rounds differently in its vectorised loop and in its
    scalar loop for the elements past the last full vector, so the same chain's weight could
    differ in the last bit between a batch of chains and the chain alone (measured on an AMD
    EPYC with AVX2: 222 of 6,000 float64 values differed between tensors of 8 and of 1
    element; ``exp`` and ``log1p`` agreed in all). A chain's trajectory amplifies such a bit
    within a few dozen iterations. Both ``-inf`` gives ``-inf``.
    """
    m = torch.maximum(a, b)
    out = m + torch.log1p(torch.exp(-(a - b).abs()))
    return torch.where(m == -math.inf, m, out)


def criterion(ps_a: torch.Tensor, ps_b: torch.Tensor, rho: torch.Tensor) -> torch.Tensor:
    """The generalized no-U-turn criterion per chain: true while the span has not turned."""
    return ((ps_a * rho).sum(-1) > 0) & ((ps_b * rho).sum(-1) > 0)


def leaf(p, U, H0, inv_mass, active, log_w, u, q, g, prop_q, prop_g, prop_U, prop_H, rho, diverging, n_steps,
         sum_accept, max_energy_error: float):
    """The subtree's bookkeeping for a new leaf ``(q, p, g, U)`` of every chain (``u``: the leaf's
    uniform draw per chain): energy error and divergence, the acceptance statistic, multinomial
    sampling of the proposal (the leaf replaces it with probability ``w_leaf / w_subtree``) and
    the momentum sum. Returns ``ps = M^-1 p``, ``div``, ``ok`` (active and not diverging) and the
    updated ``log_w, prop_q, prop_g, prop_U, prop_H, rho, diverging, n_steps, sum_accept``."""
    ps = inv_mass * p
    H = U + 0.5 * (p * ps).sum(-1)
    dH = (H - H0).nan_to_num(nan=math.inf)
    div = active & (dH > max_energy_error)
    diverging = diverging | div
    n_steps = n_steps + active.long()
    sum_accept = sum_accept + torch.exp(-dH).clamp(max=1.0) * active
    ok = active & ~div
    new_log_w = log_add_exp(log_w, -dH)
    take = ok & (torch.log(u) < -dH - new_log_w)
    prop_q = torch.where(take[:, None], q, prop_q)
    prop_g = torch.where(take[:, None], g, prop_g)
    prop_U = torch.where(take, U, prop_U)
    prop_H = torch.where(take, H, prop_H)
    log_w = torch.where(ok, new_log_w, log_w)
    rho = torch.where(ok[:, None], rho + p, rho)
    return ps, div, ok, log_w, prop_q, prop_g, prop_U, prop_H, rho, diverging, n_steps, sum_accept


def block_turn(ps_start, ps, rho, rho_before, p_mid, ps_mid, rho_mid, p_last_half, ps_last_half):
    """Whether a block of leaves has turned: the criterion over the whole block (first leaf
    ``ps_start``, last ``ps``, momentum sum ``rho - rho_before``) and the two checks across the
    merge of its halves (the first half plus the second's first leaf, the first's last leaf plus
    the second half)."""
    turn = ~criterion(ps_start, ps, rho - rho_before)
    turn |= ~criterion(ps_start, ps_mid, rho_mid - rho_before + p_mid)
    turn |= ~criterion(ps_last_half, ps, p_last_half + rho - rho_mid)
    return turn


def leapfrog(value_and_grad, q, p, g, eps, inv_mass):
    """One leapfrog step of signed size ``eps`` ``(C,)`` for every chain: the new ``(q, p, g, U)``."""
    e = eps[:, None]
    p_half = p - 0.5 * e * g
    q_new = q + e * inv_mass * p_half
    U_new, g_new = finite(*value_and_grad(q_new))
    return q_new, p_half - 0.5 * e * g_new, g_new, U_new


def step(value_and_grad, q, p, g, eps, inv_mass, H0, active, log_w, u, prop_q, prop_g, prop_U, prop_H, rho,
         diverging, n_steps, sum_accept, max_energy_error: float):
    """:func:`leapfrog` of every chain then :func:`leaf`: the new ``(q, p, g, U)`` followed by
    :func:`leaf`'s outputs (one compiled call per leaf where every chain is still building)."""
    q, p, g, U = leapfrog(value_and_grad, q, p, g, eps, inv_mass)
    return (q, p, g, U) + leaf(p, U, H0, inv_mass, active, log_w, u, q, g, prop_q, prop_g, prop_U, prop_H, rho,
                               diverging, n_steps, sum_accept, max_energy_error)


class Kernels:
    """The sampler's per-step functions for a ``potential`` (and optionally its ``row_potential``).

    ``value_and_grad(q)`` and ``row_value_and_grad(q, rows)`` (``None`` without a row potential)
    give ``U`` and its gradient as computed; ``leapfrog(q, p, g, eps, inv_mass)`` moves all chains
    (a non-finite ``U`` comes back as ``inf`` with a zero gradient); ``leaf(...)``,
    ``step(...)`` (without the ``value_and_grad`` argument) and ``block_turn(...)`` are the
    functions above; ``max_energy_error`` is the divergence threshold ``leaf`` applies.
    ``compiled`` says whether they are compiled (by inductor, see :meth:`compiled_at`).
    """

    compiled = False

    def __init__(self, potential: Potential, row_potential: RowPotential | None = None,
                 max_energy_error: float = MAX_ENERGY_ERROR):
        def value_and_grad(q):
            return potential_and_grad(potential, q)

        self.max_energy_error = max_energy_error
        self.value_and_grad = value_and_grad
        self.row_value_and_grad = None
        if row_potential is not None:
            self.row_value_and_grad = lambda q, rows: potential_and_grad(lambda x: row_potential(x, rows), q)
        self.leapfrog = lambda q, p, g, eps, inv_mass: leapfrog(value_and_grad, q, p, g, eps, inv_mass)
        self.leaf = lambda *a: leaf(*a, max_energy_error)
        self.step = lambda *a: step(value_and_grad, *a, max_energy_error)
        self.block_turn = block_turn

    @classmethod
    def compiled_at(cls, q: torch.Tensor, potential: Potential, row_potential: RowPotential | None = None,
                    max_energy_error: float = MAX_ENERGY_ERROR, stacklevel: int = 2) -> Kernels:
        """Compiled kernels, each compiled and checked against the eager one at positions ``q``
        ``(C, D)`` with the kinds of inputs the sampler passes (so the graphs it runs are the ones
        checked): the potential and gradient of all rows and of subsets of one and of two rows,
        the leapfrog step, a leaf's bookkeeping alone and fused with the step, and the U-turn
        check of a two-leaf block (which passes tensors twice) and of a longer one. The eager
        kernels, with a ``RuntimeWarning``, when compilation fails, a check disagrees beyond
        float rounding, or no row of ``q`` has a finite potential to check at.

        The full batch's kernels (every call has all ``C`` rows) compile for those shapes
        without ``torch.compile``'s per-call guards (:func:`inference.compiled.compile_static`;
        by ``torch.compile`` where tracing them that way fails); the row potential compiles with
        ``torch.compile`` and dynamic shapes (one graph for a single row, one for any other number).
        """
        eager = cls(potential, row_potential, max_energy_error)
        out = cls(potential, row_potential, max_energy_error)
        C = q.shape[0]
        U, g = eager.value_and_grad(q)
        finite_rows = (torch.isfinite(U) & torch.isfinite(g).all(-1)).nonzero().flatten()
        if finite_rows.numel() == 0:
            warnings.warn("NUTS(compile=True): the potential is not finite at any position the compiled kernels "
                          "would be checked at; sampling with the eager potential", RuntimeWarning,
                          stacklevel=stacklevel + 1)
            return eager
        pick = finite_rows[torch.arange(C) % finite_rows.numel()]  # every row finite, C rows as the sampler's
        q, U, g = q[pick], U[pick], g[pick]
        # inputs as the sampler makes them: fresh momenta, a leaf's draws as a row of a contiguous
        # (leaves, C) tensor, the proposal a copy of the start, subsets of rows from nonzero()
        gen = torch.Generator(device=q.device).manual_seed(0)
        p = torch.randn(q.shape, generator=gen, device=q.device, dtype=q.dtype)
        ones = torch.ones_like(q)
        eps = torch.full((C,), 1e-3, device=q.device, dtype=q.dtype)
        H0 = U + 0.5 * (p * p).sum(-1)
        active = torch.ones(C, dtype=torch.bool, device=q.device)
        leaf_state = (H0, active, torch.full_like(U, -math.inf), torch.full((2, C), 0.5, device=q.device,
                      dtype=q.dtype)[0])
        tree = (q.clone(), g.clone(), U.clone(), torch.zeros_like(U), torch.zeros_like(q),
                torch.zeros_like(active), torch.zeros(C, dtype=torch.long, device=q.device), torch.zeros_like(U))
        q1, p1, g1, U1 = eager.leapfrog(q, p, g, eps, ones)
        # U-turn checks: momenta p, p_sharp and sums before each leaf of a block of two leaves (its
        # first leaf is the last of the first half, its second the second half's first: the sampler
        # passes those tensors twice) and of a block of four (all distinct)
        pa, pb, pc, pd, ra, rc = (torch.randn(q.shape, generator=gen, device=q.device, dtype=q.dtype) for _ in range(6))
        psa, psb, psc, psd = (ones * x for x in (pa, pb, pc, pd))
        turn_two = (psa, psb, ra + pa + pb, ra, pb, psb, ra + pa, pa, psa)
        turn_long = (psa, psd, ra + pa + pb + pc + pd, ra, pc, psc, rc, pb, psb)
        checks = [("value_and_grad", (q,)), ("leapfrog", (q, p, g, eps, ones)),
                  ("step", (q, p, g, eps, ones) + leaf_state + tree),
                  ("leaf", (p1, U1) + leaf_state[:1] + (ones,) + leaf_state[1:] + (q1, g1) + tree),
                  ("block_turn", turn_two), ("block_turn", turn_long)]
        if row_potential is not None:
            for n in sorted({1, min(2, C)}):
                rows = active[:n].nonzero().flatten()
                checks.append(("row_value_and_grad", (q[:n].clone(), rows)))

        def vg(x):
            return functional_value_and_grad(potential, x)

        def row_vg(x, rows):
            return functional_value_and_grad(row_potential, x, rows)

        def compiled(fn, dynamic=False):
            with quiet_compiler():
                return torch.compile(own_code(fn), dynamic=dynamic)

        def static(fn, example):
            """Every call has the full batch: compiled for those shapes without torch.compile's
            guards (:func:`inference.compiled.compile_static`), or by torch.compile where that fails."""
            with quiet_compiler():
                try:
                    return compile_static(fn, example)
                except Exception:  # noqa: BLE001 - e.g. control flow on values: torch.compile handles it
                    return compiled(fn)

        example = dict(checks[:4])
        try:
            out.value_and_grad = static(vg, example["value_and_grad"])
            out.leapfrog = static(lambda q, p, g, eps, inv_mass: leapfrog(vg, q, p, g, eps, inv_mass),
                                  example["leapfrog"])
            out.leaf = static(lambda *a: leaf(*a, max_energy_error), example["leaf"])
            out.step = static(lambda *a: step(vg, *a, max_energy_error), example["step"])
            out.block_turn = static(block_turn, turn_long)
            if row_potential is not None:
                out.row_value_and_grad = compiled(row_vg, dynamic=True)
            with quiet_compiler():
                results = [(name, getattr(out, name)(*args), getattr(eager, name)(*args)) for name, args in checks]
        except Exception as err:  # inductor needs a C++ compiler (CPU) or Triton (GPU)
            warnings.warn(f"NUTS(compile=True): torch.compile failed ({type(err).__name__}: {str(err)[:200]}); "
                          "sampling with the eager potential", RuntimeWarning, stacklevel=stacklevel + 1)
            return eager
        for name, fast, slow in results:
            if not agree(fast, slow):
                warnings.warn(f"NUTS(compile=True): the compiled {name} disagrees with the eager one beyond float "
                              "rounding; sampling with the eager potential", RuntimeWarning, stacklevel=stacklevel + 1)
                return eager
        out.compiled = True
        return out
