"""The batched NUTS (inference/hmc.py), the direct log density it samples, and the batched engine.

Targets with known answers (a correlated Gaussian, Bayesian linear regression, the
funnel) are checked within Monte Carlo error, measured by ArviZ's effective sample
sizes; a small network is checked against Pyro's NUTS; replicas and chains are checked
to move exactly as they would alone. Runs are kept short: this file takes well under a
minute on two cores.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from pyro import poutine

import bnn_priors as bp
from bnn_priors.errors import InvalidParameterError
from inference import NUTS
from inference.hmc import BatchedNUTS, ChainRandom, adaptation_windows, chain_seeds
from inference.hmc_kernels import log_add_exp
from inference.network_density import NetworkDensity
from inference.nuts import _reparametrized, ess
from inference.training import Checkpoint
from models import BayesianMLP, BayesianResNet, GaussianLikelihood

CPU = torch.device("cpu")


def _sample(U, D, seeds=(0,), chains=4, warmup=150, draws=300, depth=6, q0=None):
    rng = ChainRandom(chain_seeds(list(seeds), chains), CPU)
    q0 = torch.zeros(len(seeds) * chains, D, dtype=torch.float64) if q0 is None else q0
    return BatchedNUTS(U, rng, max_tree_depth=depth).sample(q0, warmup, draws)


def test_finished_chains_are_not_recomputed():
    """With a row potential, a leapfrog step with at most 3/4 of the chains still building
    evaluates only theirs; the draws are those of the full-batch sampler."""
    scales = torch.tensor([0.1, 1.0, 5.0], dtype=torch.float64)

    def U(q):
        return 0.5 * ((q / scales) ** 2).sum(-1) + 0.1 * (q**4).sum(-1)

    sizes = []

    def U_rows(q, rows):
        sizes.append(int(rows.numel()))
        return U(q)

    seeds = chain_seeds([7, 11], 2)
    q0 = torch.arange(12, dtype=torch.float64).reshape(4, 3) / 10
    full = BatchedNUTS(U, ChainRandom(seeds, CPU), max_tree_depth=5).sample(q0, 30, 20)
    compact = BatchedNUTS(U, ChainRandom(seeds, CPU), max_tree_depth=5, row_potential=U_rows).sample(q0, 30, 20)
    assert sizes and max(sizes) <= 3 and min(sizes) >= 1
    assert torch.equal(full.draws, compact.draws)
    for name in ("tree_depth", "n_steps", "acceptance_rate", "energy"):
        assert torch.equal(full.stats[name], compact.stats[name]), name


def _mc_z(draws: torch.Tensor, expected_mean: torch.Tensor) -> np.ndarray:
    """Per coordinate: (sample mean - expected) / its Monte Carlo standard error (ESS-based)."""
    a = draws.numpy()  # (C, S, D)
    n_eff = ess(a, "bulk")
    se = a.reshape(-1, a.shape[-1]).std(0) / np.sqrt(n_eff)
    return (a.reshape(-1, a.shape[-1]).mean(0) - expected_mean.numpy()) / se


# ------------------------------------------------------------------ the sampler
def test_adaptation_windows_are_stans():
    assert adaptation_windows(1000) == [(75, 100), (100, 150), (150, 250), (250, 450), (450, 950)]
    assert adaptation_windows(200) == [(75, 100), (100, 150)]
    assert adaptation_windows(100) == [(15, 90)]  # 15% / 75% / 10%
    assert adaptation_windows(19) == []


def test_correlated_gaussian_mean_and_variance_within_mc_error():
    D = 10
    g = torch.Generator().manual_seed(0)
    A = torch.randn(D, D, generator=g, dtype=torch.float64)
    cov = A @ A.T / D + 0.1 * torch.eye(D, dtype=torch.float64)
    mean = torch.linspace(-2, 2, D, dtype=torch.float64)
    prec = torch.linalg.inv(cov)

    def U(q):
        d = q - mean
        return 0.5 * ((d @ prec) * d).sum(-1)

    out = _sample(U, D, warmup=100, draws=150)
    assert int(out.stats["diverging"].sum()) == 0
    assert np.abs(_mc_z(out.draws, mean)).max() < 4.5
    x = out.draws.reshape(-1, D)
    # the variance of a sample variance of a Gaussian is 2 sigma^4 / n_eff
    n_eff = ess(out.draws.numpy(), "bulk")
    z_var = (x.var(0) - cov.diag()).numpy() / (np.sqrt(2 / n_eff) * cov.diag().numpy())
    assert np.abs(z_var).max() < 4.5
    # adaptation reached a sensible regime: target 0.8, trees far from the depth limit
    assert 0.7 < float(out.stats["acceptance_rate"].mean()) < 0.97
    assert float(out.stats["tree_depth"].double().mean()) < 5


def test_funnel_non_centered_no_divergences_centered_diverges():
    """Neal's funnel, v ~ N(0, 3^2), x_i ~ N(0, e^v): non-centred (x = e^{v/2} z) it samples
    cleanly and recovers v's law; centred, the divergence check fires."""
    D = 10

    def non_centered(q):
        return 0.5 * (q[:, 0] / 3) ** 2 + 0.5 * (q[:, 1:] ** 2).sum(-1)

    def centered(q):
        v, x = q[:, 0], q[:, 1:]
        return 0.5 * (v / 3) ** 2 + 0.5 * (x**2).sum(-1) * torch.exp(-v) + 0.5 * (D - 1) * v

    out = _sample(non_centered, D, seeds=(1,), warmup=100, draws=150)
    assert int(out.stats["diverging"].sum()) == 0  # after warm-up (early warm-up tries long steps)
    v = out.draws[:, :, :1]
    assert abs(float(_mc_z(v, torch.zeros(1))[0])) < 4.5
    assert 0.75 < float(v.var()) / 9 < 1.25
    # centred, from the neck (v = -4, where x has scale e^-2) with a unit step: the energy error explodes
    neck = torch.zeros(4, D, dtype=torch.float64)
    neck[:, 0] = -4.0
    bad = _sample(centered, D, seeds=(1,), warmup=0, draws=20, depth=5, q0=neck)
    assert int(bad.stats["diverging"].sum()) > 0 and not bool(out.stats["diverging"].any())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_log_add_exp_rounds_alike_in_a_batch_and_alone(dtype):
    """The multinomial weights' log-sum: within 2 ulp of torch.logaddexp, -inf handled, and
    each element's value the same in a tensor of 64 as alone (torch.logaddexp's is not on AVX2)."""
    g = torch.Generator().manual_seed(3)
    a = (torch.randn(4096, generator=g, dtype=torch.float64) * 4).to(dtype)
    b = (torch.randn(4096, generator=g, dtype=torch.float64) * 4).to(dtype)
    a[::97], b[::89] = -math.inf, -math.inf
    got = log_add_exp(a, b)
    ref = torch.logaddexp(a.double(), b.double())
    finite = torch.isfinite(ref)
    assert torch.equal(torch.isfinite(got), finite)
    assert bool((got[~finite] == -math.inf).all())
    ulp = torch.finfo(dtype).eps * ref[finite].abs().clamp_min(1.0)
    assert float(((got[finite].double() - ref[finite]).abs() / ulp).max()) <= 2.0
    batched = torch.cat([log_add_exp(a[k:k + 64], b[k:k + 64]) for k in range(0, 4096, 64)])
    alone = torch.cat([log_add_exp(a[k:k + 1], b[k:k + 1]) for k in range(4096)])
    assert torch.equal(batched, alone) and torch.equal(batched, got)


