"""How far a perturbation of the size of float rounding moves the SVI-EM and MAP-EM fits, split by split.

The ``nalisnick2019`` preset's SVI-EM and MAP-EM runs (resnet-2x50, inverse-Nakagami
noise, ARD / ADD / ARD-ADD, full-batch Adam at lr 0.01 for 3000 steps) reproduce to
the last bit on one machine but not on another CPU (issue 14, item 11). This script
measures how much the test RMSE of each split moves when the floating-point path
changes by a rounding error, and how that depends on the learning rate and on the
schedule of the closed-form scale (EM) update.

Each setting is ONE batched model (the runner's way: replicas train independently,
each on its own split and random stream) whose replicas are the chosen splits
several times over: once as they are (the reference), and once per in-batch
perturbation. The perturbations:

``input``
    the training inputs multiplied by ``1 + 2^-23`` in float32: every nonzero input
    moves by one or two units in the last place, about what one differently rounded
    product does. Same seed, same random draws.
``seed``
    the same split with seed + 1 (another initialisation and other random draws): a
    calibration, the spread of an entirely different run of the same method.
``blas``
    the same batch rerun in a child process with ``MKL_CBWR=COMPATIBLE``: MKL's
    conditional-numerical-reproducibility GEMM path instead of the kernel it
    dispatches for this CPU, i.e. another summation order in every matrix product,
    which is what another x86-64 CPU's BLAS kernels do (the ATen elementwise kernels
    stay as they are). It costs a second fit.

A replica's perturbed copy is compared with its reference copy: the relative change
``|rmse' - rmse| / rmse`` per split, and the same for the training RMSE. A null
control (``--perturb none``: an unperturbed second copy) shows no change of the
training RMSE and at most the evaluation's float rounding (1e-7) in the test RMSE.
With ``--committed DB`` the reference copies of the preset's own setting are also
compared with the committed rows (``committed``): those were trained 20 replicas to
a job, so the only difference is the batch's shape.

Schedules of the EM scale update (``--schedules``): ``every:1`` is the backend's own
(the closed-form update before every gradient step); ``every:K`` updates the scales
before every K-th step only, ``damped:ETA`` moves each log-variance a fraction ETA of
the way to its closed-form value before every step. The backend has no such options:
for this study the script wraps the variational family's ``update_scales`` while a
fit runs (no library code changes); ``every:1`` runs the backend unchanged.

The final training loss is the backend's objective at the last step per replica
(``info["final_loss"]`` / replicas: -log joint / N for MAP-EM, a one-particle
-ELBO / N for SVI-EM), averaged over the batch. Times are the CPU seconds of the fit
(``time.process_time``) with one torch thread; the wall time is printed too.

Examples (the study of results/README.md, "Reproducibility across machines", about 21
CPU-minutes in all)::

    export OMP_NUM_THREADS=1
    # the preset's setting, 20 splits: 1-ulp inputs, MKL's other GEMM path, another seed
    python benchmarks/rounding_sensitivity.py --methods map-em --splits 0-19 --perturb input,seed,blas \
        --committed results/nalisnick2019.sqlite
    python benchmarks/rounding_sensitivity.py --methods svi-em --splits 0-9 --perturb input
    # learning rate at equal and growing lr x steps, and the EM schedule (MAP-EM ARD-ADD)
    python benchmarks/rounding_sensitivity.py --methods map-em --structures ard-add --splits 0-9 \
        --lr 0.01:500,0.01:1000,0.01:3000,0.003:1667,0.003:3333,0.003:10000,0.001:5000,0.001:10000,0.001:30000
    python benchmarks/rounding_sensitivity.py --methods map-em --structures ard-add --splits 0-9 \
        --schedules every:1,every:10,damped:0.1
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "uci"
#: float32's machine epsilon: ``x * (1 + EPS)`` is ``x`` moved by one or two units in the last place.
EPS = 2.0**-23
IN_BATCH = ("none", "input", "seed")
PERTURBATIONS = (*IN_BATCH, "blas")
#: The preset's own setting (``nalisnick2019``: lr 0.01, 3000 steps, the backend's EM schedule).
PRESET_SETTING = (0.01, 3000, ("every", 1))
#: The environment of the ``blas`` perturbation's child process.
BLAS_ENV = {"MKL_CBWR": "COMPATIBLE"}


# ----------------------------------------------------------------- schedules
def parse_schedule(text: str) -> tuple[str, float]:
    kind, _, value = text.partition(":")
    if kind == "every" and value.isdigit() and int(value) >= 1:
        return kind, int(value)
    if kind == "damped":
        try:
            eta = float(value)
        except ValueError:
            eta = -1.0
        if 0 < eta <= 1:
            return kind, eta
    raise SystemExit(f"schedule must be every:K (K >= 1) or damped:ETA (0 < ETA <= 1), got {text!r}")


@contextlib.contextmanager
def em_schedule(schedule: tuple[str, float]):
    """Wrap the SVI variational family's closed-form scale update with ``schedule`` while a fit runs."""
    from inference import svi

    kind, value = schedule
    if (kind, value) == ("every", 1):
        yield
        return
    original = svi._Variational.update_scales
    calls = {"n": 0}

    def every(self):
        if calls["n"] % int(value) == 0:
            original(self)
        calls["n"] += 1

    def damped(self):
        before = {k: v.clone() for k, v in self.em_log_var.items()}
        original(self)
        if calls["n"] > 0:  # the first update starts from the prior's centre: take it whole
            for k, v in self.em_log_var.items():
                self.em_log_var[k] = before[k] + value * (v - before[k])
        calls["n"] += 1

    svi._Variational.update_scales = every if kind == "every" else damped
    try:
        yield
    finally:
        svi._Variational.update_scales = original


