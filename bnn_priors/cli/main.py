"""The ``bnn-priors`` command line.

Subcommands: ``priors`` (the noise-model table), ``datasets`` (the data
registry), ``bench`` (run a grid or a preset into a results file and print the
comparison table), ``table`` and ``plot`` (from a results file).

``bench --holdout 0.2`` makes hold-out runs (validation metrics beside the test
metrics); ``table --split validation`` tabulates the validation metrics and
``table --protocol gal2016`` the runs that Gal & Ghahramani's protocol chooses on
them (``bench --preset gal2016`` prints that table itself).

``bench`` prints each distinct warning of the backends once, after the runs (also
those of worker processes), as ``bnn-priors: warning: LABEL on DATA SETS: MESSAGE``:
a warning does not by itself fail a run.

Exit status: 0 on success; 1 when ``bench`` finished but some runs failed (they
are recorded with their message, the table shows the others); 2 for a user
mistake (one line ``bnn-priors: error: ...`` on stderr, no traceback); 130 on
Ctrl-C, after the runs that finished are saved (rerun the same command to
resume).

The choices and help texts of the options come from the registries they name
(data sets, priors, structures, architectures, methods, presets, executors,
metrics, table formats, references, protocols), so a new entry there is on the
command line at once.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import bnn_priors
from bnn_priors.data import DATASETS, SOURCES
from bnn_priors.errors import BNNPriorsError, InvalidParameterError, normalize_name
from bnn_priors.scale_mixture import PRIOR_NAMES
from bnn_priors.structures import STRUCTURES
from bnn_priors.suite.config import ARCH_PATTERN, DEFAULT_EVAL_SAMPLES, expand_grid, parse_list
from bnn_priors.suite.executors import EXECUTORS
from bnn_priors.suite.methods import BUDGET_UNITS, METHODS, methods_counting
from bnn_priors.suite.planning import CPU_BATCH_ROWS, DEFAULT_MAX_REPLICAS
from bnn_priors.suite.plots import check_out, plot_calibration, plot_heatmaps, plot_metric
from bnn_priors.suite.presets import GAL_EVAL_SAMPLES, PRESETS, get_preset, preset_configs
from bnn_priors.suite.protocols import PROTOCOLS, check_protocol, protocol_table
from bnn_priors.suite.references import REFERENCES
from bnn_priors.suite.render import FORMATS
from bnn_priors.suite.runner import job_progress, run_suite
from bnn_priors.suite.tables import METRICS, SPLITS, check_split, results_table

PROG = "bnn-priors"
#: Failed runs listed after a suite; the rest are counted (all are in the results file).
MAX_FAILURES_SHOWN = 20


def _error(message: str) -> None:
    print(f"{PROG}: error: {' '.join(str(message).split())}", file=sys.stderr)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"{PROG}: warning: {' '.join(str(message).split())}", file=sys.stderr)


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are the one-line ``bnn-priors: error: ...`` (exit 2)."""

    def error(self, message: str):
        _error(f"{message} (see {self.prog} --help)")
        raise SystemExit(2)


