"""Convergence of the runner's compiled NUTS on one split: R-hat, ESS and the sampler's state per chain.

The fit is built exactly as ``bnn-priors bench --inference nuts --option compile=true``
builds its run (``bnn_priors.suite.runner.fit_job``): a ``RunConfig`` (half-Cauchy
noise, ARD structure, ``mlp-1x50``, seed 0, budget ``--samples``), ``build_model``,
``get_method("nuts").make_backend`` with the job's resolved options, ``stack_splits``
of the one split, ``fit`` with the test inputs (where ``f(x)`` is diagnosed) and
``evaluate_metrics`` on the test split. The sampler options left unset are the
runner's (``inference.NUTS.options``: 200 warm-up iterations, 4 chains, target
acceptance 0.8, tree depth at most 10, ``init="map"`` with 200 Adam steps,
``parametrization="auto"``); ``compile=True`` always.

Printed: wall seconds of ``fit``; over the test inputs, the largest and median
rank-normalized split R-hat of ``f(x)`` (ArviZ 0.23 ``az.rhat(method="rank")``), how
many inputs exceed 1.05, and the smallest and median bulk ESS (``az.ess(method="bulk")``),
both through ``inference.nuts.rhat`` / ``ess`` as the sampler's own diagnostics; per
chain: divergences after and during warm-up, adapted step size, mean tree depth,
fraction of iterations at the largest depth and mean acceptance statistic; the test
RMSE (the runner's ``eval_samples`` draws, and all draws); then the same R-hat and ESS
figures from only the first n kept draws of every chain (``--prefixes``), i.e. what a
shorter sampling phase after the same warm-up would have shown. The per-chain warm-up
divergences are read from what ``inference.hmc.BatchedNUTS.sample`` returns
(``post.info`` keeps only their sum), recorded by wrapping that method for the fit;
nothing the sampler computes is changed.

Torch runs on one thread, as the runner's jobs. At the defaults (yacht split 0, 200
warm-up + 200 draws, 4 chains) it takes about 3-4 minutes on a loaded two-core
machine, compilation included; sampling time grows with warm-up plus draws. Writes
nothing unless ``--out FILE.json`` is given (the figures, and R-hat and ESS per input).

    python benchmarks/nuts_convergence.py [--dataset yacht] [--split 0] [--samples 200] [--warmup 200]
                                          [--chains 4] [--target-accept 0.8] [--max-tree-depth 10]
                                          [--init map] [--init-steps 200] [--init-jitter 0.1] [--parametrization auto]
                                          [--seed 0] [--prefixes 100,200,500,1000,2000,5000]
                                          [--data-dir DIR] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bnn_priors.data import stack_splits  # noqa: E402
from bnn_priors.suite.build import build_model  # noqa: E402
from bnn_priors.suite.config import RunConfig  # noqa: E402
from bnn_priors.suite.data_options import resolve_job_options  # noqa: E402
from bnn_priors.suite.evaluation import evaluate_metrics  # noqa: E402
from bnn_priors.suite.loading import load  # noqa: E402
from bnn_priors.suite.methods import get_method  # noqa: E402
from inference.hmc import BatchedNUTS  # noqa: E402
from inference.nuts import NUTS, ess, rhat  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO.parent / "shared" / "data" / "uci"
RHAT_BAR = 1.05
#: command-line option -> NUTS option, each left to the runner's default unless given
SAMPLER_OPTIONS = {
    "warmup": "warmup", "chains": "num_chains", "target_accept": "target_accept", "max_tree_depth": "max_tree_depth",
    "init": "init", "init_steps": "init_steps", "init_jitter": "init_jitter", "parametrization": "parametrization",
}


@contextlib.contextmanager
def recorded_sampler_output():
    """Record the ``SamplerOutput`` that ``BatchedNUTS.sample`` returns during the block (unchanged)."""
    seen = {}
    original = BatchedNUTS.sample

    def sample(self, *args, **kwargs):
        seen["out"] = original(self, *args, **kwargs)
        return seen["out"]

    BatchedNUTS.sample = sample
    try:
        yield seen
    finally:
        BatchedNUTS.sample = original


def summarize(f: np.ndarray) -> dict:
    """R-hat and bulk ESS of ``f`` ``(chains, draws, inputs)`` over the inputs."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        r, e = rhat(f), ess(f, "bulk")
    return {
        "draws_per_chain": int(f.shape[1]),
        "rhat_max": float(np.nanmax(r)), "rhat_median": float(np.nanmedian(r)),
        "rhat_above": int((r > RHAT_BAR).sum()), "inputs": int(r.size),
        "ess_bulk_min": float(np.nanmin(e)), "ess_bulk_median": float(np.nanmedian(e)),
        "rhat": r.tolist(), "ess_bulk": e.tolist(),
    }


