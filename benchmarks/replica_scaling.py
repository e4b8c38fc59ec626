"""SVI-EM time per optimisation step and replica, as the number of batched replicas grows.

What sets the runner's CPU default (``bnn_priors.suite.planning.CPU_BATCH_ROWS``): on a
CPU, batching replicas saves per-step overhead on small data sets and gains nothing
on large full-batch ones. resnet-2x50, inverse-Nakagami ARD prior, full batch,
random data of the given sizes, one torch thread; 5 warm-up steps, then ``--steps``
timed.

    python benchmarks/replica_scaling.py --points 7654,2000,500 --replicas 1,4,20
"""

from __future__ import annotations

import argparse
import time

import torch

import bnn_priors as bp
from inference import SVI
from models import BayesianResNet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--points", default="7654,2000,500", help="training points per replica")
    parser.add_argument("--replicas", default="1,4,20")
    parser.add_argument("--features", type=int, default=4)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for n in (int(v) for v in args.points.split(",")):
        for r in (int(v) for v in args.replicas.split(",")):
            g = torch.Generator().manual_seed(0)
            X, y = torch.randn(r, n, args.features, generator=g), torch.randn(r, n, generator=g)
            model = BayesianResNet(args.features, 1, hidden=(50, 50), prior=bp.prior("inverse-nakagami", "ard"),
                                   replicas=r)
            SVI(steps=5, scale_updates="em", progress=False, seed=list(range(r)), device=args.device).fit(model, X, y)
            start = time.perf_counter()
            SVI(steps=args.steps, scale_updates="em", progress=False, seed=list(range(r)),
                device=args.device).fit(model, X, y)
            ms = 1000 * (time.perf_counter() - start) / args.steps / r
            print(f"points {n:6d}  replicas {r:3d}  {ms:7.2f} ms per step and replica", flush=True)


if __name__ == "__main__":
    main()
