"""What subnormal weights cost a step on this CPU, with and without ``inference.training.flush_denormals``.

    python benchmarks/denormal_cost.py [--replicas 20] [--repeats 3]

A prior that shrinks weights can drive some of them into float32's subnormal range (below
2**-126, about 1.2e-38; the released ARD-ADD preset does on power). Some x86 CPUs multiply
with subnormal operands through a slow microcode path. This script times the three batched
products of the ``nalisnick2019-released`` network's forward pass at its shapes (R replicas x
10 particles x batch 32 rows; 4 inputs as power has, 2 x 50 hidden units, 1 output), one torch
thread, with a share of the weights (0%, 1%, 10%, 100%) set to subnormal values, first as IEEE
754 defines them, then inside ``flush_denormals()``, where they are read as zero. It prints
milliseconds per product (median of ``--repeats``) and the ratio to the same product with
normal weights. The CPU model is printed first: the cost depends on it.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from bnn_priors.suite.provenance import cpu_model
from inference.training import flush_denormals

PARTICLES, BATCH, D_IN, HIDDEN = 10, 32, 4, 50


def weights(shape, share: float, gen: torch.Generator) -> torch.Tensor:
    """Normal weights with ``share`` of them replaced by subnormal ones (magnitudes 1e-45 to 1e-39)."""
    w = torch.randn(shape, generator=gen) / shape[-2] ** 0.5
    tiny = torch.rand(shape, generator=gen) < share
    return torch.where(tiny, torch.randn(shape, generator=gen).sign() * 1e-39 * torch.rand(shape, generator=gen), w)


def time_product(a: torch.Tensor, b: torch.Tensor, seconds: float = 0.3) -> float:
    """Milliseconds per ``bmm(a, b)``, repeated for about ``seconds``."""
    out = torch.empty(a.shape[0], a.shape[1], b.shape[2])
    torch.bmm(a, b, out=out)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or n < 3:
        torch.bmm(a, b, out=out)
        n += 1
    return (time.perf_counter() - start) / n * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    R, rows = args.replicas, PARTICLES * BATCH
    gen = torch.Generator().manual_seed(0)
    print(f"{cpu_model()}; torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
          f"1 torch thread; R = {R}, {rows} rows per replica")
    products = {
        f"input layer ({R}, {rows}, {D_IN}) x ({R}, {D_IN}, {HIDDEN})": (D_IN, HIDDEN),
        f"hidden layer ({R}, {rows}, {HIDDEN}) x ({R}, {HIDDEN}, {HIDDEN})": (HIDDEN, HIDDEN),
        f"output layer ({R}, {rows}, {HIDDEN}) x ({R}, {HIDDEN}, 1)": (HIDDEN, 1),
    }
    print(f"{'product':58s} {'subnormal':>9s} {'IEEE ms':>9s} {'x normal':>9s} {'flushed ms':>11s} {'x normal':>9s}")
    for name, (d_in, d_out) in products.items():
        a = torch.randn(R, rows, d_in, generator=gen).relu()
        base = None
        for share in (0.0, 0.01, 0.1, 1.0):
            b = weights((R, d_in, d_out), share, gen)
            ieee = statistics.median(time_product(a, b) for _ in range(args.repeats))
            with flush_denormals(True):
                flushed = statistics.median(time_product(a, b) for _ in range(args.repeats))
            base = base or ieee
            print(f"{name:58s} {share:9.0%} {ieee:9.3f} {ieee / base:9.1f} {flushed:11.3f} {flushed / base:9.1f}")


if __name__ == "__main__":
    main()
