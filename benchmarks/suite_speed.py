"""Wall time of benchmark rows, one run at a time versus all splits batched as replicas.

Runs the yacht and power rows of the ``nalisnick2019`` preset (MC dropout, the
six SVI-EM and the three MAP-EM shrinkage priors, 20 splits each) through the same
runner (:func:`bnn_priors.suite.run_suite`) in up to three modes: ``one-at-a-time``
(``max_replicas=1``, one model per split, as a plain loop would), ``batched`` (all
splits of a configuration as the replicas of one model) and ``auto`` (the runner's
default: on a CPU, as many replicas as keep a step under ``CPU_BATCH_ROWS`` rows;
on a GPU, batched). Prints wall time, runs per second, training steps per second
and, on CUDA, peak GPU memory; then checks that the modes gave the same RMSEs (the backends draw every replica's random numbers from its own stream).

The preset's full budgets take long on a CPU; ``--steps``/``--epochs`` scale them
down for a measurement, and the per-step figures extrapolate linearly.

    python benchmarks/suite_speed.py --datasets yacht,power --steps 200 --epochs 10
    python benchmarks/suite_speed.py --device cuda --steps 10000 --epochs 400   # the preset's budgets
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bnn_priors.data import load_dataset
from bnn_priors.suite import run_suite
from bnn_priors.suite.presets import (
    NALISNICK_MC_DROPOUT_EPOCHS,
    NALISNICK_MC_DROPOUT_OPTIONS,
    NALISNICK_SVI_OPTIONS,
    NALISNICK_SVI_STEPS,
    preset_configs,
)
from bnn_priors.suite.store import read_results

REPO = Path(__file__).resolve().parents[1]


def _steps(cfgs, n_train: int) -> int:
    """Optimisation steps the runs of one data set take in total (SVI: steps; MC dropout: epochs x batches)."""
    batches = -(-n_train // NALISNICK_MC_DROPOUT_OPTIONS["batch_size"])
    total = 0
    for cfg in cfgs:
        if cfg.inference == "mc-dropout":
            total += cfg.budget * batches
        else:
            total += cfg.budget
    return total


def measure(cfgs, data_dir, device: str, max_replicas: int | None) -> tuple[float, dict[str, float], float]:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "runs.sqlite"
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        report = run_suite(cfgs, db, device=device, data_dir=data_dir, progress=False, max_replicas=max_replicas)
        wall = time.perf_counter() - start
        if report.failed:
            raise SystemExit(f"{report.failed} runs failed: {report.summary()}")
        peak = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else float("nan")
        rows = read_results(db)
        rmse = dict(zip(rows["config_hash"], rows["rmse"]))
    return wall, rmse, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default="yacht,power")
    parser.add_argument("--splits", default="all")
    parser.add_argument("--steps", type=int, default=500, help=f"SVI-EM and MAP-EM steps (preset: {NALISNICK_SVI_STEPS})")
    parser.add_argument("--epochs", type=int, default=20, help=f"MC dropout epochs (preset: {NALISNICK_MC_DROPOUT_EPOCHS})")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "uci"))
    parser.add_argument("--modes", default="one-at-a-time,batched,auto")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("CUDA was asked for but is not available; nothing measured.")
        return
    torch.set_num_threads(1)
    print(f"device {args.device}; torch threads 1; load average {os.getloadavg()[0]:.1f} (the machine may be shared)")
    print(f"SVI-EM batch size {NALISNICK_SVI_OPTIONS.get('batch_size')}, MC dropout batch size "
          f"{NALISNICK_MC_DROPOUT_OPTIONS['batch_size']}\n")
    header = f"{'data set':10} {'mode':14} {'runs':>5} {'wall s':>8} {'runs/s':>8} {'steps/s':>9} {'GPU MiB':>8}"
    print(header)
    print("-" * len(header))
    for dataset in args.datasets.split(","):
        cfgs = preset_configs("nalisnick2019", datasets=dataset, splits=args.splits,
                              budget={"steps": args.steps, "epochs": args.epochs})
        steps = _steps(cfgs, len(load_dataset(dataset, data_dir=args.data_dir).train_index(0)))
        results = {}
        for mode in args.modes.split(","):
            max_replicas = {"one-at-a-time": 1, "batched": 64, "auto": None}[mode]
            wall, rmse, peak = measure(cfgs, args.data_dir, args.device, max_replicas)
            results[mode] = rmse
            print(f"{dataset:10} {mode:14} {len(cfgs):5d} {wall:8.1f} {len(cfgs) / wall:8.2f} "
                  f"{steps / wall:9.0f} {peak:8.0f}")
        if len(results) >= 2:
            a, *others = results.values()
            diff = np.array([abs(a[h] - b[h]) / abs(a[h]) for b in others for h in a])
            print(f"{'':10} same RMSEs in every mode: median relative difference {np.median(diff):.1e}, "
                  f"max {diff.max():.1e}")


if __name__ == "__main__":
    main()
