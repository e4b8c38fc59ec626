"""Choose training settings on validation data only: never on the test splits.

For each setting, trains the splits' replicas on the first part of each training
split and reports RMSE / log-likelihood on a held-out 20% of it (random, seeded:
``bnn_priors.data.stack_splits(..., validation=0.2)``). The ``nalisnick2019``
preset's SVI-EM settings were chosen with:

    python benchmarks/validation_study.py boston yacht --splits 0-4 \\
        --settings 3000:0.01:full:half-cauchy:ard 10000:0.01:128:half-cauchy:ard \\
                   10000:0.01:full:half-cauchy:ard 3000:0.01:full:inverse-nakagami:ard

A setting is ``steps:lr:batch:noise:structure[:guide]`` (batch ``full`` or a size;
noise a name with optional parameters, e.g. ``inverse-nakagami/shape=1``; guide
``mean-field``, the default, or ``map``), fitted with
``SVI(scale_updates="em", guide=guide)`` on ``resnet-2x50``. The ``map-em`` method
(point-estimate weights, Nalisnick et al.'s EM) was compared with:

    python benchmarks/validation_study.py boston yacht concrete --splits 0-4 \
        --settings 3000:0.01:full:half-cauchy:ard 3000:0.01:full:half-cauchy:ard:map \
                   10000:0.01:full:half-cauchy:ard:map 3000:0.01:full:inverse-nakagami:ard:map
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

import bnn_priors as bp
from bnn_priors.data import load_dataset, stack_splits
from inference import SVI
from models import BayesianResNet

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("datasets", nargs="+")
    parser.add_argument("--splits", default="0-4", help="a range like 0-4")
    parser.add_argument("--settings", nargs="+", required=True)
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "uci"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    lo, hi = (int(v) for v in args.splits.split("-"))
    for name in args.datasets:
        stacked = stack_splits(load_dataset(name, data_dir=args.data_dir), splits=list(range(lo, hi + 1)),
                               validation=0.2, seed=0)
        R, _, D = stacked.X_train.shape
        for setting in args.settings:
            steps, lr, batch, noise, structure, *rest = setting.split(":")
            guide = rest[0] if rest else "mean-field"
            noise, *params = noise.split("/")
            kwargs = {k: float(v) for k, v in (p.split("=") for p in params)}
            model = BayesianResNet(D, 1, hidden=(50, 50), prior=bp.prior(noise, structure, **kwargs), replicas=R)
            start = time.perf_counter()
            posterior = SVI(steps=int(steps), lr=float(lr), batch_size=None if batch == "full" else int(batch),
                            scale_updates="em", guide=guide, progress=False, seed=list(range(R))).fit(
                model, stacked.X_train, stacked.y_train)
            ev = posterior.evaluate(stacked.X_test, stacked.y_test, y_scale=stacked.y_std, num_samples=200)
            print(f"{name:8} {setting:38} validation RMSE {ev['rmse'].mean():.3f} ± "
                  f"{ev['rmse'].std(ddof=1) / np.sqrt(R):.3f}  LL {ev['log_likelihood'].mean():.3f}  "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