def run(args) -> dict:
    options = {"compile": True}
    for arg, option in SAMPLER_OPTIONS.items():
        if getattr(args, arg) is not None:
            options[option] = getattr(args, arg)
    cfg = RunConfig(dataset=args.dataset, split=args.split, noise="half-cauchy", structure="ard", arch="mlp-1x50",
                    inference="nuts", budget=args.samples, seed=args.seed, options=options)
    dataset = load(cfg.dataset, args.data_dir)
    data = stack_splits(dataset, [cfg.split], holdout=cfg.holdout)
    method = get_method(cfg.inference)
    resolved = resolve_job_options([cfg], data.X_train.shape[1], data.y_std, method.backend_class.replica_options)
    backend = method.make_backend(cfg.budget, resolved, seed=[cfg.seed], device="cpu", progress=False, threads=1)
    model = build_model(cfg, dataset.X.shape[1], replicas=1)
    width = max(dataset.X.shape[1], *cfg.architecture.hidden)
    print(f"{cfg.dataset} split {cfg.split}: {data.X_train.shape[1]} training points, {data.X_train.shape[2]} features, "
          f"{data.X_test.shape[1]} test inputs; torch {torch.__version__}, {torch.get_num_threads()} thread")
    print(f"{backend!r}\n{model!r}", flush=True)

    with recorded_sampler_output() as seen:
        start = time.perf_counter()
        post = backend.fit(model, data.X_train, data.y_train, X_test=data.X_test)
        wall = time.perf_counter() - start
    test = evaluate_metrics(post, data.X_test, data.y_test, cfg.eval_samples, data.y_std, width)
    every = evaluate_metrics(post, data.X_test, data.y_test, post.num_draws, data.y_std, width)

    f = post.predictions().cpu().double().numpy()[:, :, 0, :, 0]  # (chains, draws, test inputs)
    per = post.info["per_replica"][0]
    depth = post.stats["tree_depth"][:, :, 0].double()  # (chains, draws); thin is 1
    D = f.shape[1]
    prefixes = sorted({n for n in args.prefixes if n < D} | {D})
    return {
        "config": cfg.hashed_fields(), "backend": repr(backend), "wall_s": wall, "sampler_s": post.info["seconds"],
        "compiled": post.info["compile"], "draws": summarize(f),
        "chains": {
            "divergences": [len(c) for c in post.divergences[0]],
            "warmup_divergences": seen["out"].warmup_divergences.tolist(),
            "step_size": per["step_size"],
            "tree_depth_mean": per["tree_depth"],
            "max_depth_fraction": (depth >= backend.max_tree_depth).double().mean(1).tolist(),
            "mean_accept_prob": per["mean_accept_prob"],
        },
        "test_rmse": float(test.rmse[0]), "test_rmse_all_draws": float(every.rmse[0]),
        "eval_samples": cfg.eval_samples, "num_draws": post.num_draws,
        "prefixes": [summarize(f[:, :n]) for n in prefixes],
    }