def test_chain_moves_as_it_would_alone():
    """Random numbers per chain, consumed by the chain's own trajectory only: a chain
    sampled beside others (with different trees and step sizes) gives exactly its draws alone.

    The potential is written with operations that round alike in a batch and alone: on an
    AVX2 CPU ``q**4`` (like ``torch.logaddexp``, ``sigmoid`` and ``softplus``) takes another
    code path for the elements past the last full vector, and a last-bit difference grows
    into a different chain; ``(q*q)**2`` squares twice, exactly as alone."""
    scales = torch.tensor([0.1, 1.0, 5.0], dtype=torch.float64)

    def U(q):
        return 0.5 * ((q / scales) ** 2).sum(-1) + 0.1 * ((q * q) ** 2).sum(-1)

    rng_seeds = chain_seeds([7, 11], 2)
    q0 = torch.arange(12, dtype=torch.float64).reshape(4, 3) / 10
    together = BatchedNUTS(U, ChainRandom(rng_seeds, CPU), max_tree_depth=5).sample(q0, 30, 20)
    for c in (0, 3):
        alone = BatchedNUTS(U, ChainRandom([rng_seeds[c]], CPU), max_tree_depth=5).sample(q0[c:c + 1], 30, 20)
        assert torch.equal(alone.draws[0], together.draws[c])
        assert torch.equal(alone.stats["tree_depth"][0], together.stats["tree_depth"][c])
    assert not torch.equal(together.stats["tree_depth"][0], together.stats["tree_depth"][3])


