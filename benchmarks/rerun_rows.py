"""Rerun committed benchmark runs and compare them with the committed rows, split by split.

The runs are rebuilt from the ``config`` column of the committed database (the exact
configurations, hashes included), trained again into a fresh database with this
checkout's code, and set beside the committed figures:

* per run: the committed and the rerun test RMSE and log-likelihood, their difference,
  and whether they are equal to the last bit;
* per column (method): the committed mean ± SE against the rerun mean, the largest
  relative difference and the number of runs that moved by more than 1% and 10%.

The same machine and thread count give equal numbers to the last bit when the runs are
batched as they were (rerun whole rows: ``--splits`` changes which splits share a
job, and a replica trained in a batch of 2 agrees with one trained in a batch of 20
only to float rounding, about 1e-7 relative). Another CPU may round differently
(see the README's "Reproducibility"). Examples::

    # the MAP-EM columns of nalisnick2019 on yacht (60 runs, a few minutes)
    python benchmarks/rerun_rows.py --results results/nalisnick2019.sqlite --dataset yacht --inference map-em
    # a gal2016 boston row at 400 epochs (240 runs)
    python benchmarks/rerun_rows.py --results results/gal2016.sqlite --dataset boston --budget 400
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bnn_priors.suite import RunConfig, read_results, run_suite

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "uci"


def committed_runs(results: str, **filters) -> pd.DataFrame:
    """The ``ok`` rows of ``results`` whose columns equal the given values (``None``: any)."""
    df = read_results(results)
    df = df[df["status"] == "ok"]
    for column, value in filters.items():
        if value is not None:
            df = df[df[column].astype(str) == str(value)]
    return df


def compare(before: pd.DataFrame, after: pd.DataFrame) -> pd.DataFrame:
    """Committed and rerun metrics side by side, one row per run (matched by config hash)."""
    cols = ["config_hash", "label", "dataset", "split", "rmse", "log_likelihood"]
    both = before[cols].merge(after[["config_hash", "status", "rmse", "log_likelihood"]], on="config_hash",
                              suffixes=("_committed", "_rerun"), how="left")
    for m in ("rmse", "log_likelihood"):
        both[f"{m}_diff"] = both[f"{m}_rerun"] - both[f"{m}_committed"]
        both[f"{m}_rel"] = both[f"{m}_diff"].abs() / both[f"{m}_committed"].abs()
    both["bitwise_equal"] = (both["rmse_rerun"] == both["rmse_committed"]) & (
        both["log_likelihood_rerun"] == both["log_likelihood_committed"])
    return both.sort_values(["label", "dataset", "split"])


def summary(both: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (label, dataset), g in both.groupby(["label", "dataset"], sort=False):
        n = len(g)
        se = g["rmse_committed"].std(ddof=1) / np.sqrt(n) if n > 1 else np.nan
        rows.append({
            "column": label,
            "dataset": dataset,
            "runs": n,
            "bitwise equal": int(g["bitwise_equal"].sum()),
            "RMSE committed (mean ± SE)": f"{g['rmse_committed'].mean():.4g} ± {se:.2g}",
            "RMSE rerun (mean)": f"{g['rmse_rerun'].mean():.4g}",
            "largest relative RMSE change": f"{g['rmse_rel'].max():.2g}",
            "runs moved > 1%": int((g["rmse_rel"] > 0.01).sum()),
            "runs moved > 10%": int((g["rmse_rel"] > 0.10).sum()),
            "largest |LL change|": f"{g['log_likelihood_diff'].abs().max():.2g}",
        })
    return pd.DataFrame(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", required=True, help="the committed results database")
    parser.add_argument("--dataset", help="only this data set")
    parser.add_argument("--inference", help="only this method (e.g. map-em)")
    parser.add_argument("--noise", help="only this noise model / prior")
    parser.add_argument("--structure", help="only this structure")
    parser.add_argument("--budget", type=int, help="only runs with this budget (e.g. 400 epochs)")
    parser.add_argument("--splits", help="only these splits, e.g. 0-4 (default: all committed)")
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA), help="UCI data folder (default: %(default)s)")
    parser.add_argument("--out", help="database for the rerun (default: a temporary file)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per job (default 1, as the suite)")
    parser.add_argument("--per-run", action="store_true", help="print every run, not only the summary")
    args = parser.parse_args(argv)

    before = committed_runs(args.results, dataset=args.dataset, inference=args.inference, noise=args.noise,
                            structure=args.structure, budget=args.budget)
    if args.splits:
        from bnn_priors.suite import parse_splits

        wanted = parse_splits(args.splits)
        if wanted is not None:
            before = before[before["split"].isin(wanted)]
    if before.empty:
        print("no committed runs match", file=sys.stderr)
        return 2
    configs = [RunConfig.from_dict(json.loads(text)) for text in before["config"]]
    assert [c.hash for c in configs] == list(before["config_hash"]), "a committed config no longer hashes to its row"
    print(f"rerunning {len(configs)} committed runs of {args.results}", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or str(Path(tmp) / "rerun.sqlite")
        start = time.perf_counter()
        run_suite(configs, out, data_dir=args.data_dir, workers=args.workers, threads=args.threads, progress=False)
        seconds = time.perf_counter() - start
        after = read_results(out)
    both = compare(before, after)
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.max_rows", 500):
        if args.per_run:
            print(both[["label", "dataset", "split", "rmse_committed", "rmse_rerun", "rmse_rel",
                        "log_likelihood_committed", "log_likelihood_rerun", "bitwise_equal"]].to_string(index=False))
        print(summary(both).to_markdown(index=False))
    equal = int(both["bitwise_equal"].sum())
    print(f"\n{equal} of {len(both)} runs equal to the last bit; rerun took {seconds:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