def report(res: dict) -> None:
    d, c = res["draws"], res["chains"]
    print(f"\nwall {res['wall_s']:.1f} s (sampler {res['sampler_s']:.1f} s, compiled {res['compiled']})")
    print(f"f(x) at the {d['inputs']} test inputs, {len(c['step_size'])} chains x {d['draws_per_chain']} draws: "
          f"split R-hat max {d['rhat_max']:.3f}, median {d['rhat_median']:.3f}, {d['rhat_above']} above {RHAT_BAR}; "
          f"bulk ESS min {d['ess_bulk_min']:.1f}, median {d['ess_bulk_median']:.1f}")
    print(f"test RMSE {res['test_rmse']:.4f} ({res['eval_samples']} draws, as the runner), "
          f"{res['test_rmse_all_draws']:.4f} (all {res['num_draws']} draws)")
    header = f"{'chain':>5} {'diverg.':>7} {'warm-up div.':>12} {'step size':>10} {'mean depth':>10} {'at max':>6} {'accept':>6}"
    print(f"\nper chain: divergences after and during warm-up, adapted step size, mean tree depth, fraction of "
          f"iterations at depth {res['config']['options'].get('max_tree_depth', NUTS.options['max_tree_depth'])}, "
          "mean acceptance statistic")
    print(header + "\n" + "-" * len(header))
    for k in range(len(c["step_size"])):
        print(f"{k:>5} {c['divergences'][k]:>7d} {c['warmup_divergences'][k]:>12d} {c['step_size'][k]:>10.3g} "
              f"{c['tree_depth_mean'][k]:>10.2f} {c['max_depth_fraction'][k]:>6.2f} {c['mean_accept_prob'][k]:>6.3f}")
    header = f"{'first n':>7} {'R-hat max':>9} {'> ' + str(RHAT_BAR):>7} {'ESS min':>8} {'ESS med':>8}"
    print("\nR-hat and bulk ESS of f(x) from the first n kept draws of every chain\n" + header + "\n" + "-" * len(header))
    for p in res["prefixes"]:
        print(f"{p['draws_per_chain']:>7d} {p['rhat_max']:>9.3f} {p['rhat_above']:>4d}/{p['inputs']:<2d} "
              f"{p['ess_bulk_min']:>8.1f} {p['ess_bulk_median']:>8.1f}")


def main(argv=None) -> None:
    defaults = NUTS.options
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="yacht")
    parser.add_argument("--split", type=int, default=0)
    parser.add_argument("--samples", type=int, default=defaults["num_samples"],
                        help=f"kept draws per chain, the run's budget (default {defaults['num_samples']})")
    parser.add_argument("--warmup", type=int, help=f"warm-up iterations (default {defaults['warmup']})")
    parser.add_argument("--chains", type=int, help=f"chains (default {defaults['num_chains']})")
    parser.add_argument("--target-accept", type=float, help=f"default {defaults['target_accept']}")
    parser.add_argument("--max-tree-depth", type=int, help=f"default {defaults['max_tree_depth']}")
    parser.add_argument("--init", help=f"map or prior (default {defaults['init']})")
    parser.add_argument("--init-steps", type=int, help=f"Adam steps of init='map' (default {defaults['init_steps']})")
    parser.add_argument("--init-jitter", type=float,
                        help=f"sd of the jitter after the MAP start (default {defaults['init_jitter']})")
    parser.add_argument("--parametrization", help=f"auto, centered or non-centered (default {defaults['parametrization']})")
    parser.add_argument("--seed", type=int, default=0, help="the run's seed (default 0, the runner's)")
    parser.add_argument("--prefixes", type=lambda s: [int(n) for n in s.split(",")],
                        default=[100, 200, 500, 1000, 2000, 5000],
                        help="draws per chain of the prefix table, those below --samples; all draws are added "
                             "(default 100,200,500,1000,2000,5000)")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help=f"default {DEFAULT_DATA_DIR}")
    parser.add_argument("--out", type=Path, help="write the figures to this JSON file")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    res = run(args)
    report(res)
    if args.out is not None:
        args.out.write_text(json.dumps(res, indent=1) + "\n")
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
