"""Seconds per leaf of a NUTS tree: eager kernels against compiled ones, on one model.

A leaf is one leapfrog step (the potential and its gradient) plus the tree's bookkeeping
for it (energy error, multinomial proposal, U-turn checks): what
``inference.hmc.BatchedNUTS`` repeats up to ``2**max_tree_depth`` times per iteration.
Model: ``benchmarks/nuts_ess.py``'s (boston split 0, 13-50-1 tanh, ARD half-Cauchy,
non-centred, learned precision), ``--chains`` chains at one prior draw (scales clipped
to [-2, 2]), a fixed step size and unit mass matrix, so every arm builds the same trees
up to rounding. Arms, interleaved over ``--repeats`` rounds (medians printed):

* ``eager``: ``inference.hmc_kernels.Kernels``;
* ``compiled``: ``Kernels.compiled_at`` (the leapfrog step and the leaf's bookkeeping in
  one compiled call);
* ``compiled-2``: the same compiled functions, the leapfrog step and the bookkeeping in
  two calls (what the fused call saves).

Beside each arm's seconds per leaf (a chain's leaves, with the lockstep steps that chains
whose trees have ended still take), the time of one potential and gradient of all the chains,
and per chain: on a CPU that is the arithmetic, which grows with the chains. Compilation is done
before timing and is not counted. One torch thread.

    python benchmarks/nuts_leaf_cost.py [--chains 1] [--iterations 15] [--step-size 0.005] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from inference.hmc import BatchedNUTS, ChainRandom, chain_seeds  # noqa: E402
from inference.hmc_kernels import Kernels  # noqa: E402
from inference.network_density import NetworkDensity  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _nuts_ess():
    import importlib.util

    spec = importlib.util.spec_from_file_location("nuts_ess", REPO / "benchmarks" / "nuts_ess.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def two_calls(kernels: Kernels) -> Kernels:
    """``kernels`` whose ``step`` calls the compiled leapfrog step, then the compiled bookkeeping."""

    def step(q, p, g, eps, inv_mass, H0, active, log_w, u, *tree):
        q, p, g, U = kernels.leapfrog(q, p, g, eps, inv_mass)
        return (q, p, g, U) + tuple(kernels.leaf(p, U, H0, inv_mass, active, log_w, u, q, g, *tree))

    out = Kernels.__new__(Kernels)
    out.__dict__.update(kernels.__dict__)
    out.step = step
    return out


def seconds_per_leaf(density, kernels, q, iterations: int, step_size: float, warm: int = 3) -> tuple[float, int]:
    C = q.shape[0]
    sampler = BatchedNUTS(density.potential, ChainRandom(chain_seeds([1], C), q.device), max_tree_depth=8,
                          kernels=kernels)
    U, g = sampler._grad(q)
    eps, inv_mass = torch.full((C,), step_size), torch.ones_like(q)
    for _ in range(warm):
        q, U, g, _ = sampler.transition(q, U, g, eps, inv_mass)
    leaves = 0
    start = time.perf_counter()
    for _ in range(iterations):
        q, U, g, stats = sampler.transition(q, U, g, eps, inv_mass)
        leaves += int(stats["n_steps"].sum())
    return (time.perf_counter() - start) / leaves, leaves


def seconds_per_gradient(kernels, q, repeats: int = 100) -> float:
    """Seconds of one evaluation of the potential and its gradient for all the chains of ``q``."""
    kernels.value_and_grad(q)
    start = time.perf_counter()
    for _ in range(repeats):
        kernels.value_and_grad(q)
    return (time.perf_counter() - start) / repeats


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chains", type=int, default=1)
    parser.add_argument("--iterations", type=int, default=15, help="timed NUTS iterations per arm (default 15)")
    parser.add_argument("--step-size", type=float, default=0.005)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    ness = _nuts_ess()
    Xn, yn, _ = ness.load_split(ness.DEFAULT_DATA_DIR, 0)
    X = torch.as_tensor(Xn, dtype=torch.float32)[None]
    y = torch.as_tensor(yn, dtype=torch.float32)[None, :, None]
    density = NetworkDensity(ness.make_model(X.shape[-1]), X, y, {"layer0", "layer1"})
    q = density.prior_draw(ChainRandom(chain_seeds([0], args.chains), torch.device("cpu")), bound=2.0)
    compiled = Kernels.compiled_at(q, density.potential)
    arms = {"eager": Kernels(density.potential), "compiled": compiled, "compiled-2": two_calls(compiled)}
    times = {name: [] for name in arms}
    gradient = {name: [] for name in arms}
    leaves = {}
    for _ in range(args.repeats):
        for name, kernels in arms.items():
            t, leaves[name] = seconds_per_leaf(density, kernels, q, args.iterations, args.step_size)
            times[name].append(t)
            gradient[name].append(seconds_per_gradient(kernels, q))
    print(f"boston split 0, 13-50-1 tanh, {args.chains} chain(s), step size {args.step_size}, "
          f"{args.iterations} iterations x {args.repeats} rounds; torch {torch.__version__}, 1 thread")
    print("leaves: the chains' leaves (a chain's leapfrog steps while its tree grows); ms/leaf: seconds per such "
          "leaf, the lockstep steps of finished chains included; gradient: one potential and gradient of all the "
          "chains, and per chain")
    print(f"{'arm':<11} {'leaves':>7} {'ms/leaf':>8} {'gradient ms':>12} {'per chain':>10}")
    for name in arms:
        grad = 1e3 * statistics.median(gradient[name])
        print(f"{name:<11} {leaves[name]:>7d} {1e3 * statistics.median(times[name]):>8.3f} {grad:>12.3f} "
              f"{grad / args.chains:>10.3f}")


if __name__ == "__main__":
    main()