# ----------------------------------------------------------- the log density
@pytest.mark.parametrize(
    "noise, structure, learned, noncentered",
    [("half-cauchy", "ard", True, True), ("gaussian", "ard-add", False, False),
     ("inverse-nakagami", "none", True, False), ("rayleigh", "add", False, True)],
)
def test_log_density_is_pyros_plus_jacobians(noise, structure, learned, noncentered):
    R, K = 2, 3
    lik = GaussianLikelihood() if learned else GaussianLikelihood(precision=4.0)
    model = BayesianResNet(3, 2, hidden=(4, 4), prior=[bp.prior(noise, structure), bp.prior(noise, structure),
                                                        bp.prior("normal")],
                           likelihood=lik, replicas=R).double()
    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(R, 7, 3, generator=g, dtype=torch.float64), torch.randn(R, 7, 2, generator=g, dtype=torch.float64)
    layers = {"layer0", "layer1"} if noncentered else set()
    density = NetworkDensity(model, X, y, layers)
    q = 0.5 * density.prior_draw(ChainRandom(chain_seeds([1, 2], K), CPU))
    ours = density.log_density(q).reshape(R, K)
    sites = density.sites(q)
    by_chain = density._by_chain(q)
    pyro_model = _reparametrized(model, {f"{name}.weight" for name in layers})
    positive = noise != "gaussian"
    for k in range(K):
        data = {name: v[:, k] for name, v in sites.items()}
        jacobian = torch.zeros(R, dtype=torch.float64)
        for block in density.blocks:
            u = block.take(by_chain)[:, k]
            if block.role == "weight" and block.layer in layers:
                data[f"{block.name}_decentered"] = u
                del data[block.name]
            if (block.role == "scale" and positive) or block.role == "precision":
                jacobian = jacobian + u.reshape(R, -1).sum(-1)  # log |d e^u / du| = u
        trace = poutine.trace(poutine.condition(pyro_model, data=data)).get_trace(X, y)
        trace.compute_log_prob()
        theirs = sum(node["log_prob"] for node in trace.nodes.values() if node["type"] == "sample")
        torch.testing.assert_close(ours[:, k], theirs + jacobian, rtol=1e-10, atol=1e-9)


@pytest.mark.parametrize("noise", ["inverse-nakagami", "rayleigh", "half-cauchy"])
def test_log_density_far_out_is_not_finite_rather_than_an_error(noise):
    """A leapfrog step far out (a divergence, the step-size search) can take a scale to 0 or inf:
    the density must then be -inf or NaN, which the sampler treats as a divergence."""
    model = BayesianMLP(1, 1, hidden=(3,), prior=bp.prior(noise))
    density = NetworkDensity(model, torch.zeros(1, 4, 1), torch.zeros(1, 4, 1), {"layer0", "output"})
    q = torch.zeros(2, density.dim)
    q[0], q[1] = 1e4, -1e4
    assert not torch.isfinite(density.log_density(q)).any()


# ----------------------------------------------------------------- the backend
def test_bayesian_linear_regression_matches_closed_form():
    """No hidden layer, fixed noise: the posterior of (w, b) is Gaussian in closed form."""
    g = torch.Generator().manual_seed(3)
    N, tau, bias_scale = 30, 25.0, 1.0
    X = torch.randn(N, 3, generator=g, dtype=torch.float64)
    y = X @ torch.tensor([0.5, -1.0, 0.0], dtype=torch.float64) + 0.3 + torch.randn(N, generator=g, dtype=torch.float64) / 5
    model = BayesianMLP(3, 1, hidden=(), prior=bp.prior("normal", sigma0=0.7), bias_scale=bias_scale,
                        likelihood=GaussianLikelihood(precision=tau)).double()
    post = NUTS(num_samples=150, warmup=100, max_tree_depth=4, progress=False, seed=4).fit(model, X, y)
    Phi = torch.cat([X, torch.ones(N, 1, dtype=torch.float64)], 1)
    prior_prec = torch.diag(torch.tensor([0.7**-2] * 3 + [bias_scale**-2], dtype=torch.float64))
    cov = torch.linalg.inv(tau * Phi.T @ Phi + prior_prec)
    mean = cov @ (tau * Phi.T @ y)
    chains = torch.cat([post.chains["output.weight"][:, :, 0, :, 0], post.chains["output.bias"][:, :, 0]], -1)
    assert post.info["divergences"] == 0
    assert np.abs(_mc_z(chains, mean)).max() < 4.5
    flat = chains.reshape(-1, 4)
    emp = torch.cov(flat.T)
    n_eff = float(np.min(ess(chains.numpy(), "bulk")))
    # Var of a sample covariance: (S_ij^2 + S_ii S_jj) / n
    se = ((cov**2 + torch.outer(cov.diag(), cov.diag())) / n_eff).sqrt()
    assert ((emp - cov).abs() / se).max() < 4.5


