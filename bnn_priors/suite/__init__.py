"""The benchmark runner: grids of runs, batched jobs, a results database, tables and plots.

Typical use from Python (the command line ``bnn-priors bench`` does the same)::

    from bnn_priors.suite import expand_grid, run_suite, results_table

    configs = expand_grid("yacht", splits="0-4", noise="half-cauchy,inverse-nakagami",
                          structure="ard", arch="mlp-1x50", inference="svi-em",
                          budget={"steps": 2000})
    report = run_suite(configs, "results.sqlite", workers=2)
    print(results_table("results.sqlite", hashes=report.hashes))

The modules, each one idea, in the order they import one another (a module imports
only modules above it):

* ``methods``: the inference methods over :data:`inference.BACKENDS`;
* ``config``: a run as a hashable configuration, and grids of them;
* ``build``: what a configuration stands for (prior, network, label);
* ``data_options``: options that become backend options with the data (Gal's tau);
* ``loading``: the data sets of a suite, read once per process;
* ``planning``: support checks and batched jobs;
* ``provenance``: what a results row records besides its metrics;
* ``evaluation``: metrics of a fitted job, in chunks of points;
* ``executors``, ``store``: where jobs run, where rows go;
* ``runner``: running jobs and the suite;
* ``references``, ``render``, ``tables``, ``protocols``, ``plots``: published
  figures, the one table renderer, the comparison table, selection protocols, figures;
* ``presets``: named suites.
"""

from bnn_priors.suite.build import method_label
from bnn_priors.suite.config import RunConfig, config_hash, expand_grid, parse_arch, parse_splits
from bnn_priors.suite.methods import METHODS, Method, get_method
from bnn_priors.suite.planning import Job, check_support, plan_jobs
from bnn_priors.suite.plots import plot_heatmaps, plot_metric
from bnn_priors.suite.presets import PRESETS, get_preset, preset_configs
from bnn_priors.suite.protocols import PROTOCOLS, gal_select, gal_table, protocol_table
from bnn_priors.suite.references import REFERENCES, get_reference
from bnn_priors.suite.render import FORMATS
from bnn_priors.suite.runner import SuiteReport, run_job, run_suite
from bnn_priors.suite.store import ResultsStore, read_results
from bnn_priors.suite.tables import (
    METRICS,
    comparison_table,
    format_table,
    results_table,
    summarize,
)

__all__ = [
    "FORMATS",
    "METHODS",
    "METRICS",
    "PRESETS",
    "PROTOCOLS",
    "REFERENCES",
    "Job",
    "Method",
    "ResultsStore",
    "RunConfig",
    "SuiteReport",
    "check_support",
    "comparison_table",
    "config_hash",
    "expand_grid",
    "format_table",
    "gal_select",
    "gal_table",
    "get_method",
    "get_preset",
    "get_reference",
    "method_label",
    "parse_arch",
    "parse_splits",
    "plan_jobs",
    "plot_heatmaps",
    "plot_metric",
    "preset_configs",
    "protocol_table",
    "read_results",
    "results_table",
    "run_job",
    "run_suite",
    "summarize",
]
