"""What the runner's evaluation costs with the training loop's allocator setting and inside ``reuse_large_blocks``.

A batched job's evaluation (``bnn_priors.suite.evaluation.evaluate_metrics``) works in
chunks of points, each holding up to 8 MiB of activations per replica, so its tensors
are hundreds of megabytes at tens of replicas: above glibc's mmap threshold, they come
from fresh pages every chunk. The runner evaluates inside
:func:`inference.allocator.reuse_large_blocks`. This script fits an MC-dropout network
(``--replicas`` replicas, one hidden layer of ``--width`` units, 9 inputs: protein's
shape) for one epoch on random data, then evaluates ``--points`` random test points
with ``--samples`` draws twice in a fresh process per setting (the first evaluation of
a process grows its heap; the second is what a job's later evaluations cost), and prints
wall, user and system seconds and minor page faults of each, and whether the two
settings gave equal metrics. The fit runs in the training loop, so both processes have its
allocator setting (:func:`inference.allocator.keep_freed_memory`: blocks up to 32 MiB from the
heap); the evaluation's tensors are larger, so outside the context they are mmap'd as with
glibc's defaults.

    python benchmarks/evaluation_memory.py [--replicas 60] [--points 164] [--samples 1000] [--width 50]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import contextlib, resource, sys, time, numpy as np, torch
import bnn_priors, inference, models
from bnn_priors.suite.evaluation import evaluate_metrics
from inference.allocator import reuse_large_blocks
where, R, N, S, W, out = sys.argv[1], *map(int, sys.argv[2:6]), sys.argv[6]
torch.manual_seed(0)
net = models.BayesianMLP(9, 1, hidden=(W,), prior=bnn_priors.prior("bernoulli", p=0.05, structure="ard"), replicas=R)
post = inference.MCDropout(epochs=1, seed=list(range(R)), progress=False).fit(net, torch.randn(R, 256, 9), torch.randn(R, 256))
X, y = torch.randn(R, N, 9).numpy(), torch.randn(R, N).numpy()
with reuse_large_blocks() if where == "reuse_large_blocks" else contextlib.nullcontext(False) as applied:
    for i in range(2):
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        m = evaluate_metrics(post, X, y, S, np.ones(R), W)
        r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        print(f"{where:<20} applied={applied!s:<5} evaluation {i + 1}: {t1 - t0:6.2f} s wall, user {r1.ru_utime - r0.ru_utime:6.2f} s, "
              f"sys {r1.ru_stime - r0.ru_stime:6.2f} s, {r1.ru_minflt - r0.ru_minflt:>9,} minor faults")
np.save(out, np.concatenate([m.rmse, m.log_likelihood, m.sample_mae, m.coverage.ravel()]))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=60)
    parser.add_argument("--points", type=int, default=164)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--width", type=int, default=50)
    args = parser.parse_args()
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("BNN_PRIORS_KEEP_FREED_MEMORY", None)
    from bnn_priors.suite.evaluation import EVAL_CHUNK_ELEMENTS

    chunk = max(1, EVAL_CHUNK_ELEMENTS // (args.samples * args.width))
    print(f"{args.replicas} replicas, {args.points} points, {args.samples} draws, width {args.width}: chunks of "
          f"{chunk} points, {args.replicas * args.samples * chunk * args.width * 4 / 2**20:.0f} MiB per activation tensor; "
          "one torch thread")
    with tempfile.TemporaryDirectory() as tmp:
        for where in ("keep_freed_memory", "reuse_large_blocks"):
            subprocess.run([sys.executable, "-c", CHILD, where, str(args.replicas), str(args.points), str(args.samples),
                            str(args.width), str(Path(tmp) / where)], env=env, cwd=root, check=True)
        import numpy as np

        same = np.array_equal(np.load(Path(tmp) / "keep_freed_memory.npy"), np.load(Path(tmp) / "reuse_large_blocks.npy"))
    print(f"metrics equal bit for bit: {same}")


if __name__ == "__main__":
    main()