_BATCH_VS_ALONE = """
import sys, torch
import bnn_priors as bp
from inference import NUTS
from models import BayesianMLP, GaussianLikelihood
torch.set_num_threads(1)
g = torch.Generator().manual_seed(0)
R, seeds = 5, [3, 8, 13, 21, 34]
X = torch.rand(R, 23, 3, generator=g) * 3 - 1.5
y = torch.sin(2 * X[..., 0]) + X[..., 1] + 0.1 * torch.randn(R, 23, generator=g)
kw = dict(num_samples=12, warmup=25, num_chains=3, max_tree_depth=4, init_steps=20, progress=False)
def model(replicas):
    return BayesianMLP(3, 1, hidden=(7,), activation="tanh", prior=bp.prior("half-cauchy", "ard"),
                       likelihood=GaussianLikelihood(), replicas=replicas)
both = NUTS(seed=seeds, **kw).fit(model(R), X, y)
bad = []
for r, seed in enumerate(seeds):
    alone = NUTS(seed=seed, **kw).fit(model(1), X[r], y[r])
    bad += [f"{r}:{n}" for n, t in both.chains.items() if not torch.equal(t[:, :, r], alone.chains[n][:, :, 0])]
    bad += [f"{r}:{n}" for n, t in both.stats.items() if not torch.equal(t[:, :, r], alone.stats[n][:, :, 0])]
    bad += [f"{r}:divergences"] * (both.divergences[r] != alone.divergences[0])
print("MISMATCH " + " ".join(bad) if bad else "EQUAL")
"""