# ----------------------------------------------------------------------- fits
def fit_batch(method: str, structure: str, dataset: str, splits: list[int], lr: float, steps: int,
              copies: list[str], schedule: tuple[str, float], data_dir: str) -> dict:
    """One batched fit whose replicas are ``splits`` once per entry of ``copies`` (``none``: as they are,
    ``input``: inputs x (1 + EPS), ``seed``: seed + 1). Test RMSE per replica, the mean last-step
    training loss per replica, CPU and wall seconds."""
    import torch

    from bnn_priors.data import stack_splits
    from bnn_priors.suite import expand_grid
    from bnn_priors.suite.build import build_model
    from bnn_priors.suite.data_options import resolve_options
    from bnn_priors.suite.evaluation import evaluate
    from bnn_priors.suite.loading import load
    from bnn_priors.suite.methods import get_method
    from bnn_priors.suite.presets import NALISNICK_ARCH_SHRINKAGE

    torch.set_num_threads(1)
    cfg = expand_grid(dataset, splits[:1], "inverse-nakagami", structure, NALISNICK_ARCH_SHRINKAGE, method,
                      budget={"steps": steps}, options={"lr": lr})[0]
    ds = load(dataset, data_dir)
    n = len(splits)
    data = stack_splits(ds, splits * len(copies))
    X_train = data.X_train.astype(np.float32)
    seeds = []
    for c, kind in enumerate(copies):
        if kind == "input":
            X_train[c * n:(c + 1) * n] *= np.float32(1 + EPS)
        seeds += [cfg.seed + (1 if kind == "seed" else 0)] * n
    R = n * len(copies)
    backend = get_method(method).make_backend(cfg.budget, resolve_options(cfg, X_train.shape[1], data.y_std),
                                              seed=seeds, progress=False, threads=1)
    model = build_model(cfg, ds.X.shape[1], replicas=R)
    cpu, wall = time.process_time(), time.perf_counter()
    with em_schedule(schedule):
        posterior = backend.fit(model, X_train, data.y_train)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    width = max(ds.X.shape[1], *cfg.architecture.hidden)
    rmse, _ = evaluate(posterior, data.X_test, data.y_test, cfg.eval_samples, data.y_std, width)
    train_rmse, _ = evaluate(posterior, X_train, data.y_train, cfg.eval_samples, data.y_std, width)
    return {"rmse": [float(v) for v in rmse], "train_rmse": [float(v) for v in train_rmse],
            "loss": float(posterior.info["final_loss"]) / R,
            "cpu": cpu, "wall": wall, "replicas": R}


