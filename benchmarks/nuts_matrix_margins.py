"""How far the backend matrix's NUTS cases pass their bars, over many seeds at once.

``tests/test_backends.py`` checks every (noise model x structure) that NUTS supports
on a 1-D problem with a gap, under one seed: the predictive mean's RMSE on the data
must be below 0.75 of the prior predictive mean's, and the predictive sd beyond the
data above that on the data. This script fits the same models and sampler settings
for seeds ``--seeds`` (one batched fit per combination: each replica is the fit that
seed gives alone, as ``tests/test_hmc.py`` checks) and prints, per combination, the
largest RMSE ratio (bar 0.75) and the smallest ratio of predictive sd beyond / on the
data (bar 1), so the margins are measured rather than hoped for.

    python benchmarks/nuts_matrix_margins.py [--seeds 1-12] [--noise half-cauchy] [--structure ard-add]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import test_backends as tb  # noqa: E402

import bnn_priors as bp  # noqa: E402
from models import BayesianMLP, GaussianLikelihood  # noqa: E402


def _seeds(text: str) -> list[int]:
    lo, _, hi = text.partition("-")
    return list(range(int(lo), int(hi or lo) + 1))


def margins(noise: str, structure: str, seeds: list[int]) -> dict:
    under = bp.prior(noise, structure, **tb.NOISE_PARAMS.get(noise, {}))
    model = BayesianMLP(1, 1, hidden=(8,), prior=[bp.prior("normal"), under],
                        likelihood=GaussianLikelihood(precision=1 / tb.NOISE_STD**2), replicas=len(seeds))
    backend = tb.BACKEND_FACTORIES["nuts"]()
    backend.seed = seeds
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        post = backend.fit(model, tb.X, tb.Y)
    seconds = time.perf_counter() - start
    pred = post.predict(tb.X_TEST, num_samples=200)
    mean = np.asarray(pred.mean).reshape(len(seeds), -1)
    std = np.asarray(pred.std).reshape(len(seeds), -1)
    truth = tb.Y_TEST.numpy()[tb.ON_DATA]
    prior_rmse = float(np.sqrt(np.mean(truth**2)))
    ratio = np.sqrt(np.mean((mean[:, tb.ON_DATA] - truth) ** 2, -1)) / prior_rmse
    spread = std[:, tb.BEYOND].mean(-1) / std[:, tb.ON_DATA].mean(-1)
    return {"ratio": ratio, "spread": spread, "seconds": seconds}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="1-12", help="seeds, e.g. 1-12 (the test uses 1)")
    parser.add_argument("--noise", default="", help="one noise model (default: every one NUTS supports)")
    parser.add_argument("--structure", default="", help="one structure (default: all)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    seeds = _seeds(args.seeds)
    backend = tb.BACKEND_FACTORIES["nuts"]()
    print(f"seeds {seeds[0]}-{seeds[-1]}; bars: RMSE ratio < 0.75, sd beyond / on the data > 1")
    print(f"{'noise':<18} {'structure':<9} {'max ratio':>9} {'seed':>5} {'min sd ratio':>12} {'seed':>5} {'s':>6}")
    worst_ratio, worst_spread = 0.0, np.inf
    for noise in [args.noise] if args.noise else tb.NOISES:
        for structure in [args.structure] if args.structure else tb.STRUCTURES:
            try:
                model = tb._model(noise, structure, "nuts")
            except bp.errors.InvalidParameterError:
                continue  # a prior without that structure (the normal prior has no shared scales)
            if not backend.supports(model):
                continue
            m = margins(noise, structure, seeds)
            i, j = int(np.argmax(m["ratio"])), int(np.argmin(m["spread"]))
            worst_ratio, worst_spread = max(worst_ratio, m["ratio"][i]), min(worst_spread, m["spread"][j])
            print(f"{noise:<18} {structure:<9} {m['ratio'][i]:>9.3f} {seeds[i]:>5} {m['spread'][j]:>12.3f} "
                  f"{seeds[j]:>5} {m['seconds']:>6.1f}", flush=True)
    print(f"worst over all: RMSE ratio {worst_ratio:.3f} (bar 0.75), sd ratio {worst_spread:.3f} (bar 1)")


if __name__ == "__main__":
    main()
