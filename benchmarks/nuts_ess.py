"""NUTS effective samples per second: this project's batched NUTS, Pyro's and NumPyro's, on one model.

Model: boston (455 training points of a split, standardized with the training
split's mean and std), a 13-50-1 tanh MLP with the ARD half-Cauchy prior
``bnn_priors.prior("half-cauchy", "ard")`` on both weight matrices, N(0, 1) biases
and a learned Gaussian precision (Gamma(1, 0.1) prior); every sampler moves the
non-centred weights ``w = lambda * z`` (``parametrization="auto"``; ``--parametrization
centered`` samples the batched and Pyro arms centred, NumPyro's stays non-centred).

First table, split 0, one chain each by default (``--chains``), the same budget
(``--warmup`` adaptation iterations, ``--samples`` kept draws, ``--max-tree-depth``
8, target acceptance 0.8):

* ``batched``: ``inference.NUTS()`` (the project's iterative NUTS on the direct log
  density; chains start from a short MAP fit);
* ``compiled``: ``inference.NUTS(compile=True)``, the same sampler with the log density
  and its gradient compiled by ``torch.compile`` (compilation in the wall time);
* ``pyro``: ``inference.NUTS(engine="pyro")`` (Pyro's NUTS and MCMC, JIT on);
* ``numpyro``: NumPyro's NUTS on the same model, written below in NumPyro (JAX, XLA
  compiled; float32 as the others); ``--numpyro-mass diag,dense`` adds a row
  ``numpyro-d`` with NumPyro's dense mass matrix (``dense_mass=True``).

For each: wall time (adaptation and sampling; compilation included), the median and
minimum bulk ESS and the median ESS per second of the predictions ``f(x)`` at the 51
test inputs and of the 650 first-layer weights, divergences after warm-up, and the
largest split R-hat of ``f(x)`` (one chain: its two halves) and of the weights.

Second table (``--replicas N``, default 20; 0 skips it): N replicas (boston splits
0..N-1, each on its own training data) times 4 chains (``--replica-chains``) in one
batched fit, eager and compiled (``--replica-arms``); total ESS/s is the sum over
replicas of the median bulk ESS of f(x) over the wall time, beside the median
predictive R-hat over replicas.

NumPyro and JAX are optional (``pip install -e .[bench]``); without them, or with
``--skip numpyro``, that arm is left out. ``--skip pyro`` leaves out Pyro's arm,
which takes minutes at the defaults (about 470 s on a loaded two-core machine).
Torch runs on one thread (``OMP_NUM_THREADS=1``); wall times depend on the load.

    python benchmarks/nuts_ess.py [--samples 200] [--warmup 200] [--max-tree-depth 8] [--seed 0]
                                  [--chains 1] [--replicas 20] [--replica-chains 4]
                                  [--parametrization auto] [--skip pyro,numpyro] [--numpyro-mass diag,dense]
                                  [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

import bnn_priors as bp  # noqa: E402
from bnn_priors.data import load_dataset  # noqa: E402
from inference.nuts import NUTS, ess, rhat  # noqa: E402
from models import BayesianMLP, GaussianLikelihood  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO.parent / "shared" / "data" / "uci"
HIDDEN = 50


def load_split(data_dir: Path, index: int):
    """Training and test inputs and training targets of a boston split, standardized on its training part."""
    split = load_dataset("boston", data_dir=data_dir, download=False).split(index)
    return split.X_train, split.y_train, split.X_test


def make_model(in_features: int, replicas: int = 1) -> BayesianMLP:
    return BayesianMLP(in_features, 1, hidden=(HIDDEN,), activation="tanh", prior=bp.prior("half-cauchy", "ard"),
                       likelihood=GaussianLikelihood(), replicas=replicas)


def summarize(name: str, seconds: float, f: np.ndarray, w: np.ndarray, divergences: int) -> dict:
    """``f`` ``(C, D, N)`` predictions, ``w`` ``(C, D, ...)`` first-layer weights."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ess_f, ess_w = ess(f, "bulk"), ess(w, "bulk")
        return {
            "sampler": name, "seconds": seconds,
            "f_ess_med": float(np.median(ess_f)), "f_ess_min": float(np.min(ess_f)),
            "w_ess_med": float(np.median(ess_w)), "w_ess_min": float(np.min(ess_w)),
            "divergences": int(divergences),
            "f_rhat": float(np.nanmax(rhat(f))), "w_rhat": float(np.nanmax(rhat(w))),
        }


