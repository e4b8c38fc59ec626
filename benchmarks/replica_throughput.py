"""Replica-steps per second of the batched gradient backends, against a plain-PyTorch floor.

A replica-step is one optimisation step of one replica: a batched fit of ``R``
replicas that runs ``n`` steps in ``t`` seconds does ``n R / t`` replica-steps/s.
Configurations (synthetic data of the stated shape: the speed does not depend on
the values):

``mcd``
    MC dropout on boston's shape: 455 training points, a 13-50-1 ReLU MLP, the
    Bernoulli ARD prior (``p = 0.05``: dropout on the inputs of both layers), batch
    128 (Keras epochs of four batches, the last of 71 rows), learned precision
    (set at every epoch end), Adam lr 1e-3, at ``R = 20`` and ``R = 240``, through
    ``inference.MCDropout``; the time is ``info["seconds"]``, the training loop only.
``svi``
    Mean-field SVI on a 13-50-50-1 residual net (resnet-2x50) with the ARD
    half-Cauchy prior and a learned precision, random mini-batches of 32 rows, 10
    particles (vectorized), local reparameterization, Adam lr 0.01, ``R = 20``,
    through ``inference.SVI``; by default, with ``compile=True`` and with ``fast=True,
    compile=True`` (``fast`` is only fused Adam here: this sampler has no sign flips).
``released``
    ``inference.SVI`` with the ``nalisnick2019-released`` preset's options and model
    (:func:`released_project`: sign flips (-1, 3) instead of Gaussian draws, ARD-ADD scales in
    the loss, precision 20) on the same resnet-2x50, batch 32, 10 particles, ``R = 20``: by
    default, with ``fast=True`` (the flips from random bits, 63 per generator call, and fused
    Adam), ``compile=True`` and both; no floor. Each compiled fit's time includes dynamo's
    tracing and the loading of its graphs from inductor's cache (a few seconds per fit), so
    short measurements understate the compiled rows.

For the ``mcd`` and ``svi`` rows, the *floor*: the same arithmetic on hand-written batched tensors in eager
PyTorch, no framework (:func:`mcd_floor`, :func:`svi_floor`): the same shapes, noise,
objective and ``torch.optim.Adam``, with every random number of a step drawn for
all replicas in one call. And the machine's matmul GFLOP/s (a 2048 x 2048 float32
product), the ceiling that arithmetic alone would allow.

MC dropout is timed three times: as it is by default (bit for bit the committed results),
with ``fast=True`` (Bernoulli masks from the gaps between dropped units, a one-output layer
as a product and a sum, fused Adam: the same model, another random stream and rounding), and
with ``fast=True, compile=True`` (each step's objective and gradient compiled by inductor;
the calibration run compiles, the timed fits find the graphs in inductor's cache, and their
time includes loading them, about 0.2 s per fit), and the last once more with a dropout rate per
replica (``noise_params``: 0.01, 0.05 and 0.1 for a third of the replicas each, as when the runner
batches a Gal grid of several rates as one model). Runs on
the CPU with one torch thread (the training loop's default; ``--threads 2`` gives every fit,
floor and matmul two threads, both cores of the project's machine), with the allocator setting of
the training loop (:func:`inference.allocator.keep_freed_memory`; ``BNN_PRIORS_KEEP_FREED_MEMORY=0``
times glibc's defaults, floors included), and again on a GPU when
``torch.cuda.is_available()``. Repeats are interleaved (every implementation once per
round) and the table gives medians: of the time per step of a whole fit of ``steps`` steps
(fixed costs included), and of the marginal time per step, from a second fit of twice
the steps (what a long fit runs at; the replica-steps/s are of this one); the machine is shared, so the figures are noisy
and only figures of one run compare.

    python benchmarks/replica_throughput.py [--seconds 2] [--repeats 3] [--threads 2] [--profile mcd-240]

``torch.compile`` (measured once while writing this, by hand, not by the script): compiling
the MC dropout floor's forward and loss with inductor, the masks drawn outside the graph,
made the step slower on this CPU, about 14 against 8 ms at R = 20 and 117 against 93 ms at
R = 240, after 25-108 s of compilation, with static shapes (``dynamic=False``) as with
dynamic ones, so recompilation for the short last batch is not the cause. The profiler
puts the time in the generated forward graph itself (about 9 ms per call at R = 20), and
shows inductor replacing two of the three ``bmm`` calls of the backward pass (the 50-1
layer's outer and matrix-vector products) with its own generated loops, which on one thread
are slower than the eager kernels they replace.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import math
import os
import platform
import pstats
import statistics
import sys
import time
import warnings

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

import bnn_priors  # noqa: E402
import inference  # noqa: E402
import models  # noqa: E402
from bnn_priors.suite.presets import NALISNICK_RELEASED_OPTIONS, NALISNICK_RELEASED_PRIOR  # noqa: E402
from inference.allocator import keep_freed_memory  # noqa: E402
from models.likelihoods import GaussianLikelihood  # noqa: E402

N_TRAIN, D_IN, HIDDEN = 455, 13, 50
MCD_BATCH, MCD_P, MCD_LR = 128, 0.05, 1e-3
SVI_BATCH, SVI_PARTICLES, SVI_LR = 32, 10, 0.01
CONFIGS = ("mcd-20", "mcd-240", "svi-20", "released-20")
#: torch threads of every timed fit, floor and matmul (``--threads``; the training loop's default is 1)
THREADS = 1
#: Dropout rates of the grid row: a third of the replicas each (as a Gal grid batched as one model).
GRID_P = (0.01, 0.05, 0.1)


def grid_p(R: int) -> dict[str, list[float]]:
    """``noise_params`` giving the replicas the rates of :data:`GRID_P` in equal contiguous blocks."""
    return {"p": [GRID_P[r * len(GRID_P) // R] for r in range(R)]}


def data(device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(N_TRAIN, D_IN, generator=g)
    y = X[:, :3].sum(-1).sin() + 0.3 * torch.randn(N_TRAIN, generator=g)
    return X.to(device), y.to(device)


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


# ----------------------------------------------------------------- the project
def mcd_project(R: int, steps: int, device, **options) -> float:
    """``inference.MCDropout`` for about ``steps`` steps; returns the training loop's seconds per step."""
    X, y = data(device)
    net = models.BayesianMLP(D_IN, 1, hidden=(HIDDEN,), prior=bnn_priors.prior("bernoulli", p=MCD_P, structure="ard"),
                             replicas=R)
    epochs = max(1, math.ceil(steps / math.ceil(N_TRAIN / MCD_BATCH)))
    post = inference.MCDropout(epochs=epochs, batch_size=MCD_BATCH, lr=MCD_LR, seed=list(range(R)), device=device,
                               progress=False, threads=THREADS, **options).fit(net, X, y)
    return post.info["seconds"] / post.info["steps"]