def test_replicas_in_a_batch_give_what_they_give_alone():
    """Replica r of a batch of 5 (3 chains each, seeds [3, 8, 13, 21, 34]) against the same
    replica fitted alone: the chains, their statistics and divergences are equal to the
    last bit, so no chain's trajectory depends on another's.

    Run with PyTorch's portable kernels (``ATEN_CPU_CAPABILITY=default``) and MKL's
    conditional numerical reproducibility (``MKL_CBWR=COMPATIBLE``). Without them two
    sources of last-bit rounding depend on the batch, and a chaotic trajectory amplifies
    that bit into other (equally valid) draws: with the SIMD kernels of an AVX2 or
    AVX-512 CPU, a transcendental function (``exp``, ``log``, ``tanh``) rounds an element
    of a kernel's vectorized body and one of its scalar tail differently, and which
    elements fall in the tail depends on the tensor's size, hence on how many chains
    share it; and MKL's matrix products round by the alignment of their operands in
    memory, which for replica r's data is offset by r times its size. With both
    pinned, what is left is what this test is about: any coupling between chains in the
    sampler's logic (measured: without the two settings replicas 1-3 differ from their
    fits alone, with them none does)."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, ATEN_CPU_CAPABILITY="default", MKL_CBWR="COMPATIBLE", OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", _BATCH_VS_ALONE], env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "EQUAL", out.stdout[-2000:]


def test_bounded_prior_draw_clips_scales_and_keeps_the_stream():
    """The MAP start: the same random numbers as the prior draw, the unconstrained scales and
    log precision clipped to [-2, 2], the non-centred z and the biases untouched."""
    model = BayesianMLP(3, 1, hidden=(40,), prior=bp.prior("half-cauchy", "ard"), likelihood=GaussianLikelihood())
    X, y = torch.zeros(1, 5, 3), torch.zeros(1, 5, 1)
    density = NetworkDensity(model, X, y, {"layer0", "output"})
    free = density.prior_draw(ChainRandom(chain_seeds([0], 8), CPU))
    bounded = density.prior_draw(ChainRandom(chain_seeds([0], 8), CPU), bound=2.0)
    for block in density.blocks:
        a, b = block.take(free), block.take(bounded)
        if block.role in ("scale", "precision"):
            assert torch.equal(b, a.clamp(-2.0, 2.0)), block.name
            assert bool((a.abs() > 2.0).any()) or block.role == "precision", block.name  # heavy tails do reach past 2
        else:
            assert torch.equal(a, b), block.name


def _compile_problem():
    g = torch.Generator().manual_seed(1)
    X = torch.rand(30, 2, generator=g) * 3 - 1.5
    y = torch.sin(2 * X[:, 0]) + X[:, 1] + 0.1 * torch.randn(30, generator=g)
    model = BayesianMLP(2, 1, hidden=(6,), prior=bp.prior("half-cauchy", "ard"), likelihood=GaussianLikelihood())
    return model, X, y


def test_compiled_kernels_equal_eager_to_float_rounding():
    """The compiled potential and gradient (full batch and subsets of rows), the fused leapfrog step,
    a leaf's bookkeeping and a block's U-turn check against the eager functions."""
    from inference.hmc_kernels import Kernels

    model, X, y = _compile_problem()
    density = NetworkDensity(model, X[None], y[None, :, None], {"layer0", "layer1"})
    q = density.prior_draw(ChainRandom(chain_seeds([0], 3), torch.device("cpu")))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a fallback to eager would warn
        try:
            fast = Kernels.compiled_at(q, density.potential, lambda x, rows: density.potential(x, 0 * rows))
        except RuntimeWarning as err:
            pytest.skip(f"torch.compile is not available here: {err}")
    assert fast.compiled
    slow = Kernels(density.potential, density.potential)
    g = torch.Generator().manual_seed(3)

    def close(a, b, rtol=1e-4):
        assert a.dtype == b.dtype and a.shape == b.shape
        if a.dtype == torch.bool or a.dtype == torch.long:
            assert torch.equal(a, b)
        else:
            assert torch.allclose(a, b, rtol=rtol, atol=rtol * float(b.abs().max().clamp_min(1.0)), equal_nan=True)

    for scale in (0.1, 1.0, 3.0):
        q = scale * torch.randn(3, density.dim, generator=g)
        for a, b in zip(fast.value_and_grad(q), slow.value_and_grad(q)):
            close(a, b)
        rows = torch.tensor([0, 0])  # two chains, both on replica 0
        for a, b in zip(fast.row_value_and_grad(q[:2], rows), slow.row_value_and_grad(q[:2], rows)):
            close(a, b)
        p, inv_mass = torch.randn(3, density.dim, generator=g), torch.rand(3, density.dim, generator=g) + 0.5
        eps = torch.tensor([0.01, -0.02, 0.005])
        U, grad = slow.value_and_grad(q)
        step_fast, step_slow = fast.leapfrog(q, p, grad, eps, inv_mass), slow.leapfrog(q, p, grad, eps, inv_mass)
        for a, b in zip(step_fast, step_slow):
            close(a, b)
        q1, p1, g1, U1 = step_slow
        H0 = U + 0.5 * (p * p * inv_mass).sum(-1) + torch.tensor([0.0, -2.0, -2000.0])  # the last one diverges
        args = (p1, U1, H0, inv_mass, torch.tensor([True, True, False]) | (scale > 1), torch.tensor([-0.5, -1.0, -2.0]),
                torch.tensor([0.3, 0.9, 0.5]), q1, g1, q, grad, U, H0, p, torch.zeros(3, dtype=torch.bool),
                torch.tensor([1, 2, 3]), torch.tensor([0.5, 0.25, 1.0]))
        for a, b in zip(fast.leaf(*args), slow.leaf(*args)):
            close(a, b)
        ps = [inv_mass * torch.randn(3, density.dim, generator=g) for _ in range(4)]
        rho = [torch.randn(3, density.dim, generator=g) for _ in range(3)]
        turn_args = (ps[0], ps[1], rho[0], rho[1], p1, ps[2], rho[2], p, ps[3])
        close(fast.block_turn(*turn_args), slow.block_turn(*turn_args))


@pytest.mark.parametrize("target", ["row_vg", "leaf", "block_turn"])
def test_compiled_kernels_fall_back_when_any_one_disagrees(monkeypatch, target):
    """Every compiled function is checked, not only the potential: a stand-in for torch.compile that
    returns the eager function, wrong in one kernel (the row potential, a leaf's bookkeeping or
    the U-turn check), makes compiled_at warn naming it and return the eager kernels."""
    from inference.hmc_kernels import Kernels

    def wrong(out):
        if isinstance(out, torch.Tensor):
            return ~out if out.dtype == torch.bool else out
        return (out[0] * 1.01,) + tuple(out[1:])

    def fake_compile(fn, dynamic=False):
        def run(*args):
            out = fn(*args)
            hit = {"row_vg": fn.__name__ == "row_vg", "leaf": isinstance(out, tuple) and len(out) == 12,
                   "block_turn": fn.__name__ == "block_turn"}[target]
            return wrong(out) if hit else out
        return run

    model, X, y = _compile_problem()
    density = NetworkDensity(model, X[None], y[None, :, None], {"layer0", "layer1"})
    q = density.prior_draw(ChainRandom(chain_seeds([0], 3), torch.device("cpu")), bound=2.0)
    monkeypatch.setattr(torch, "compile", fake_compile)
    monkeypatch.setattr("inference.hmc_kernels.compile_static", lambda fn, example: fake_compile(fn))
    name = {"row_vg": "row_value_and_grad", "leaf": "leaf", "block_turn": "block_turn"}[target]
    with pytest.warns(RuntimeWarning, match=f"compiled {name} disagrees"):
        kernels = Kernels.compiled_at(q, density.potential, lambda x, rows: density.potential(x, 0 * rows))
    assert kernels.compiled is False


def test_compiled_nuts_compiles_each_kernel_once_per_fit():
    """The full batch's kernels are compiled once for the shapes and strides the sampler passes
    (a strided view of the leaves' draws would make every such call copy its inputs), the row
    potential through torch.compile without recompilation per tree depth, and each fit in a process
    compiles graphs of its own: torch.compile keeps at most ``recompile_limit`` (8) graphs per
    function and runs eager code past that, which kernels shared by the fits of a long benchmark
    job could reach."""
    from torch._dynamo.utils import counters

    from inference.compiled import StaticKernel

    model, X, y = _compile_problem()
    kw = dict(compile=True, num_samples=15, warmup=25, num_chains=3, max_tree_depth=6, init_steps=10, progress=False)
    graphs = []
    restrided = StaticKernel.restrided
    for seed in (1, 2):
        counters.clear()
        post = NUTS(seed=seed, **kw).fit(model, X, y)
        assert post.info["compile"] is True
        assert max(post.info["tree_depth"][0]) >= 3  # subtrees of depths 0, 1, 2, ... were built
        graphs.append(counters["stats"]["unique_graphs"])
    assert StaticKernel.restrided == restrided  # every call of a static kernel had the example's strides
    # through torch.compile: the subsets of rows, two graphs (a single row is specialised)
    assert graphs == [2, 2], graphs


def test_a_kernel_that_compile_static_cannot_trace_goes_through_torch_compile(monkeypatch):
    """compile_static failing (say, on control flow that reads values) leaves that kernel to
    torch.compile: still compiled, still checked against eager, no warning."""
    from inference.compiled import StaticKernel
    from inference.hmc_kernels import Kernels

    def refuse(fn, example):
        raise RuntimeError("data-dependent control flow")

    model, X, y = _compile_problem()
    density = NetworkDensity(model, X[None], y[None, :, None], {"layer0", "layer1"})
    q = density.prior_draw(ChainRandom(chain_seeds([0], 2), torch.device("cpu")), bound=2.0)
    monkeypatch.setattr("inference.hmc_kernels.compile_static", refuse)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a fallback to eager would warn
        try:
            kernels = Kernels.compiled_at(q, density.potential)
        except RuntimeWarning as err:
            pytest.skip(f"torch.compile is not available here: {err}")
    assert kernels.compiled is True
    assert not any(isinstance(getattr(kernels, name), StaticKernel)
                   for name in ("value_and_grad", "leapfrog", "leaf", "step", "block_turn"))


def test_compile_falls_back_to_eager_with_a_warning(monkeypatch):
    model, X, y = _compile_problem()
    kw = dict(num_samples=10, warmup=10, num_chains=2, max_tree_depth=3, init_steps=10, progress=False, seed=4)
    eager = NUTS(**kw).fit(model, X, y)

    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(torch, "compile", broken)
    monkeypatch.setattr(torch._inductor, "standalone_compile", broken)
    with pytest.warns(RuntimeWarning, match="torch.compile failed .*no C\\+\\+ compiler.*eager"):
        fallback = NUTS(compile=True, **kw).fit(model, X, y)
    assert fallback.info["compile"] is False and eager.info["compile"] is False  # what ran
    for name, t in eager.chains.items():  # the copy of the streams used for the check left the chains' alone
        assert torch.equal(fallback.chains[name], t), name


def test_small_network_predictions_agree_with_pyros_nuts():
    """A two-sample test on f(x) at test inputs: the batched engine against Pyro's NUTS,
    predictive mean and sd, with each side's Monte Carlo error from its ESS."""
    g = torch.Generator().manual_seed(1)
    X = torch.rand(20, 1, generator=g) * 4 - 2
    y = torch.tanh(1.5 * X[:, 0]) + 0.2 * torch.randn(20, generator=g)
    X_test = torch.linspace(-3, 3, 5)[:, None]

    def model():
        return BayesianMLP(1, 1, hidden=(3,), activation="tanh", prior=bp.prior("normal"),
                           likelihood=GaussianLikelihood(precision=4.0))

    budget = dict(num_samples=150, warmup=100, max_tree_depth=4, progress=False, seed=2)
    ours = NUTS(**budget).fit(model(), X, y, X_test)
    theirs = NUTS(engine="pyro", num_chains=1, **budget).fit(model(), X, y, X_test)
    assert ours.info["predictive"][0]["r_hat_max"] < 1.05

    def moments(post):
        f = post.predictions(X_test)[..., 0, :, 0].double().numpy()  # (C, D, N)
        n_eff = ess(f, "bulk")
        flat = f.reshape(-1, f.shape[-1])
        return flat.mean(0), flat.std(0), flat.std(0) / np.sqrt(n_eff), n_eff

    m1, s1, se1, n1 = moments(ours)
    m2, s2, se2, n2 = moments(theirs)
    assert (np.abs(m1 - m2) / np.sqrt(se1**2 + se2**2)).max() < 4.5
    # a standard deviation's relative standard error is about 1 / sqrt(2 n_eff)
    assert (np.abs(np.log(s1 / s2)) / np.sqrt(1 / (2 * n1) + 1 / (2 * n2))).max() < 4.5


def test_batched_engine_diagnostics_info_and_arviz():
    import arviz as az

    g = torch.Generator().manual_seed(0)
    X = torch.rand(30, 1, generator=g) * 3 - 1.5
    y = torch.sin(2 * X[:, 0]) + 0.1 * torch.randn(30, generator=g)
    model = BayesianMLP(1, 1, hidden=(4,), prior=bp.prior("half-cauchy", "ard"))
    post = NUTS(num_samples=40, warmup=40, num_chains=2, max_tree_depth=4, thin=2, progress=False, seed=0).fit(
        model, X, y)
    info = post.info
    assert info["engine"] == "batched" and info["init"] == "map" and info["num_chains"] == 2
    assert len(info["step_size"][0]) == 2 and all(s > 0 for s in info["step_size"][0])
    assert all(1 <= d <= 4 for d in info["tree_depth"][0]) and all(0 < a <= 1 for a in info["mean_accept_prob"][0])
    pred = info["predictive"][0]
    assert pred["points"] == 30 and pred["r_hat_max"] > 0.9 and pred["ess_bulk_min"] > 0
    df = post.diagnostics()
    assert list(df["site"])[-1] == "f" and {"tree_depth", "step_size", "mean_accept_prob"} <= set(df.columns)
    assert float(df.set_index("site").loc["f", "r_hat_max"]) == pytest.approx(pred["r_hat_max"])
    assert post.num_draws == 40 and post.chains["layer0.weight"].shape == (2, 20, 1, 1, 4)
    # the weights are sigma0 * lambda * z of the sampled z: the prior's conditional std is the scale
    assert torch.isfinite(post.samples["layer0.unit_scale"]).all() and (post.samples["layer0.unit_scale"] > 0).all()
    idata = post.to_arviz(X, y)
    for stat in ("diverging", "tree_depth", "n_steps", "acceptance_rate", "energy", "step_size"):
        assert idata.sample_stats[stat].shape == (2, 20)
    assert int(idata.sample_stats["diverging"].sum()) <= info["divergences"]
    assert math.isfinite(float(az.loo(idata).elpd_loo))
    assert "f" not in az.summary(idata, var_names=["output.bias"]).index


@pytest.fixture(scope="module")
def nuts_uninterrupted():
    """Two replicas x two chains, 60 warm-up (at this length Stan's 15% / 75% / 10%: a fast window
    of 9, one slow window to iteration 54, then the terminal window) + 20 draws of which every second
    is kept, and the fit without checkpoints."""
    _, X, y = _compile_problem()
    X2, y2 = torch.stack([X, X.flip(0)]), torch.stack([y, y.flip(0)])
    kw = dict(num_samples=20, warmup=60, num_chains=2, max_tree_depth=4, init_steps=20, progress=False, seed=[5, 6],
              thin=2)

    def make():
        return BayesianMLP(2, 1, hidden=(6,), prior=bp.prior("half-cauchy", "ard"), likelihood=GaussianLikelihood(),
                           replicas=2)

    return make, X2, y2, kw, NUTS(**kw).fit(make(), X2, y2)


# fast window; slow window (mass matrix running); right after the mass matrix update; right after
# the warm-up's final step size; while drawing (an odd iteration: between two kept draws)
@pytest.mark.parametrize("stop", [3, 30, 54, 60, 71])
def test_nuts_continued_from_a_checkpoint_equals_the_uninterrupted_fit(tmp_path, nuts_uninterrupted, killed_after, stop):
    make, X, y, kw, whole = nuts_uninterrupted
    path = tmp_path / "nuts.pt"
    with pytest.raises(KeyboardInterrupt):
        NUTS(**kw).fit(make(), X, y, checkpoint=killed_after(path, "job", stop))
    earlier = torch.load(path, weights_only=False)["seconds"]  # the stopped segment's, up to its last save
    resumed = NUTS(**kw).fit(make(), X, y, checkpoint=Checkpoint(path, "job", every=0.0))
    assert resumed.info["seconds"] > earlier > 0 and resumed.info["seconds_before_resume"] == earlier
    assert resumed.info["resumed_from_iteration"] == stop and whole.info["resumed_from_iteration"] is None
    for name, t in whole.chains.items():
        assert torch.equal(resumed.chains[name], t), name
    for name, t in whole.stats.items():
        assert torch.equal(resumed.stats[name], t), name
    assert resumed.divergences == whole.divergences
    assert resumed.info["step_size"] == whole.info["step_size"]


def test_nuts_refuses_a_checkpoint_of_another_schedule_and_the_pyro_engine(tmp_path, nuts_uninterrupted, killed_after):
    make, X, y, kw, _ = nuts_uninterrupted
    path = tmp_path / "nuts.pt"
    with pytest.raises(KeyboardInterrupt):
        NUTS(**kw).fit(make(), X, y, checkpoint=killed_after(path, "job", 2))
    for change, named in [({"warmup": 50}, "schedule"), ({"num_chains": 1}, "chains 4 there, 2 here"),
                          ({"target_accept": 0.9}, "target_accept"), ({"max_tree_depth": 5}, "max_tree_depth"),
                          ({"seed": [5, 7]}, "seeds"), ({"parametrization": "centered"}, "parametrization")]:
        with pytest.raises(InvalidParameterError, match=f"belongs to another run .*{named}"):
            NUTS(**{**kw, **change}).fit(make(), X, y, checkpoint=Checkpoint(path, "job"))
    with pytest.raises(InvalidParameterError, match="belongs to another run .*data"):
        NUTS(**kw).fit(make(), X, y + 0.01, checkpoint=Checkpoint(path, "job"))
    old_format = {k: v for k, v in torch.load(path, weights_only=False).items() if k not in ("identity", "version", "key")}
    Checkpoint(path, "job").save(old_format)
    with pytest.raises(InvalidParameterError, match="earlier version"):
        NUTS(**kw).fit(make(), X, y, checkpoint=Checkpoint(path, "job"))
    assert NUTS().checkpoints and not NUTS(engine="pyro").checkpoints
    with pytest.raises(InvalidParameterError, match="batched engine only"):
        NUTS(**{**kw, "engine": "pyro"}).fit(make(), X, y, checkpoint=Checkpoint(path, "job"))
