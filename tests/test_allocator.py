"""The allocator settings of :mod:`inference.allocator`: fewer page faults, the same numbers."""

import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

_EVALUATE = """
import contextlib, resource, sys, numpy as np, torch
import bnn_priors, inference, models
from bnn_priors.suite.evaluation import evaluate_metrics
from inference.allocator import reuse_large_blocks
torch.manual_seed(0)
R = 16
net = models.BayesianMLP(9, 1, hidden=(50,), prior=bnn_priors.prior("bernoulli", p=0.05, structure="ard"), replicas=R)
post = inference.MCDropout(epochs=1, seed=list(range(R)), progress=False).fit(net, torch.randn(R, 64, 9), torch.randn(R, 64))
X, y = torch.randn(R, 90, 9).numpy(), torch.randn(R, 90).numpy()  # chunks of 41, 41 and 8 points
def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    m = evaluate_metrics(post, X, y, 1000, np.full(R, 2.0), 50)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before, m
with reuse_large_blocks() if sys.argv[1] == "inside" else contextlib.nullcontext(False) as applied:
    faults()  # the first evaluation grows the heap
    n, m = faults()
np.save(sys.argv[2], np.concatenate([m.rmse, m.log_likelihood, m.sample_mae, m.coverage.ravel()]))
print(applied is True, n)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the allocator settings are glibc's")
def test_evaluation_inside_reuse_large_blocks_faults_few_pages_and_gives_the_same_metrics(tmp_path):
    """A chunked evaluation at R = 16, 1000 draws, width 50 (tensors of 128 MiB, above glibc's mmap
    threshold): with glibc's defaults each chunk faults its tensors in anew (about 260,000 pages an
    evaluation on this project's machine); inside the context, once the heap has grown (the runner
    evaluates a job's test, validation and training sets in one context), almost none.
    The metrics are equal bit for bit."""
    def run(where):
        out = subprocess.run([sys.executable, "-c", _EVALUATE, where, str(tmp_path / where)],
                             env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, check=True,
                             cwd=Path(__file__).resolve().parents[1])
        applied, faults = out.stdout.splitlines()[-1].split()
        return applied == "True", int(faults)

    _, outside = run("outside")
    if outside <= 20000:  # another allocator preloaded, or glibc tuned otherwise: nothing to show here
        pytest.skip(f"glibc's defaults fault only {outside} pages per evaluation here")
    applied, inside = run("inside")
    assert applied
    assert inside < 0.1 * outside, (inside, outside)
    np.testing.assert_array_equal(np.load(tmp_path / "inside.npy"), np.load(tmp_path / "outside.npy"))


def test_the_settings_are_off_with_the_environment_variable():
    """``BNN_PRIORS_KEEP_FREED_MEMORY=0``: neither setting is applied, and the context still runs its body."""
    code = ("from inference.allocator import keep_freed_memory, reuse_large_blocks\n"
            "with reuse_large_blocks() as applied: body = True\n"
            "print(keep_freed_memory(), applied, body)")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "BNN_PRIORS_KEEP_FREED_MEMORY": "0"},
                         capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.split() == ["False", "False", "True"]