def svi_project(R: int, steps: int, device, **options) -> float:
    """``inference.SVI`` for ``steps`` steps; returns the training loop's seconds per step."""
    X, y = data(device)
    net = models.BayesianResNet(D_IN, 1, hidden=(HIDDEN, HIDDEN), prior=bnn_priors.prior("half-cauchy", structure="ard"),
                                replicas=R)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        post = inference.SVI(steps=steps, batch_size=SVI_BATCH, num_particles=SVI_PARTICLES, lr=SVI_LR,
                             seed=list(range(R)), device=device, progress=False, threads=THREADS,
                             **options).fit(net, X, y)
    return post.info["seconds"] / post.info["steps"]


def released_project(R: int, steps: int, device, **options) -> float:
    """``inference.SVI`` with the ``nalisnick2019-released`` preset's options (sign flips (-1, 3),
    softplus variances, point biases, ARD-ADD scales in the loss, per-weight KL, precision 20) on its
    resnet-2x50 (inverse-gamma(3, 3) ARD-ADD, ARD on the outer layers), batch 32, 10 particles."""
    X, y = data(device)
    inner = bnn_priors.prior("inverse-nakagami", structure="ard-add", **NALISNICK_RELEASED_PRIOR)
    outer = bnn_priors.prior("inverse-nakagami", structure=NALISNICK_RELEASED_OPTIONS["outer_structure"],
                             **NALISNICK_RELEASED_PRIOR)
    lik = GaussianLikelihood(precision=NALISNICK_RELEASED_OPTIONS["likelihood_precision"])
    net = models.BayesianResNet(D_IN, 1, hidden=(HIDDEN, HIDDEN), prior=[outer, inner, outer], likelihood=lik,
                                replicas=R)
    svi_options = {k: v for k, v in NALISNICK_RELEASED_OPTIONS.items() if k not in ("outer_structure", "likelihood_precision")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        post = inference.SVI(steps=steps, seed=list(range(R)), device=device, progress=False, threads=THREADS,
                             **{**svi_options, **options}).fit(net, X, y)
    return post.info["seconds"] / post.info["steps"]


# -------------------------------------------------------------------- the floors
def mcd_floor(R: int, steps: int, device) -> float:
    """MC dropout written out: Keras epochs, Bernoulli masks on both layers' inputs, Gal's decay with
    the learned precision's terms, the precision's closed-form update per epoch, Adam."""
    X, y = data(device)
    y = y[:, None]
    g = torch.Generator(device=device).manual_seed(0)
    keep = 1.0 - MCD_P
    W0 = (torch.randn(R, D_IN, HIDDEN, generator=g, device=device) / math.sqrt(D_IN)).requires_grad_()
    W1 = (torch.randn(R, HIDDEN, 1, generator=g, device=device) / math.sqrt(HIDDEN)).requires_grad_()
    b0 = torch.zeros(R, 1, HIDDEN, device=device, requires_grad=True)
    b1 = torch.zeros(R, 1, 1, device=device, requires_grad=True)
    opt = torch.optim.Adam([W0, W1, b0, b1], lr=MCD_LR)
    a, b = 1.0, 0.1  # the precision's Gamma prior
    tau = torch.full((R,), a / b, device=device)
    half_tau_wd = keep / (4.0 * N_TRAIN)  # l = 1 / sigma0 = 1
    per_epoch = math.ceil(N_TRAIN / MCD_BATCH)
    epochs = max(1, math.ceil(steps / per_epoch))
    sync(device)
    start = time.perf_counter()
    for _ in range(epochs):
        perm = torch.rand(R, N_TRAIN, generator=g, device=device).argsort(-1)
        sse = torch.zeros(R, device=device)
        const = -0.5 * tau.log() - (a * math.log(b) - math.lgamma(a) + (a - 1) * tau.log() - b * tau) / N_TRAIN
        for j in range(per_epoch):
            idx = perm[:, j * MCD_BATCH:(j + 1) * MCD_BATCH]
            Xb, yb = X[idx], y[idx]
            B = idx.shape[1]
            m0 = torch.rand(R, B, D_IN, generator=g, device=device) < keep
            m1 = torch.rand(R, B, HIDDEN, generator=g, device=device) < keep
            h = torch.relu(torch.baddbmm(b0, Xb * m0 / keep, W0))
            f = torch.baddbmm(b1, h * m1 / keep, W1)
            err = ((yb - f) ** 2).sum(-1).mean(-1)
            loss = 0.5 * tau * err + const + half_tau_wd * ((W0 * W0).sum((1, 2)) + (W1 * W1).sum((1, 2)))
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()
            opt.step()
            sse = sse + err.detach() * B
        tau = (N_TRAIN + 2.0 * (a - 1.0)) / (sse + 2.0 * b)
    sync(device)
    return (time.perf_counter() - start) / (epochs * per_epoch)


def svi_floor(R: int, steps: int, device) -> float:
    """Mean-field SVI written out: log-normal ARD scales with half-Cauchy priors, closed-form weight and
    bias KL given the scales, a log-normal precision with its Gamma prior, the local
    reparameterization over 10 particles on a residual net, a random subset of 32 rows per step, Adam."""
    X, y = data(device)
    y = y[:, None]
    g = torch.Generator(device=device).manual_seed(0)
    widths = [(D_IN, HIDDEN), (HIDDEN, HIDDEN), (HIDDEN, 1)]
    S, B, log_init = SVI_PARTICLES, SVI_BATCH, math.log(0.01)
    params, layers = [], []
    for fan_in, fan_out in widths:
        p = {
            "loc": torch.randn(R, fan_in, fan_out, generator=g, device=device) / math.sqrt(fan_in),
            "log_std": torch.full((R, fan_in, fan_out), log_init, device=device),
            "b_loc": torch.zeros(R, 1, fan_out, device=device),
            "b_log_std": torch.full((R, 1, fan_out), log_init, device=device),
            "s_loc": torch.zeros(R, fan_in, 1, device=device),
            "s_log_std": torch.full((R, fan_in, 1), math.log(0.1), device=device),
        }
        for t in p.values():
            t.requires_grad_()
        params += list(p.values())
        layers.append(p)
    t_loc = torch.full((R,), math.log(10.0), device=device, requires_grad=True)
    t_log_std = torch.full((R,), math.log(0.1), device=device, requires_grad=True)
    params += [t_loc, t_log_std]
    opt = torch.optim.Adam(params, lr=SVI_LR)
    half_log_2pi = 0.5 * math.log(2 * math.pi)
    a, b = 1.0, 0.1

    def objective(Xb, yb):
        kl = 0.0
        h = Xb
        for i, p in enumerate(layers):
            eps = torch.randn(S, R, p["s_loc"].shape[1], 1, generator=g, device=device)
            z = p["s_loc"] + p["s_log_std"].exp() * eps
            lam = z.exp()
            log_q = -0.5 * eps**2 - p["s_log_std"] - half_log_2pi - z
            log_p = math.log(2 / math.pi) - torch.log1p(lam**2)  # half-Cauchy(1)
            kl = kl + (log_q - log_p).sum((-2, -1))
            log_var = 2 * p["log_std"]
            var = log_var.exp()
            prior_var = lam**2
            kl = kl + 0.5 * ((var + p["loc"] ** 2) / prior_var - 1.0 - log_var + prior_var.log()).sum((-2, -1))
            b_var = (2 * p["b_log_std"]).exp()
            mean = h @ p["loc"] + p["b_loc"]
            std = ((h * h) @ var + b_var).sqrt()
            a_ = mean + std * torch.randn(S, R, h.shape[-2], p["loc"].shape[-1], generator=g, device=device)
            if i == len(layers) - 1:
                h = a_
            elif i == 0:
                h = torch.relu(a_)
            else:
                h = h + torch.relu(a_)
        eps = torch.randn(S, R, generator=g, device=device)
        zt = t_loc + t_log_std.exp() * eps
        tau = zt.exp()
        kl = kl + (-0.5 * eps**2 - t_log_std - half_log_2pi - zt) - (a * math.log(b) - math.lgamma(a) + (a - 1) * zt - b * tau)
        n = yb.shape[-2]
        loglik = (-0.5 * tau * ((yb - h) ** 2).sum((-2, -1)) + 0.5 * n * (tau.log() - math.log(2 * math.pi))) * (N_TRAIN / n)
        bias_kl = sum(0.5 * ((2 * p["b_log_std"]).exp() + p["b_loc"] ** 2 - 1.0 - 2 * p["b_log_std"]).sum((-2, -1))
                      for p in layers)
        return -((loglik - kl).mean(0) - bias_kl).sum() / N_TRAIN

    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        idx = torch.rand(R, N_TRAIN, generator=g, device=device).argsort(-1)[:, :B]
        loss = objective(X[idx], y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    sync(device)
    return (time.perf_counter() - start) / steps


def matmul_gflops(device, n: int = 2048, reps: int = 5) -> float:
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    a @ b
    sync(device)
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2.0 * n**3 * reps / (time.perf_counter() - start) / 1e9


# ---------------------------------------------------------------------- driver
def configurations():
    """``(label, R, function(steps, device) -> seconds per step)`` of every implementation timed."""
    rows = []
    for R in (20, 240):
        rows.append((f"mcd R={R}: plain-PyTorch floor", R, lambda n, d, R=R: mcd_floor(R, n, d)))
        rows.append((f"mcd R={R}: inference.MCDropout", R, lambda n, d, R=R: mcd_project(R, n, d)))
        rows.append((f"mcd R={R}: inference.MCDropout(fast=True)", R, lambda n, d, R=R: mcd_project(R, n, d, fast=True)))
        rows.append((f"mcd R={R}: inference.MCDropout(fast=True, compile=True)", R,
                     lambda n, d, R=R: mcd_project(R, n, d, fast=True, compile=True)))
        rows.append((f"mcd R={R}: fast+compile, 3 dropout rates (noise_params)", R,
                     lambda n, d, R=R: mcd_project(R, n, d, fast=True, compile=True, noise_params=grid_p(R))))
    rows.append(("svi R=20: plain-PyTorch floor", 20, lambda n, d: svi_floor(20, n, d)))
    rows.append(("svi R=20: inference.SVI", 20, lambda n, d: svi_project(20, n, d)))
    rows.append(("svi R=20: inference.SVI(compile=True)", 20, lambda n, d: svi_project(20, n, d, compile=True)))
    rows.append(("svi R=20: inference.SVI(fast=True, compile=True)", 20,
                 lambda n, d: svi_project(20, n, d, fast=True, compile=True)))
    rows.append(("released R=20: inference.SVI", 20, lambda n, d: released_project(20, n, d)))
    rows.append(("released R=20: inference.SVI(fast=True)", 20, lambda n, d: released_project(20, n, d, fast=True)))
    rows.append(("released R=20: inference.SVI(compile=True)", 20, lambda n, d: released_project(20, n, d, compile=True)))
    rows.append(("released R=20: inference.SVI(fast=True, compile=True)", 20,
                 lambda n, d: released_project(20, n, d, fast=True, compile=True)))
    return rows


def _key(label: str) -> str:
    """``mcd-20``, ``mcd-240``, ``svi-20`` or ``released-20`` from a row's label."""
    kind, R = label.split(":")[0].split(" R=")
    return f"{kind}-{R}"


def run_device(device: str, seconds: float, repeats: int, only: list[str] | None = None) -> None:
    rows = [row for row in configurations() if only is None or _key(row[0]) in only]
    print(f"\ndevice {device}: about {seconds:g} s per measurement, {repeats} interleaved repeats, medians")
    # Calibrate: two short runs of each give the cost of a step beyond the fit's fixed cost (compiled
    # fits trace and load their graphs), and so the number of steps that takes about `seconds`.
    budgets = []
    for _label, _, fn in rows:
        fn(8, device)  # warm-up (and, with compile=True, the compilation)
        short, longer = 32 * fn(32, device), 96 * fn(96, device)
        # a multiple of MC dropout's four batches an epoch, so that every fit runs exactly b or 2 b steps
        budgets.append(4 * max(2, math.ceil(seconds / max((longer - short) / 64, 1e-9) / 4)))
    whole: list[list[float]] = [[] for _ in rows]
    marginal: list[list[float]] = [[] for _ in rows]
    flops = []
    for _ in range(repeats):
        flops.append(matmul_gflops(device))
        for i, (_, _, fn) in enumerate(rows):
            b = budgets[i]
            one, two = fn(b, device), fn(2 * b, device)
            whole[i].append(one)
            marginal[i].append(max(2 * two - one, 1e-12))  # (2b two - b one) / b: the steps beyond the fixed cost
    print(f"matmul (2048 x 2048, float32): {statistics.median(flops):.1f} GFLOP/s (median of {repeats})")
    print("whole fit: a fit of `steps` steps, its fixed cost included; marginal: the steps of a fit of 2 x `steps` "
          "beyond those of the first (what a long fit runs at)")
    print(f"{'configuration':58s} {'steps':>6s} {'whole ms/step':>14s} {'marginal ms/step':>17s} {'replica-steps/s':>16s}")
    floor = {}
    for (label, R, _), b, ws, ms in zip(rows, budgets, whole, marginal):
        w, t = statistics.median(ws), statistics.median(ms)
        key = label.split(":")[0]
        rate = R / t
        ratio = ""
        if "floor" in label:
            floor[key] = rate
        elif key in floor:
            ratio = f"  ({rate / floor[key]:.2f}x the floor)"
        print(f"{label:58s} {b:6d} {1e3 * w:14.2f} {1e3 * t:17.2f} {rate:16.0f}{ratio}")


def profile(which: str, steps: int) -> None:
    """cProfile one project run (one of :data:`CONFIGS`) and print the top functions."""
    kind, R = which.rsplit("-", 1)
    fn = {"mcd": mcd_project, "svi": svi_project, "released": released_project}[kind]
    fn(int(R), 8, "cpu")
    prof = cProfile.Profile()
    prof.enable()
    fn(int(R), steps, "cpu")
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(25)
    print(out.getvalue())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="target seconds of each measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", help="comma-separated configurations to time (mcd-20, mcd-240, svi-20, released-20; default all)")
    parser.add_argument("--profile", choices=CONFIGS, help="cProfile one project run instead")
    parser.add_argument("--profile-steps", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of every fit (the backends' threads=), floor and matmul (default 1, the "
                             "training loop's default; 2 uses both cores of the project's machine)")
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error("--threads takes a positive integer")
    global THREADS
    THREADS = args.threads
    torch.set_num_threads(THREADS)
    if args.profile:
        profile(args.profile, args.profile_steps)
        return 0
    kept = keep_freed_memory()
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{THREADS} torch thread{'s' if THREADS > 1 else ''}; allocator keeps freed memory (inference.allocator.keep_freed_memory): {kept}")
    print("The machine may be shared: figures are noisy; compare only figures of one run.")
    only = None if args.only is None else [c.strip() for c in args.only.split(",")]
    if only is not None and not set(only) <= set(CONFIGS):
        parser.error(f"--only takes {', '.join(CONFIGS)}")
    run_device("cpu", args.seconds, args.repeats, only)
    if torch.cuda.is_available():
        run_device("cuda", args.seconds, args.repeats, only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
