"""Estimate the CPU time of a preset's runs from two short timed runs of each of its jobs.

    python benchmarks/preset_cost.py --preset gal2016-2layer --datasets yacht,boston --data-dir ../shared/data/uci
    python benchmarks/preset_cost.py --preset nalisnick2019-released --datasets yacht --structure ard-add
    python benchmarks/preset_cost.py --preset gal2016 --datasets kin8nm --short 5 --option fast=true --option compile=true
    python benchmarks/preset_cost.py --preset nalisnick2019 --datasets kin8nm,power --inference map-em --short 300

Each job of the preset (a data set and configuration, all its splits batched as the runner
batches them) runs twice through ``run_suite`` with the preset's settings but a budget of
``--short`` and ``2 * --short`` steps or epochs, one torch thread, no checkpoints. The
difference of the two times is the cost of ``--short`` units of training; the shorter
run's time minus that is the fixed cost (start-up, evaluation). The estimate of a job is
``fixed + per_unit * budget`` at the preset's budget, batched as the runner batches (or at most
``--max-replicas`` runs per job). ``--option KEY=VALUE`` (a JSON
value, as ``bnn-priors bench --option``) changes the backend options of every run, e.g.
MC dropout's ``fast`` and ``compile``. On a machine shared with other processes the times,
and so the estimate, grow with the load.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from collections import defaultdict

from bnn_priors.suite import run_suite
from bnn_priors.suite.presets import preset_configs


def timed(configs, data_dir, max_replicas=None) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        report = run_suite(configs, f"{tmp}/r.sqlite", data_dir=data_dir, progress=False, checkpoint_every=None,
                           max_replicas=max_replicas)
        seconds = time.perf_counter() - start
    if report.failed:
        raise SystemExit(f"a short run failed: {report.summary()}")
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", required=True)
    ap.add_argument("--datasets")
    ap.add_argument("--splits")
    ap.add_argument("--structure")
    ap.add_argument("--inference", help="only the preset's runs of these methods (as bench's --inference)")
    ap.add_argument("--data-dir")
    ap.add_argument("--short", type=int, default=100, help="steps or epochs of the shorter timed run (default 100)")
    ap.add_argument("--max-replicas", type=int, help="runs batched into one job at most (as bench's; default: the "
                    "runner's CPU rule)")
    ap.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                    help="a backend option for every run (a JSON value; repeatable)")
    args = ap.parse_args()
    options = {}
    for item in args.option:
        key, sep, value = item.partition("=")
        if not sep:
            ap.error(f"--option takes KEY=VALUE, got {item!r}")
        options[key.strip()] = json.loads(value)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the options' change is said once, below
        own = preset_configs(args.preset, datasets=args.datasets, splits=args.splits, structure=args.structure,
                             inference=args.inference, options=options or None, data_dir=args.data_dir)
    if options:
        print(f"options changed for every run: {options}")
    jobs = defaultdict(list)
    for cfg in own:
        jobs[(cfg.dataset, cfg.noise, cfg.structure, cfg.arch, cfg.inference)].append(cfg)
    total = 0.0
    unreliable = []
    print("| job | runs | budget | fixed s | s per unit | estimate (CPU-h) |\n| --- | --- | --- | --- | --- | --- |")
    for key, cfgs in jobs.items():
        unit, budget = cfgs[0].budget_unit, cfgs[0].budget
        times = []
        for b in (args.short, 2 * args.short):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the budget change is the point
                short = preset_configs(args.preset, datasets=key[0], splits=args.splits, structure=key[2],
                                       noise=key[1], arch=key[3], inference=key[4], budget={unit: b},
                                       options=options or None, data_dir=args.data_dir)
            times.append(timed(short, args.data_dir, args.max_replicas))
        per_unit = max(times[1] - times[0], 0.0) / args.short
        fixed = max(times[0] - per_unit * args.short, 0.0)
        estimate = fixed + per_unit * budget
        total += estimate
        # The longer run must take clearly longer than the shorter one, or the difference is the noise of
        # the fixed cost (compiling, evaluation, a neighbour's load) and the estimate means nothing.
        flag = ""
        if times[1] - times[0] < 0.2 * times[0]:
            flag = " (unreliable)"
            unreliable.append("/".join(key))
        print(f"| {'/'.join(key)} | {len(cfgs)} | {budget} {unit} | {fixed:.1f} | {per_unit:.4f} | "
              f"{estimate / 3600:.2f}{flag} |")
    print(f"\ntotal: {total / 3600:.2f} CPU-hours for {len(own)} runs in {len(jobs)} jobs of {args.preset}")
    if unreliable:
        print(f"unreliable: {', '.join(unreliable)}: the run of {2 * args.short} {unit} took less than 1.2x the run "
              f"of {args.short}, so the fixed cost (compiling, evaluation) swamps the training; rerun with a larger "
              "--short (e.g. 3000 steps for a compiled SVI preset)")


if __name__ == "__main__":
    main()