def fit_in_child(args: dict, env: dict) -> dict:
    """:func:`fit_batch` in a fresh process with ``env`` added (set before torch loads)."""
    out = subprocess.run([sys.executable, __file__, "--child", json.dumps(args)], env={**os.environ, **env},
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"child fit failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# -------------------------------------------------------------------- figures
def committed_rmse(results: str, method: str, structure: str, dataset: str, splits: list[int]) -> np.ndarray | None:
    """The committed test RMSE of the preset's ``method`` / ``structure`` runs on ``splits`` (None if any is missing)."""
    from bnn_priors.suite import read_results

    df = read_results(results)
    df = df[(df["status"] == "ok") & (df["dataset"] == dataset) & (df["inference"] == method)
            & (df["noise"] == "inverse-nakagami") & (df["structure"] == structure) & (df["seed"] == 0)
            & (df["budget"] == PRESET_SETTING[1])]
    df = df[[json.loads(c)["options"] == {"lr": PRESET_SETTING[0]} for c in df["config"]]]
    by_split = dict(zip(df["split"], df["rmse"]))
    return np.asarray([by_split[k] for k in splits]) if all(k in by_split for k in splits) else None


def changes(ref: np.ndarray, other: np.ndarray, train_ref=None, train_other=None) -> dict:
    """Relative test-RMSE changes per split; with training RMSEs, their median relative change too."""
    rel = np.abs(other - ref) / ref
    out = {"median": float(np.median(rel)), "max": float(rel.max()), "over_1pct": float(np.mean(rel > 0.01)),
           "over_10pct": float(np.mean(rel > 0.10)), "mean_other": float(other.mean()), "train_median": math.nan}
    if train_ref is not None:
        out["train_median"] = float(np.median(np.abs(train_other - train_ref) / train_ref))
    return out


def mean_se(x: np.ndarray) -> str:
    return f"{x.mean():.3f} ± {x.std(ddof=1) / math.sqrt(len(x)):.3f}" if len(x) > 1 else f"{x.mean():.3f}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default="map-em,svi-em", help="map-em and/or svi-em (default: both)")
    parser.add_argument("--structures", default="ard,add,ard-add")
    parser.add_argument("--dataset", default="yacht")
    parser.add_argument("--splits", default="0-19", help="e.g. 0-9 (default %(default)s)")
    parser.add_argument("--lr", default="0.01:3000", help="LR:STEPS pairs, comma-separated (default: the preset's)")
    parser.add_argument("--schedules", default="every:1", help="every:K and/or damped:ETA, comma-separated")
    parser.add_argument("--perturb", default="input", help=f"any of {', '.join(PERTURBATIONS)}, comma-separated")
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA), help="UCI data folder (default: %(default)s)")
    parser.add_argument("--committed", help="committed results database: compare the preset's own setting with it")
    parser.add_argument("--json", help="also write every figure to this file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        spec = json.loads(args.child)
        spec["schedule"] = tuple(spec["schedule"])
        print(json.dumps(fit_batch(**spec)))
        return 0

    from bnn_priors.suite import parse_splits

    splits = parse_splits(args.splits)
    if splits is None:
        raise SystemExit("give the splits as a list or range, e.g. --splits 0-19")
    perturb = [p.strip() for p in args.perturb.split(",") if p.strip()]
    unknown = sorted(set(perturb) - set(PERTURBATIONS))
    if unknown or not perturb:
        raise SystemExit(f"unknown perturbation {unknown}; choose from {', '.join(PERTURBATIONS)}")
    copies = ["none", *[p for p in perturb if p in IN_BATCH]]
    budgets = []
    for item in args.lr.split(","):
        lr, _, steps = item.partition(":")
        budgets.append((float(lr), int(steps)))
    schedules = [parse_schedule(s.strip()) for s in args.schedules.split(",")]
    rows, total_cpu = [], 0.0
    for method in args.methods.split(","):
        for structure in args.structures.split(","):
            for lr, steps in budgets:
                for schedule in schedules:
                    spec = {"method": method, "structure": structure, "dataset": args.dataset, "splits": splits,
                            "lr": lr, "steps": steps, "copies": copies, "schedule": list(schedule),
                            "data_dir": args.data_dir}
                    fit = fit_batch(**{**spec, "schedule": schedule})
                    n = len(splits)
                    rmse = np.asarray(fit["rmse"]).reshape(len(copies), n)
                    train = np.asarray(fit["train_rmse"]).reshape(len(copies), n)
                    ref = rmse[0]
                    found = {kind: changes(ref, rmse[c], train[0], train[c]) for c, kind in enumerate(copies) if c > 0}
                    cpu, wall = fit["cpu"], fit["wall"]
                    if "blas" in perturb:
                        other = fit_in_child(spec, BLAS_ENV)
                        found["blas"] = changes(ref, np.asarray(other["rmse"]).reshape(len(copies), n)[0],
                                                train[0], np.asarray(other["train_rmse"]).reshape(len(copies), n)[0])
                        cpu, wall = cpu + other["cpu"], wall + other["wall"]
                    if args.committed and (lr, steps, schedule) == PRESET_SETTING:
                        before = committed_rmse(args.committed, method, structure, args.dataset, splits)
                        if before is not None:
                            found["committed"] = changes(ref, before)
                    total_cpu += cpu
                    for kind, figures in found.items():
                        rows.append({"method": method, "structure": structure, "lr": lr, "steps": steps,
                                     "schedule": ":".join(map(str, schedule)), "perturbation": kind,
                                     "splits": n, "rmse_ref": mean_se(ref), "train_rmse_ref": float(train[0].mean()),
                                     "loss": fit["loss"],
                                     "cpu_s": cpu, "wall_s": wall, **figures})
                    r = rows[-1]
                    print(f"{method} {structure} lr={lr:g} steps={steps} {r['schedule']}: {r['rmse_ref']}, "
                          f"{cpu:.0f} CPU s", file=sys.stderr, flush=True)
    print("| method | structure | lr | steps | EM schedule | perturbation | median rel. change | largest | "
          "> 1% | > 10% | test RMSE (ref., mean ± SE) | mean of perturbed | train RMSE (ref.) | "
          "its median rel. change | final train loss | CPU s (wall) |")
    print("|" + " --- |" * 16)
    for r in rows:
        print(f"| {r['method']} | {r['structure']} | {r['lr']:g} | {r['steps']} | {r['schedule']} | "
              f"{r['perturbation']} | {r['median']:.2g} | {r['max']:.2g} | {r['over_1pct']:.0%} | "
              f"{r['over_10pct']:.0%} | {r['rmse_ref']} | {r['mean_other']:.3f} | {r['train_rmse_ref']:.3f} | "
              f"{r['train_median']:.2g} | {r['loss']:.3f} | "
              f"{r['cpu_s']:.0f} ({r['wall_s']:.0f}) |")
    print(f"\n{args.dataset}, {len(splits)} splits; {total_cpu:.0f} CPU s of fitting in all", file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