def run_torch(arm: str, X, y, X_test, args, chains: int) -> dict:
    model = make_model(X.shape[-1])
    engine = "pyro" if arm == "pyro" else "batched"
    backend = NUTS(engine=engine, compile=arm == "compiled", num_samples=args.samples, warmup=args.warmup, num_chains=chains, seed=args.seed,
                   max_tree_depth=args.max_tree_depth, parametrization=args.parametrization, progress=False)
    post = backend.fit(model, X, y, X_test)
    f = post.predictions()[:, :, 0, :, 0].double().numpy()
    w = post.chains["layer0.weight"][:, :, 0].double().numpy()
    out = summarize(arm, post.info["seconds"], f, w, post.info["divergences"])
    out["step_size"] = float(np.mean(post.info["step_size"][0]))
    return out


def run_numpyro(X, y, X_test, args, chains: int, dense: bool = False) -> dict:
    import jax
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as nd
    from numpyro.infer import MCMC
    from numpyro.infer import NUTS as NumPyroNUTS

    numpyro.set_host_device_count(1)
    D = X.shape[1]

    def model(X, y=None):
        lam0 = numpyro.sample("lam0", nd.HalfCauchy(1.0).expand([D, 1]).to_event(2))
        z0 = numpyro.sample("z0", nd.Normal(0.0, 1.0).expand([D, HIDDEN]).to_event(2))
        b0 = numpyro.sample("b0", nd.Normal(0.0, 1.0).expand([HIDDEN]).to_event(1))
        lam1 = numpyro.sample("lam1", nd.HalfCauchy(1.0).expand([HIDDEN, 1]).to_event(2))
        z1 = numpyro.sample("z1", nd.Normal(0.0, 1.0).expand([HIDDEN, 1]).to_event(2))
        b1 = numpyro.sample("b1", nd.Normal(0.0, 1.0).expand([1]).to_event(1))
        tau = numpyro.sample("tau", nd.Gamma(1.0, 0.1))
        f = jnp.tanh(X @ (lam0 * z0) + b0) @ (lam1 * z1) + b1
        numpyro.sample("obs", nd.Normal(f[:, 0], tau**-0.5).to_event(1), obs=y)

    kernel = NumPyroNUTS(model, target_accept_prob=0.8, max_tree_depth=args.max_tree_depth, dense_mass=dense)
    mcmc = MCMC(kernel, num_warmup=args.warmup, num_samples=args.samples, num_chains=chains,
                chain_method="sequential", progress_bar=False)
    start = time.perf_counter()
    mcmc.run(jax.random.PRNGKey(args.seed), jnp.asarray(X, dtype=jnp.float32), jnp.asarray(y, dtype=jnp.float32),
             extra_fields=("diverging",))
    s = {k: np.asarray(v, dtype=np.float64) for k, v in mcmc.get_samples(group_by_chain=True).items()}
    seconds = time.perf_counter() - start
    w0, w1 = s["lam0"] * s["z0"], s["lam1"] * s["z1"]
    h = np.tanh(np.einsum("nd,csdh->csnh", np.asarray(X_test, dtype=np.float64), w0) + s["b0"][:, :, None])
    f = np.einsum("csnh,csho->csno", h, w1)[..., 0] + s["b1"]
    divergences = int(np.asarray(mcmc.get_extra_fields()["diverging"]).sum())
    out = summarize("numpyro-d" if dense else "numpyro", seconds, f, w0, divergences)
    out["step_size"] = float(np.asarray(mcmc.last_state.adapt_state.step_size).mean())
    return out


