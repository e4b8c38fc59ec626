"""The allocator settings of :mod:`inference.allocator`: fewer page faults, the same numbers."""

import contextlib
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

#: glibc with its own defaults in the subprocesses: no other allocator preloaded, no tunables
_PLAIN_GLIBC = {k: v for k, v in os.environ.items()
                if k not in ("LD_PRELOAD", "GLIBC_TUNABLES") and not k.startswith("MALLOC_")}

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
    threshold): with the training loop's setting (blocks up to 32 MiB from the heap; the fit ran in
    the loop) each chunk faults its tensors in anew (about 260,000 pages an
    evaluation on this project's machine); inside the context, once the heap has grown (the runner
    evaluates a job's test, validation and training sets in one context), almost none.
    The metrics are equal bit for bit."""
    def run(where):
        out = subprocess.run([sys.executable, "-c", _EVALUATE, where, str(tmp_path / where)],
                             env={**_PLAIN_GLIBC, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, check=True,
                             cwd=Path(__file__).resolve().parents[1])
        applied, faults = out.stdout.splitlines()[-1].split()
        return applied == "True", int(faults)

    _, outside = run("outside")
    assert outside > 20000, outside
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


_BLOCKS = """
import ctypes, resource, threading
from inference.allocator import reuse_large_blocks
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
def faults():  # three 100 MiB blocks, each written to and freed: the minor faults it takes
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(3):
        p = libc.malloc(100 * 2**20)
        ctypes.memset(p, 1, 100 * 2**20)
        libc.free(p)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
out = {"before": faults()}
with reuse_large_blocks():
    faults()  # grows the heap
    out["inside"] = faults()
    with reuse_large_blocks():
        pass
    out["after an inner context"] = faults()
    held = [reuse_large_blocks()]  # a context another thread enters and never leaves
    t = threading.Thread(target=held[0].__enter__)
out["after"] = faults()
t.start(); t.join()
with reuse_large_blocks():
    pass
faults()  # grows the heap again
out["another thread's context open"] = faults()
print(out)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the allocator settings are glibc's")
def test_the_context_holds_until_the_last_one_exits_and_then_restores_the_settings():
    """Three 100 MiB blocks (75,000 pages) written and freed: each faulted in anew outside the context,
    reused inside it, still after a nested context has exited, again anew once the last context has
    exited (the settings restored, the memory trimmed), and reused while another thread's is open."""
    out = subprocess.run([sys.executable, "-c", _BLOCKS], env=_PLAIN_GLIBC, capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    f = eval(out.stdout.splitlines()[-1])  # noqa: S307 - our own subprocess's dict of ints
    pages = 3 * 100 * 2**20 // 4096
    assert f["before"] > 0.9 * pages, f
    assert f["inside"] < 0.01 * pages, f
    assert f["after an inner context"] < 0.01 * pages, f
    assert f["after"] > 0.9 * pages, f
    assert f["another thread's context open"] < 0.01 * pages, f


def test_the_runner_evaluates_inside_the_context_on_the_cpu(tmp_path, monkeypatch):
    """A job's evaluations (test set, training set) run inside ``reuse_large_blocks``, the fit outside it."""
    import bnn_priors.suite.runner as runner
    from bnn_priors.suite import expand_grid, run_suite

    inside = []
    calls = []

    @contextlib.contextmanager
    def recording():
        inside.append(True)
        yield True
        inside.pop()

    def recorded(name):
        real = getattr(runner, name)
        return lambda *a, **k: calls.append((name, bool(inside))) or real(*a, **k)

    monkeypatch.setattr(runner, "reuse_large_blocks", recording)
    for name in ("evaluate_metrics", "evaluate"):
        monkeypatch.setattr(runner, name, recorded(name))
    configs = expand_grid("diabetes", "0", noise="bernoulli", structure="ard", inference="mc-dropout",
                          budget={"epochs": 2})
    report = run_suite(configs, tmp_path / "r.sqlite", progress=False)
    assert report.ok == 1
    assert calls == [("evaluate_metrics", True), ("evaluate", True)]