def _key_values(label: str, items: Sequence[str] | None) -> dict:
    """``["lr=0.001", "guide=mean-field"]`` -> ``{"lr": 0.001, "guide": "mean-field"}`` (JSON values)."""
    out = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InvalidParameterError(f"{label} must be KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


# --------------------------------------------------------------------- commands
def cmd_priors(args) -> int:
    print(bnn_priors.table().to_markdown())
    return 0


def cmd_datasets(args) -> int:
    from tabulate import tabulate

    rows = [[name, source.n_splits, source.origin] for name, source in SOURCES.items()]
    print(tabulate(rows, headers=["name", "splits", "source"], tablefmt="github"))
    return 0


def _bench_configs(args):
    budget = {unit: getattr(args, unit) for unit in BUDGET_UNITS if getattr(args, unit) is not None}
    options = _key_values("--option", args.option)
    prior = _key_values("--prior", args.prior)
    extra = {} if args.eval_samples is None else {"eval_samples": args.eval_samples}
    if args.preset:
        return preset_configs(
            args.preset, datasets=args.datasets, splits=args.splits, noise=args.noise, structure=args.structure,
            arch=args.arch, inference=args.inference, budget=budget, seeds=args.seed, options=options, prior=prior,
            holdout=args.holdout, data_dir=args.data_dir, **extra,
        )
    if args.datasets is None:
        raise InvalidParameterError("bench needs --datasets (e.g. --datasets diabetes) or --preset (e.g. --preset quick)")
    return expand_grid(
        args.datasets,
        "all" if args.splits is None else args.splits,
        args.noise or "half-cauchy",
        args.structure or "ard",
        args.arch or "mlp-1x50",
        args.inference or "svi",
        budget=budget or None,
        seeds=args.seed,
        options=options,
        prior=prior,
        holdout=args.holdout,
        **extra,
    )


def _check_table_args(args) -> None:
    """Refuse contradictory table options up front (before a bench trains anything)."""
    split = check_split(args.split)
    if args.protocol:
        protocol = check_protocol(args.protocol)
        if split != "test":
            raise InvalidParameterError(
                f"--protocol {protocol} chooses on the validation parts and reports the test metrics: "
                "leave out --split validation"
            )
        if args.reference:
            raise InvalidParameterError(f"--protocol {protocol} shows its paper's figures itself: leave out --reference")
    elif split == "validation" and args.reference:
        raise InvalidParameterError("published figures are test-set figures: --reference needs --split test")


def _table_text(args, results, hashes=None, datasets=None, decimals=None) -> str:
    """The comparison table (``--split``), or a protocol's table (``--protocol``)."""
    split = args.split
    if args.protocol:
        return protocol_table(results, args.protocol, fmt=args.format, hashes=hashes, datasets=datasets,
                              decimals=decimals)
    return results_table(results, metric=args.metric, fmt=args.format, hashes=hashes, references=_references(args.reference),
                         datasets=datasets, decimals=decimals, split=split)


def cmd_bench(args) -> int:
    if args.threads < 1:
        raise InvalidParameterError(f"--threads must be a positive integer, got {args.threads}")
    if args.preset and args.protocol is None:
        args.protocol = get_preset(args.preset).protocol
    _check_table_args(args)
    configs = _bench_configs(args)
    try:
        report = run_suite(
            configs,
            args.results,
            executor=args.executor,
            workers=args.workers,
            ray_address=args.ray_address,
            device=args.device,
            data_dir=args.data_dir,
            progress=not args.quiet,
            max_replicas=args.max_replicas,
            threads=args.threads,
            checkpoint_every=None if args.checkpoint_every < 0 else args.checkpoint_every,
        )
    except KeyboardInterrupt:
        print(
            f"{PROG}: interrupted; the runs that finished are saved in {args.results} "
            "(run the same command again to resume)",
            file=sys.stderr,
        )
        return 130
    if not args.quiet:
        print(f"{PROG}: {report.summary()}", file=sys.stderr)
    for line in report.warning_lines():
        print(f"{PROG}: warning: {line}", file=sys.stderr)
    for described, holder, _ in report.held:
        print(f"{PROG}: left to another process: {described} ({holder or 'unknown'} is training it; run the same "
              "command again once it has finished to see its runs in the table)", file=sys.stderr)
    for cfg, message in report.failed[:MAX_FAILURES_SHOWN]:
        print(f"{PROG}: failed: {cfg.describe()} (seed {cfg.seed}): {' '.join(str(message).split())}", file=sys.stderr)
    if len(report.failed) > MAX_FAILURES_SHOWN:
        print(f"{PROG}: ... and {len(report.failed) - MAX_FAILURES_SHOWN} more failed runs; their messages are in "
              f"the 'error' column of {args.results}", file=sys.stderr)
    if report.ok or report.skipped:
        print(_table_text(args, args.results, hashes=report.hashes))
    return 1 if report.failed else 0


def _references(value: str | None) -> list[str]:
    return parse_list(value) if value else []


def cmd_table(args) -> int:
    _check_table_args(args)
    text = _table_text(args, args.results, datasets=parse_list(args.datasets), decimals=args.decimals)
    if args.out:
        Path(args.out).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, m = divmod(seconds // 60, 60)
    return f"{h} h {m:02d} min" if h else f"{m} min {seconds % 60:02d} s" if m else f"{seconds} s"


def cmd_jobs(args) -> int:
    """The unfinished jobs of a results file, from their checkpoints: how far each got and, at its pace
    so far, how much training is left (the pace of a job sharing the machine with others changes)."""
    import time

    jobs = job_progress(args.results)
    if not jobs:
        missing = "" if Path(args.results).exists() else " (nor does the file exist)"
        print(f"no unfinished jobs: {args.results} has no checkpoints{missing}; a job's file goes once its runs "
              "are stored")
        return 0
    now = time.time()
    for job in jobs:
        if job.error:
            print(f"{job.path}: not readable as a checkpoint ({job.error}); delete it if it is not a job's")
            continue
        label = job.label or f"job {job.path.stem} (saved before checkpoints named their job)"
        where = f"{job.unit[:-1]} {job.done:,}"
        if job.total:
            where += f" of {job.total:,} ({100 * job.done / job.total:.1f}%)"
        else:
            where += " (its total is not recorded)"
        where += f"; trained {_duration(job.seconds)}"
        if job.seconds_left is not None:
            where += f", about {_duration(job.seconds_left)} left at that pace"
        state = f"running now ({job.holder})" if job.holder else "not running (the same bench command continues it)"
        print(f"{label}\n  {where}; saved {_duration(max(0.0, now - job.saved))} ago ({job.path}); {state}")
    return 0


def cmd_plot(args) -> int:
    """Each figure asked for, its path checked before any is drawn; prints the files written."""
    if not (args.out or args.heatmaps or args.calibration):
        raise InvalidParameterError("plot needs --out FILE.png, --calibration FILE.png and/or --heatmaps FILE.png")
    for out in (args.out, args.calibration, args.heatmaps):
        if out:
            check_out(out)
    if args.out:
        print(plot_metric(args.results, args.out, args.metric, references=_references(args.reference)))
    if args.calibration:
        print(plot_calibration(args.results, args.calibration))
    if args.heatmaps:
        print(plot_heatmaps(args.results, args.heatmaps))
    return 0


# ----------------------------------------------------------------------- parser
def _choices(registry) -> dict:
    """argparse's ``choices`` of a registry, with the spelling every look-up accepts (``LaTeX``, ``Half_Cauchy``)."""
    return {"choices": list(registry), "type": normalize_name}


def _budget_help(unit: str) -> str:
    """``--steps``' help: the methods that count their budget in ``unit``, and what else it sets."""
    names = methods_counting(unit)
    also = [f"{option} of {name}" for name in names for option in METHODS[name].budget_also]
    return f"{unit} of {', '.join(names)}" + (f"; also {', '.join(also)}" if also else "")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Bayesian neural networks with dropout-style scale-mixture priors.")
    parser.add_argument("--version", action="version", version=f"{PROG} {bnn_priors.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")

    sub.add_parser("priors", help="print the table of noise models and the priors they induce").set_defaults(func=cmd_priors)
    sub.add_parser("datasets", help="list the registered data sets").set_defaults(func=cmd_datasets)

    metric_help = " or ".join(metric.name for metric in METRICS.values())

    def table_options(p, results_default="results.sqlite"):
        p.add_argument("--results", default=results_default, help="results database (default: %(default)s)")
        p.add_argument("--metric", default="rmse", **_choices(METRICS), help=metric_help)
        p.add_argument("--format", default="markdown", **_choices(FORMATS), help="table format (default: %(default)s)")
        p.add_argument("--reference", metavar="NAMES",
                       help=f"add published figures as columns: {', '.join(REFERENCES)} (comma-separated)")
        p.add_argument("--split", default="test", **_choices(SPLITS),
                       help="metrics of the test splits (default) or of the hold-out validation parts (--holdout runs)")
        p.add_argument("--protocol", metavar="NAME",
                       help="a selection protocol's table instead: "
                       + "; ".join(f"{name} ({protocol.description})" for name, protocol in PROTOCOLS.items())
                       + ". bench uses its preset's protocol")

    bench = sub.add_parser(
        "bench", help="run a grid (or a preset) of benchmark runs and print the comparison table",
        description="Run the product of the list options (each takes comma-separated values) or a preset; "
        "finished runs in --results are skipped, so rerunning a command resumes it.",
    )
    grid = bench.add_argument_group("the grid (comma-separated lists)")
    grid.add_argument("--preset", help=f"a named suite: {', '.join(PRESETS)}; --noise, --structure, --arch and "
                      "--inference select among its runs, the budget, --option, --prior and --seed change them "
                      "(with a warning)")
    grid.add_argument("--datasets", help=f"data sets: {', '.join(DATASETS)}, e.g. boston,yacht")
    grid.add_argument("--splits", help="splits: 0-4, 0,3,5 or all (default: all, or the preset's)")
    grid.add_argument("--noise", help=f"noise models / priors: {', '.join(PRIOR_NAMES)} (default half-cauchy)")
    grid.add_argument("--structure", help=f"structures: {', '.join(STRUCTURES)} (default ard)")
    grid.add_argument("--arch", help=f"architectures {ARCH_PATTERN}, e.g. mlp-1x50 (default)")
    grid.add_argument("--inference", help=f"methods: {', '.join(METHODS)} (default svi)")
    grid.add_argument("--seed", default="0", help="seeds, e.g. 0 or 0,1,2 (default 0)")
    grid.add_argument("--holdout", type=float, metavar="FRACTION",
                      help="train on the first 1-FRACTION of each training split (file order) and record the metrics "
                      "of the rest (validation) beside the test metrics, e.g. 0.2 (default: none, or the preset's)")
    budget = bench.add_argument_group("training budget (each applies to the methods counting in that unit)")
    for unit in BUDGET_UNITS:
        budget.add_argument(f"--{unit}", type=int, help=_budget_help(unit))
    budget.add_argument("--option", action="append", metavar="KEY=VALUE",
                        help="a backend option for every run, e.g. lr=0.001 (repeatable)")
    budget.add_argument("--prior", action="append", metavar="KEY=VALUE",
                        help="a prior parameter for every run, e.g. p=0.05 or sigma0=1 (repeatable)")
    budget.add_argument("--eval-samples", type=int,
                        help=f"posterior samples for the test metrics (default {DEFAULT_EVAL_SAMPLES}; gal2016: "
                        f"{GAL_EVAL_SAMPLES})")
    run = bench.add_argument_group("execution")
    run.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    run.add_argument("--workers", type=int, default=1, help="parallel jobs: 1 runs in this process (default)")
    run.add_argument("--executor", default="local", **_choices(EXECUTORS),
                     help="; ".join(f"{name}: {what}" for name, what in EXECUTORS.items()))
    run.add_argument("--ray-address", help="address of a running Ray cluster (default: start a local one)")
    run.add_argument("--max-replicas", type=int, default=None,
                     help=f"most runs batched into one model (default: {DEFAULT_MAX_REPLICAS} on a GPU; on a CPU "
                          f"as many as keep a step under {CPU_BATCH_ROWS} rows)")
    run.add_argument("--threads", type=int, default=1, help="torch threads per job (default 1)")
    run.add_argument("--checkpoint-every", type=float, default=300.0, metavar="SECONDS",
                     help="save each training job's state this often into RESULTS.checkpoints/, so that a killed "
                     "bench continues where it stopped when run again (default 300; -1: no checkpoints)")
    run.add_argument("--data-dir", help="folder holding the UCI data sets (default: $BNN_PRIORS_DATA, else the cache)")
    run.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    table_options(bench)
    bench.set_defaults(func=cmd_bench)

    table = sub.add_parser("table", help="print the comparison table of a results file")
    table_options(table)
    table.add_argument("--datasets", help="only these data sets (comma-separated)")
    table.add_argument("--decimals", type=int, help="decimals of every number (default: 3 significant digits)")
    table.add_argument("--out", help="write the table to this file instead of printing it")
    table.set_defaults(func=cmd_table)

    jobs = sub.add_parser("jobs", help="the unfinished jobs of a results file: how far each got, from its checkpoint")
    jobs.add_argument("--results", default="results.sqlite", help="results database (default: %(default)s)")
    jobs.set_defaults(func=cmd_jobs)

    plot = sub.add_parser("plot", help="plot a results file: metric per data set, calibration, weight heat maps")
    plot.add_argument("--results", default="results.sqlite", help="results database (default: %(default)s)")
    plot.add_argument("--out", help="image of the metric with standard-error bars, one panel per data set (a name "
                      "without suffix gets .png)")
    plot.add_argument("--metric", default="rmse", **_choices(METRICS), help=metric_help)
    plot.add_argument("--reference", metavar="NAMES",
                      help=f"draw published figures in the same metric beside ours: {', '.join(REFERENCES)} "
                      "(comma-separated)")
    plot.add_argument("--calibration", metavar="OUT.png",
                      help="image of the fraction of test targets inside central predictive intervals against "
                      "their nominal level, per method and data set")
    plot.add_argument("--heatmaps", metavar="OUT.png",
                      help="PNG of heat maps of the stored first hidden-to-hidden weight matrix, one run per structure")
    plot.set_defaults(func=cmd_plot)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        try:
            return args.func(args)
        except BNNPriorsError as exc:
            _error(str(exc))
            return 2
        except KeyboardInterrupt:
            print(f"{PROG}: interrupted", file=sys.stderr)
            return 130
        except BrokenPipeError:
            return 0


if __name__ == "__main__":
    sys.exit(main())