def run_replicas(args, arm: str) -> dict:
    R, K = args.replicas, args.replica_chains
    parts = [load_split(args.data_dir, r) for r in range(R)]
    X = torch.as_tensor(np.stack([p[0] for p in parts]), dtype=torch.float32)
    y = torch.as_tensor(np.stack([p[1] for p in parts]), dtype=torch.float32)
    X_test = torch.as_tensor(np.stack([p[2] for p in parts]), dtype=torch.float32)
    backend = NUTS(num_samples=args.samples, warmup=args.warmup, num_chains=K, seed=args.seed,
                   max_tree_depth=args.max_tree_depth, progress=False, compile=arm == "compiled")
    post = backend.fit(make_model(X.shape[-1], replicas=R), X, y, X_test)
    pred = post.info["predictive"]
    seconds = post.info["seconds"]
    total = sum(p["ess_bulk_median"] for p in pred)
    return {
        "arm": arm, "replicas": R, "chains": K, "seconds": seconds, "total_f_ess": total, "total_f_ess_per_s": total / seconds,
        "f_rhat_median": float(np.median([p["r_hat_max"] for p in pred])),
        "f_rhat_max": float(np.max([p["r_hat_max"] for p in pred])),
        "divergences": post.info["divergences"],
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=200, help="kept draws per chain (default 200)")
    parser.add_argument("--warmup", type=int, default=200, help="warm-up iterations (default 200)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-tree-depth", type=int, default=8)
    parser.add_argument("--chains", type=int, default=1, help="chains per sampler in the first table (default 1)")
    parser.add_argument("--replicas", type=int, default=20, help="boston splits in the second table (0: skip it)")
    parser.add_argument("--replica-chains", type=int, default=4, help="chains per replica in the second table")
    parser.add_argument("--parametrization", default="auto",
                        help="of the batched and Pyro arms: auto (non-centred here), centered or non-centered; "
                             "NumPyro's model is non-centred")
    parser.add_argument("--skip", default="", help="comma-separated arms to leave out: batched, compiled, pyro, numpyro")
    parser.add_argument("--numpyro-mass", default="diag",
                        help="NumPyro's mass matrix, one row each: diag, dense or diag,dense (row numpyro-d: "
                             "dense_mass=True, a full covariance adapted in warm-up)")
    parser.add_argument("--replica-arms", default="batched,compiled",
                        help="arms of the second table: batched, compiled (comma-separated)")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR,
                        help=f"folder holding boston/ (default {DEFAULT_DATA_DIR})")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}

    Xn, yn, Xtn = load_split(args.data_dir, 0)
    X, y, X_test = (torch.as_tensor(a, dtype=torch.float32) for a in (Xn, yn, Xtn))
    print(f"boston split 0: {X.shape[0]} training points, {X.shape[1]} features, {X_test.shape[0]} test inputs; "
          f"13-{HIDDEN}-1 tanh MLP, ARD half-Cauchy prior (non-centred), learned precision")
    print(f"budget: {args.warmup} warm-up + {args.samples} draws, {args.chains} chain(s), seed {args.seed}, "
          f"max_tree_depth {args.max_tree_depth}, target_accept 0.8; torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread, {platform.processor() or platform.machine()}", flush=True)
    rows = []
    for arm in ("batched", "compiled", "pyro", "numpyro"):
        if arm in skip:
            continue
        if arm == "numpyro":
            try:
                import numpyro  # noqa: F401
            except ImportError:
                print("  numpyro not installed (pip install -e .[bench]): arm skipped")
                continue
            for mass in [m.strip() for m in args.numpyro_mass.split(",") if m.strip()]:
                if mass not in ("diag", "dense"):
                    parser.error(f"--numpyro-mass takes diag and dense, got {mass!r}")
                rows.append(run_numpyro(Xn, yn, Xtn, args, args.chains, dense=mass == "dense"))
                print(f"  done numpyro ({mass} mass matrix): {rows[-1]['seconds']:.1f} s", flush=True)
            continue
        rows.append(run_torch(arm, X, y, X_test, args, args.chains))
        print(f"  done {arm}: {rows[-1]['seconds']:.1f} s", flush=True)
    header = (f"{'sampler':<9} {'wall s':>7} {'f ESS med':>9} {'f ESS min':>9} {'f ESS/s':>8} {'w ESS med':>9} "
              f"{'w ESS min':>9} {'w ESS/s':>8} {'diverg.':>7} {'f R-hat':>8} {'w R-hat':>8} {'step':>7}")
    print("\nf: predictions at the 51 test inputs; w: the 650 first-layer weights; bulk ESS; max split R-hat")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['sampler']:<9} {r['seconds']:>7.1f} {r['f_ess_med']:>9.1f} {r['f_ess_min']:>9.1f} "
              f"{r['f_ess_med'] / r['seconds']:>8.3f} {r['w_ess_med']:>9.1f} {r['w_ess_min']:>9.1f} "
              f"{r['w_ess_med'] / r['seconds']:>8.3f} {r['divergences']:>7d} {r['f_rhat']:>8.3f} {r['w_rhat']:>8.3f} "
              f"{r['step_size']:>7.3g}")
    for arm in [a.strip() for a in args.replica_arms.split(",") if a.strip()] if args.replicas > 0 else []:
        rep = run_replicas(args, arm)
        print(f"\n{arm}: {rep['replicas']} replicas (boston splits 0-{rep['replicas'] - 1}) x {rep['chains']} chains in one "
              f"batched fit: {rep['seconds']:.1f} s, total median f ESS {rep['total_f_ess']:.0f}, "
              f"total ESS/s {rep['total_f_ess_per_s']:.2f}, f R-hat median {rep['f_rhat_median']:.3f} "
              f"(max {rep['f_rhat_max']:.3f}), divergences {rep['divergences']}")


if __name__ == "__main__":
    main()
