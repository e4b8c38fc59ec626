"""How the training loop's torch thread count fares when another process competes for the cores.

The fit is the README's first fit at a reduced budget: a 10-50-50-1 residual network
with the ARD half-Cauchy prior, mean-field SVI (``inference.SVI``), 400 synthetic
training points. It is timed with 1 and with 2 torch threads in the training loop
(the backends' ``threads`` option), first on its own and then while a neighbouring
process runs a loop of 300x300 matrix products with two torch threads (a second
user of the machine, or a second benchmark). On a 2-core machine the second thread
spins waiting for a core the neighbour holds, and each step waits for it.

``--backend nuts`` times NUTS's fit of the backend matrix's problem instead
(``tests/test_backends.py``: a 1-8-1 network, ARD Gaussian prior above a normal input layer,
60 points, four chains in lockstep, 60 warm-up and 60 draws, tree depth 5, its MAP start),
with the ``threads`` option of :class:`inference.NUTS`.

    python benchmarks/thread_contention.py [--steps 300] [--neighbour-threads 2] [--backend svi|nuts]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import warnings

import torch

NEIGHBOUR = """
import sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
a = torch.randn(300, 300)
while True:
    a = torch.tanh(a @ a.T / 300)
"""


def fit_seconds(steps: int, threads: int) -> float:
    import bnn_priors
    import models
    from inference import SVI

    g = torch.Generator().manual_seed(0)
    X = torch.randn(400, 10, generator=g)
    y = X[:, 0].sin() + 0.1 * torch.randn(400, generator=g)
    net = models.BayesianResNet(10, 1, hidden=(50, 50), prior=bnn_priors.prior("half-cauchy", structure="ard"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        post = SVI(steps=steps, threads=threads, progress=False).fit(net, X, y)
    return post.info["seconds"]


def nuts_fit_seconds(threads: int) -> float:
    import bnn_priors
    import models
    from inference import NUTS

    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.rand(30, generator=g) * 1.5 - 2.0, torch.rand(30, generator=g) * 1.5 + 0.5])
    y = torch.sin(2 * x) + 0.1 * torch.randn(60, generator=g)
    net = models.BayesianMLP(1, 1, hidden=(8,), prior=[bnn_priors.prior("normal"), bnn_priors.prior("gaussian", "ard")],
                             likelihood=models.GaussianLikelihood(precision=100.0))
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        NUTS(num_samples=60, warmup=60, max_tree_depth=5, progress=False, seed=1, threads=threads).fit(net, x[:, None], y)
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--neighbour-threads", type=int, default=2)
    parser.add_argument("--backend", choices=("svi", "nuts"), default="svi")
    args = parser.parse_args(argv)
    what = f"{args.steps} SVI steps per fit" if args.backend == "svi" else "NUTS, 4 chains, 60 + 60 iterations per fit"
    print(f"cores: {os.cpu_count()}, torch {torch.__version__}, {what}")
    rows = []
    for label in ("alone", f"beside a neighbour with {args.neighbour_threads} torch threads"):
        neighbour = None
        if label != "alone":
            neighbour = subprocess.Popen([sys.executable, "-c", NEIGHBOUR, str(args.neighbour_threads)])
            time.sleep(2.0)
        try:
            for threads in (1, 2):
                seconds = fit_seconds(args.steps, threads) if args.backend == "svi" else nuts_fit_seconds(threads)
                rows.append((label, threads, seconds))
                print(f"{label:45s} threads={threads}: {rows[-1][2]:7.2f} s", flush=True)
        finally:
            if neighbour is not None:
                neighbour.kill()
                neighbour.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
