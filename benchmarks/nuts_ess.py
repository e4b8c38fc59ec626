"""NUTS effective samples per second: centered against non-centered weights, same budget.

Model: boston split 0 (455 training points, standardized with the training split's
mean and std), a 13-50-1 ReLU MLP with the ARD half-Cauchy prior
``bnn_priors.prior("half-cauchy", "ard")`` on both weight matrices, N(0, 1) biases
and a learned Gaussian precision (Gamma(1, 0.1) prior).

Both parametrizations of ``inference.NUTS`` run with the same budget (``--samples``
kept draws after ``--warmup`` adaptation iterations, one chain, the same seed,
``--max-tree-depth`` (default 10), target acceptance 0.8, JIT on):

* ``centered``: ``w ~ N(0, lambda_i^2)`` as the model declares it (Neal's funnel);
* ``non-centered``: ``w = lambda_i * z``, ``z ~ N(0, 1)`` (``LocScaleReparam``).

For each it prints the wall time (warmup and sampling, JIT compilation included),
the median and the minimum bulk ESS over the 650 first-layer weights, the median
ESS per second, the number of divergent transitions after warmup and the largest
split R-hat over every site (one chain: ArviZ's rank-normalized R-hat of its two
halves), and the adapted step size and mean acceptance statistic. Torch runs on
one thread (``torch.set_num_threads(1)``, ``OMP_NUM_THREADS=1``) for stable
timings; on a shared machine the wall times still depend on its load.

    python benchmarks/nuts_ess.py [--samples 200] [--warmup 200] [--seed 0] [--max-tree-depth 10]
                                  [--data-dir DIR] [--forms centered,non-centered] [--progress]

At the defaults each parametrization can take 10 minutes or more on one CPU thread
(trees of up to 1024 leapfrog steps, about 1-2 ms per gradient through Pyro):
lower ``--samples``/``--warmup`` or ``--max-tree-depth`` for a quicker look.
"""

from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

import bnn_priors as bp  # noqa: E402
from bnn_priors.data import load_dataset  # noqa: E402
from inference.nuts import NUTS  # noqa: E402
from models import BayesianMLP, GaussianLikelihood  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO.parent / "shared" / "data" / "uci"
HIDDEN = 50


def load_boston(data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Training part of boston split 0, standardized on itself."""
    split = load_dataset("boston", data_dir=data_dir, download=False).split(0)
    return split.X_train, split.y_train


def run(form: str, X: torch.Tensor, y: torch.Tensor, args) -> dict:
    model = BayesianMLP(X.shape[1], 1, hidden=(HIDDEN,), prior=bp.prior("half-cauchy", "ard"),
                        likelihood=GaussianLikelihood())
    backend = NUTS(num_samples=args.samples, warmup=args.warmup, parametrization=form, seed=args.seed,
                   max_tree_depth=args.max_tree_depth, progress=args.progress)
    post = backend.fit(model, X, y)
    diag = post.diagnostics().set_index("site")  # one replica: one row per site
    w = diag.loc["layer0.weight"]
    seconds = post.info["seconds"]
    return {
        "parametrization": form,
        "seconds": seconds,
        "ess_median": float(w["ess_bulk_median"]),
        "ess_min": float(w["ess_bulk_min"]),
        "ess_per_s": float(w["ess_bulk_median"]) / seconds,
        "divergences": post.info["divergences"],
        "r_hat_max": float(diag["r_hat_max"].max()),
        "step_size": post.info["step_size"][0][0],
        "accept": post.info["mean_accept_prob"][0][0],
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=200, help="kept draws per parametrization (default 200)")
    parser.add_argument("--warmup", type=int, default=200, help="warmup iterations (default 200)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-tree-depth", type=int, default=10)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR,
                        help=f"folder holding boston/ (default {DEFAULT_DATA_DIR})")
    parser.add_argument("--forms", default="centered,non-centered", help="comma-separated parametrizations")
    parser.add_argument("--progress", action="store_true", help="show Pyro's progress bar")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    X, y = load_boston(args.data_dir)
    X = torch.as_tensor(X, dtype=torch.float32)
    y = torch.as_tensor(y, dtype=torch.float32)
    print(f"boston split 0: {X.shape[0]} training points, {X.shape[1]} features; 13-{HIDDEN}-1 MLP, "
          f"ARD half-Cauchy prior, learned precision")
    print(f"budget: {args.warmup} warmup + {args.samples} samples, 1 chain, seed {args.seed}, "
          f"max_tree_depth {args.max_tree_depth}, target_accept 0.8, JIT on; "
          f"torch {torch.__version__}, {torch.get_num_threads()} thread, {platform.processor() or platform.machine()}")
    rows = []
    for form in [f.strip() for f in args.forms.split(",") if f.strip()]:
        rows.append(run(form, X, y, args))
        r = rows[-1]
        print(f"  done {form}: {r['seconds']:.1f} s", flush=True)
    header = (f"{'parametrization':<15} {'wall s':>8} {'ESS med':>8} {'ESS min':>8} {'ESS/s':>8} "
              f"{'diverg.':>8} {'max R-hat':>10} {'step':>8} {'accept':>7}")
    print("\nfirst-layer weights (650): bulk ESS; R-hat: max split R-hat over all sites")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['parametrization']:<15} {r['seconds']:>8.1f} {r['ess_median']:>8.1f} {r['ess_min']:>8.1f} "
              f"{r['ess_per_s']:>8.3f} {r['divergences']:>8d} {r['r_hat_max']:>10.3f} {r['step_size']:>8.2g} "
              f"{r['accept']:>7.3f}")


if __name__ == "__main__":
    main()
