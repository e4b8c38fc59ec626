"""Gradient variance of the SVI objective with and without the local reparameterization trick.

Kingma, Salimans & Welling (2015), "Variational Dropout and the Local
Reparameterization Trick": sampling each unit's pre-activation
``N(h mu, h^2 sigma^2)`` per data point, instead of one weight matrix per
mini-batch, makes the per-data-point terms of the gradient independent, so its
variance falls as 1/M in the batch size M.

Setting: boston split 0 (455 training points, standardized), a 13-50-1 ReLU MLP with
a learned Gaussian precision, under two priors: the ARD half-Cauchy scale mixture
``bnn_priors.prior("half-cauchy", "ard")`` and the plain ``bnn_priors.prior("normal")``.
The variational point is FIXED: a short ``inference.SVI`` fit (``--fit-steps``, 300 by
default) from the usual initialisation, copied into a fresh ``_Variational`` (the
backend's direct ELBO). At that point ``--draws`` gradients of the training loss
``-ELBO / N`` (one particle) are taken with ``torch.autograd.grad`` with respect to the
weight means and weight log-stds of each layer, for

* a mini-batch of ``--batch-size`` (32) rows drawn afresh for every gradient (the
  gradient SGD sees: Monte Carlo noise plus data subsampling),
* one fixed mini-batch of that size (Monte Carlo noise only),
* the full batch (Monte Carlo noise only),

with and without local reparameterization. The same batches are used for both
estimators. Reported: the per-coordinate variance of the gradient averaged over the
coordinates of each parameter group, and the ratio without / with the trick.

    python benchmarks/gradient_variance.py [--draws 500] [--fit-steps 300] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import pyro
import torch

import bnn_priors as bp
from bnn_priors.data import load_dataset
from inference import SVI
from inference.common import ReplicaRandom
from inference.svi import _Variational
from models import BayesianMLP, GaussianLikelihood

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO.parent / "shared" / "data" / "uci"
HIDDEN = 50
PRIORS = {
    "half-cauchy/ard": lambda: bp.prior("half-cauchy", "ard"),
    "normal": lambda: bp.prior("normal"),
}
GROUPS = ("weight.loc", "weight.log_std")


def load_boston(data_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    split = load_dataset("boston", data_dir=data_dir, download=False).split(0)
    return torch.as_tensor(split.X_train, dtype=torch.float32), torch.as_tensor(split.y_train, dtype=torch.float32)


def fitted_variational(model: BayesianMLP, X, y, steps: int, seed: int) -> tuple[_Variational, float]:
    """A ``_Variational`` at the point a short ``inference.SVI`` fit reaches, and that fit's last loss."""
    post = SVI(steps=steps, seed=seed, progress=False).fit(model, X, y)
    return post.variational, post.info["final_loss"]


def gradient_draws(q: _Variational, X, y, batches: list[torch.Tensor | None], local: bool, seed: int) -> dict[str, torch.Tensor]:
    """``len(batches)`` gradients of ``-ELBO / N`` at the fixed point: ``{param: (draws, numel)}``."""
    model = q.model
    Xc = model.check_inputs(X)
    yc = model.check_targets(y, Xc)
    N = Xc.shape[1]
    names = [f"{layer.name}.{group}" for layer in model.layers for group in GROUPS]
    params = [q.params[n] for n in names]
    rng = ReplicaRandom([seed], model.device)  # the Monte Carlo noise
    out: list[list[torch.Tensor]] = [[] for _ in names]
    with pyro.validation_enabled(False):
        for idx in batches:
            Xb, yb = (Xc, yc) if idx is None else (Xc[:, idx], yc[:, idx])
            loss = -q.elbo(Xb, yb, N, 1, local, rng).sum() / N
            for store, g in zip(out, torch.autograd.grad(loss, params)):
                store.append(g.detach().flatten())
    return {n: torch.stack(v) for n, v in zip(names, out)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--draws", type=int, default=500, help="gradient draws per setting")
    parser.add_argument("--fit-steps", type=int, default=300, help="SVI steps to the fixed point")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    X, y = load_boston(args.data_dir)
    N = X.shape[0]
    M = args.batch_size

    print(f"Gradient variance of -ELBO/N at a fixed variational point: boston split 0 (N={N}), "
          f"{X.shape[1]}-{HIDDEN}-1 MLP, learned precision,")
    print(f"point = {args.fit_steps} steps of inference.SVI (Adam lr 0.01, local reparameterization) from the usual "
          f"initialisation; {args.draws} gradient draws per setting, one particle each.")
    print("var = per-coordinate variance over the draws, averaged over the coordinates of the group; "
          "ratio = var without / var with local reparameterization.")
    print("(Timings are not measured here; the machine may be loaded, which does not affect these figures.)\n")

    batch_gen = torch.Generator().manual_seed(args.seed + 12345)
    fixed = torch.randperm(N, generator=batch_gen)[:M]
    settings = {
        f"{M} (new batch per draw)": [torch.randperm(N, generator=batch_gen)[:M] for _ in range(args.draws)],
        f"{M} (one fixed batch)": [fixed] * args.draws,
        f"full ({N})": [None] * args.draws,
    }

    header = f"{'prior':16s} {'batch':24s} {'parameter group':22s} {'var with LRT':>13s} {'var without':>13s} {'ratio':>8s}"
    print(header)
    print("-" * len(header))
    for prior_name, make_prior in PRIORS.items():
        model = BayesianMLP(X.shape[1], 1, hidden=(HIDDEN,), prior=make_prior(), likelihood=GaussianLikelihood())
        q, fit_loss = fitted_variational(model, X, y, args.fit_steps, args.seed)
        for setting, batches in settings.items():
            with_lrt = gradient_draws(q, X, y, batches, True, args.seed + 1)
            without = gradient_draws(q, X, y, batches, False, args.seed + 1)
            for name in with_lrt:
                v_with = float(with_lrt[name].var(0).mean())
                v_without = float(without[name].var(0).mean())
                ratio = v_without / v_with if v_with > 0 else math.inf
                print(f"{prior_name:16s} {setting:24s} {name:22s} {v_with:13.4e} {v_without:13.4e} {ratio:8.1f}")
        print(f"{'':16s} (training loss -ELBO/N at the end of the {args.fit_steps}-step fit: {fit_loss:.4f})")
    print(f"\n{time.perf_counter() - start:.0f} s in all.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
