"""The comparison table: data sets as rows, methods as columns, mean ± standard error.

For each data set and method, the runs (``status == "ok"``) are first averaged
over seeds within a split, then summarized over the splits: the mean and the
standard error ``SE = s / sqrt(n)``, where ``s`` is the sample standard deviation
(``ddof=1``) and ``n`` the number of splits (no SE for ``n = 1``).

The best method of each data set (lowest RMSE, highest log-likelihood) is in
bold. The last row is the average rank: on each data set the methods are ranked
(1 = best, ties share the average rank) among those that ran on it, and each
method's ranks are summarized over data sets as mean ± SE; the best average rank
is in bold. Published figures (``references``) are extra columns marked
"(published)", shown for reference: they are neither bolded nor ranked. Only
published columns measured in the table's metric are shown (a paper's columns
in another metric are left out, and the caption names them); a column whose
splits or spread differ from ours says so in its header
(:meth:`~bnn_priors.suite.references.PublishedColumn.header`), and its ``±`` is
its own (e.g. a standard deviation).

A run that has no figure in the metric (a run recorded before the metric existed,
such as ``sample_mae`` of older results files) still gives its method a column, whose
cell is missing (``–``); metrics are never mixed.

Method columns are the runs' labels (the preset's name for a method, else a
label derived from the config such as ``SVI-EM (half-cauchy/ard-add, resnet-2x50)``).
When one label covers runs of different configurations (e.g. two budgets), the
budget, else a short config key, is appended so they are not mixed.

``split="validation"`` tabulates the metrics of the held-out validation parts
of hold-out runs (``val_rmse``, ``val_log_likelihood``) instead of the test
metrics; runs without a hold-out have none and are left out, and published
(test) figures cannot be shown beside them.

Formats: those of :data:`bnn_priors.suite.render.FORMATS` (markdown, LaTeX, HTML,
CSV), written by :mod:`bnn_priors.suite.render`. The CSV is the tidy form for
further analysis, one line per (data set, method): ``dataset, method, source,
mean, se, n, rank, best, spread`` (``se`` holds the ``±`` figure, ``spread`` says what
it is: ``se``, or ``sd`` for a published standard deviation).

Imports: :mod:`bnn_priors.errors`, :mod:`bnn_priors.data` (the data sets' order)
and, of the suite, :mod:`~bnn_priors.suite.references`,
:mod:`~bnn_priors.suite.render` and :mod:`~bnn_priors.suite.store`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from bnn_priors.data import DATASETS
from bnn_priors.errors import InvalidParameterError, lookup, normalize_name
from bnn_priors.suite.references import METRIC_NAMES, get_reference, published_columns
from bnn_priors.suite.render import Column, Estimate, Row, Table, check_format, decimals_for, render
from bnn_priors.suite.store import load_runs


class Metric(NamedTuple):
    """A metric of the results: its column, its name and whether higher is better."""

    column: str
    name: str
    higher_is_better: bool


#: Every metric by name (the command line's ``--metric`` choices).
METRICS: dict[str, Metric] = {
    "rmse": Metric("rmse", "test RMSE", False),
    "ll": Metric("log_likelihood", "test log-likelihood", True),
    "sample-mae": Metric("sample_mae", "test sample-MAE", False),
}
#: Other spellings of the metrics' names.
METRIC_ALIASES = {"log-likelihood": "ll", "loglik": "ll"}
#: Which part of each split the metrics are of: the test split, or the hold-out validation part.
SPLITS = ("test", "validation")
RANK_ROW = "average rank"


def check_metric(metric: str) -> str:
    """The registered name of a metric (a key of :data:`METRICS`, or an alias)."""
    return lookup("metric", METRIC_ALIASES.get(normalize_name(metric), metric), METRICS)


def metric_info(metric: str, split: str = "test") -> Metric:
    """The metric ``metric`` (a key of :data:`METRICS` or an alias) on the test splits or the validation parts."""
    key = check_metric(metric)
    column, name, higher = METRICS[key]
    if check_split(split) == "validation":
        return Metric(f"val_{column}", name.replace("test ", "validation "), higher)
    return METRICS[key]


def check_split(split: str) -> str:
    return lookup("split", split, SPLITS)


def dataset_order(names: Iterable[str]) -> list[str]:
    """The registered data sets among ``names`` in registry order, then the others sorted."""
    names = list(dict.fromkeys(names))
    known = [d for d in DATASETS if d in names]
    return known + sorted(n for n in names if n not in DATASETS)


def method_columns(df: pd.DataFrame) -> pd.Series:
    """The table column of each run: its label, made unique across configurations."""
    labels = df["label"].astype(str) if "label" in df else pd.Series("run", index=df.index)
    if "method_key" not in df:
        return labels
    out = labels.copy()
    for label, rows in df.groupby(labels, sort=False):
        if rows["method_key"].nunique() <= 1:
            continue
        suffix = pd.Series("", index=rows.index)
        if "budget" in rows and rows.groupby("method_key")["budget"].nunique().max() == 1 and rows["budget"].nunique() > 1:
            unit = rows["budget_unit"].astype(str) if "budget_unit" in rows else ""
            suffix = ", " + rows["budget"].astype(str) + " " + unit
        else:
            suffix = " [" + rows["method_key"].astype(str).str[:8] + "]"
        out.loc[rows.index] = label + suffix
    return out


def mean_se(values) -> tuple[float, float, int]:
    """Mean, standard error (sample standard deviation with ddof=1 / sqrt(n); NaN for one value) and n."""
    v = np.asarray(values, dtype=float)
    n = len(v)
    se = float(np.std(v, ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    return float(np.mean(v)), se, n


def ok_runs(df: pd.DataFrame, metric: str = "rmse", split: str = "test") -> pd.DataFrame:
    """The successful runs of ``df`` (in ``id`` order) with their table column (``method``), whether or not
    they have a figure in the metric; on ``split="validation"`` only those with one (hold-out runs)."""
    column, _, _ = metric_info(metric, split)
    missing = {"dataset", "split", column} - set(df.columns)
    if missing:
        raise InvalidParameterError(f"results need the columns {sorted(missing)}")
    runs = df if "status" not in df else df[df["status"] == "ok"]
    if check_split(split) == "validation":
        runs = runs[np.isfinite(pd.to_numeric(runs[column], errors="coerce").astype(float))]
    runs = runs.copy()
    if "id" in runs:
        runs = runs.sort_values("id", kind="stable")
    runs = runs.reset_index(drop=True)
    runs["method"] = method_columns(runs) if len(runs) else pd.Series(dtype=str)
    return runs


def summarize(df: pd.DataFrame, metric: str = "rmse", split: str = "test") -> pd.DataFrame:
    """One line per (dataset, method): ``mean``, ``se`` and ``n`` (splits) of the metric.

    ``df`` needs ``dataset``, ``split``, ``label`` and the metric's column (see
    :data:`METRICS`; with ``split="validation"`` its ``val_`` column); ``status``,
    ``seed``, ``method_key`` are used when present (only ``ok`` runs with a finite
    figure count).
    """
    column, _, _ = metric_info(metric, split)
    runs = ok_runs(df, metric, split)
    runs = runs[np.isfinite(pd.to_numeric(runs[column], errors="coerce").astype(float))]
    out_cols = ["dataset", "method", "mean", "se", "n"]
    if runs.empty:
        return pd.DataFrame(columns=out_cols)
    runs = runs.assign(**{column: pd.to_numeric(runs[column]).astype(float)})
    per_split = runs.groupby(["dataset", "method", "split"], sort=False)[column].mean().reset_index()
    grouped = per_split.groupby(["dataset", "method"], sort=False)[column]
    summary = grouped.agg(mean="mean", std=lambda v: v.std(ddof=1), n="count").reset_index()
    summary["se"] = np.where(summary["n"] > 1, summary["std"] / np.sqrt(summary["n"]), np.nan)
    return summary[out_cols]


@dataclass
class ComparisonTable:
    """A table ready to format: cells ``(mean, se, n)`` by (data set, column).

    ``published`` are the reference columns by header, each with what it measured
    (:class:`~bnn_priors.suite.references.PublishedColumn`); ``unmeasured`` the (data
    set, method) pairs that have runs but no figure in the metric; ``left_out`` the
    named references' columns in other metrics only."""

    metric: str  # a key of METRICS
    datasets: list[str]
    methods: list[str]  # the suite's columns, ranked and bolded
    published: list[str] = field(default_factory=list)  # reference columns
    cells: dict[tuple[str, str], tuple[float, float, int]] = field(default_factory=dict)
    best: set[tuple[str, str]] = field(default_factory=set)
    ranks: dict[tuple[str, str], float] = field(default_factory=dict)  # (dataset, method) -> rank
    average_rank: dict[str, tuple[float, float, int]] = field(default_factory=dict)
    split: str = "test"  # or "validation": the hold-out parts
    spreads: dict[str, str] = field(default_factory=dict)  # published column -> "se" or "sd"
    places: dict[str, tuple[int, int]] = field(default_factory=dict)  # published column -> places as printed
    unmeasured: set[tuple[str, str]] = field(default_factory=set)
    left_out: dict[str, str] = field(default_factory=dict)  # "method [citation]" -> the metrics it measured

    @property
    def columns(self) -> list[str]:
        return self.methods + self.published

    @property
    def higher_is_better(self) -> bool:
        return metric_info(self.metric).higher_is_better


def comparison_table(
    df: pd.DataFrame,
    metric: str = "rmse",
    references: Sequence[str] = (),
    datasets: Sequence[str] | None = None,
    split: str = "test",
) -> ComparisonTable:
    """Summarize runs into a :class:`ComparisonTable` (see the module docstring for the rules)."""
    key = check_metric(metric)
    _, _, higher = metric_info(key, split)
    split = check_split(split)
    if split == "validation" and references:
        raise InvalidParameterError(
            "published figures are test-set figures: show them with the test metrics (--split test), "
            "not beside validation metrics"
        )
    runs = ok_runs(df, key, split)
    summary = summarize(df, key, split)
    if datasets is not None:
        summary = summary[summary["dataset"].isin(list(datasets))]
        runs = runs[runs["dataset"].isin(list(datasets))]
    table = ComparisonTable(key, dataset_order(runs["dataset"]), list(dict.fromkeys(runs["method"])), split=split)
    for row in summary.itertuples(index=False):
        table.cells[(row.dataset, row.method)] = (float(row.mean), float(row.se), int(row.n))
    for pair in dict.fromkeys(zip(runs["dataset"], runs["method"])):
        if pair not in table.cells:
            table.unmeasured.add(pair)
    for column, published in published_columns(references, key).items():
        table.published.append(column)
        table.spreads[column] = published.spread
        table.places[column] = published.places
        for dataset in table.datasets:
            if dataset in published.figures:
                mean, spread = published.figures[dataset]
                table.cells[(dataset, column)] = (float(mean), float(spread), 0)
    for ref in references:
        reference = get_reference(ref)
        measured = {c.method for c in reference.columns if c.metric == key}
        for c in reference.columns:
            if c.method not in measured:
                name = f"{c.method} [{reference.citation}]"
                before = table.left_out.get(name)
                table.left_out[name] = METRIC_NAMES[c.metric] if before is None else f"{before} and {METRIC_NAMES[c.metric]}"
    sign = -1.0 if higher else 1.0
    per_method: dict[str, list[float]] = {m: [] for m in table.methods}
    for dataset in table.datasets:
        present = [m for m in table.methods if (dataset, m) in table.cells]
        if not present:
            continue
        scores = pd.Series([sign * table.cells[(dataset, m)][0] for m in present], index=present)
        best = scores.min()
        table.best.update((dataset, m) for m in present if scores[m] == best)
        for m, r in scores.rank(method="average").items():
            table.ranks[(dataset, m)] = float(r)
            per_method[m].append(float(r))
    for m, values in per_method.items():
        if values:
            table.average_rank[m] = mean_se(values)
    return table


# -------------------------------------------------------------------- formatting
def _caption(table: ComparisonTable) -> str:
    _, name, higher = metric_info(table.metric, table.split)
    ns = sorted({c[2] for (d, m), c in table.cells.items() if m in table.methods})
    title = f"{name[0].upper() + name[1:]} ({'higher' if higher else 'lower'} is better)"
    unmeasured = (f"– : not measured (runs recorded before this code measured the {name.replace('test ', '')} "
                  "have none).")
    if not ns:
        text = f"{title}: none of these runs has it. {unmeasured}"
    else:
        nsplits = f"n = {ns[0]}" if len(ns) == 1 else f"n = {ns[0]} to {ns[-1]}"
        text = (
            f"{title}: mean ± standard error over "
            f"splits ({nsplits}; SE = sample standard deviation with ddof=1 / sqrt(n)). Best per data set in bold. "
            f"Average rank: mean ± SE over data sets of each method's rank (1 = best, ties averaged)."
        )
        if table.unmeasured:
            text += " " + unmeasured
    if table.published:
        text += " Columns marked (published) are the source papers' figures, neither bolded nor ranked."
        if any(spread == "sd" for spread in table.spreads.values()):
            text += (" In a column marked ±SD the ± is a standard deviation over splits, not a standard error; "
                     "'own splits' are the authors' random splits, not the standard ones.")
    if table.left_out:
        groups: dict[str, list[str]] = {}
        for column, metric_name in table.left_out.items():
            groups.setdefault(metric_name, []).append(column)
        text += " Left out, measured in another metric: " + "; ".join(
            f"{', '.join(columns)} ({metric_name})" for metric_name, columns in groups.items()) + "."
    return text


def _rows(table: ComparisonTable, decimals: int | None) -> list[Row]:
    """One row per data set (a missing figure is NaN), then the rank row."""
    rows = []
    for dataset in table.datasets:
        values = [table.cells[(dataset, c)][0] for c in table.columns if (dataset, c) in table.cells]
        dec = decimals_for(values) if decimals is None else decimals
        cells: list = [dataset]
        for c in table.columns:
            mean, se, _ = table.cells.get((dataset, c), (math.nan, math.nan, 0))
            if c in table.places:  # a published figure: as printed, never with more places than the source
                mean_places, spread_places = table.places[c]
                cells.append(Estimate(mean, se, mean_places, se_decimals=spread_places))
            else:
                cells.append(Estimate(mean, se, dec, (dataset, c) in table.best))
        rows.append(Row(cells))
    if table.average_rank:
        best = min(v[0] for v in table.average_rank.values())
        cells = [RANK_ROW]
        for c in table.columns:
            if c not in table.average_rank:
                cells.append("")
                continue
            mean, se, _ = table.average_rank[c]
            cells.append(Estimate(mean, se, 2, mean == best))
        rows.append(Row(cells, summary=True))
    return rows


def _tidy(table: ComparisonTable) -> pd.DataFrame:
    rows = []
    for dataset in table.datasets:
        for c in table.columns:
            if (dataset, c) not in table.cells:
                continue
            mean, se, n = table.cells[(dataset, c)]
            published = c in table.published
            rows.append({
                "dataset": dataset,
                "method": c,
                "source": "published" if published else "suite",
                "mean": mean,
                "se": se,
                "n": None if published else n,
                "rank": table.ranks.get((dataset, c)),
                "best": (dataset, c) in table.best,
                "spread": table.spreads.get(c, "se"),
            })
    return pd.DataFrame(rows, columns=["dataset", "method", "source", "mean", "se", "n", "rank", "best", "spread"])


def format_table(table: ComparisonTable, fmt: str = "markdown", decimals: int | None = None) -> str:
    """Render a :class:`ComparisonTable` in a format of :data:`bnn_priors.suite.render.FORMATS`."""
    fmt = check_format(fmt)
    if not table.datasets:
        if table.split == "validation":
            raise InvalidParameterError(
                "there are no successful hold-out runs with validation metrics to tabulate (run bench with --holdout)"
            )
        raise InvalidParameterError("there are no successful runs to tabulate")
    columns = [Column("dataset", "label", latex_title="Data set"), *(Column(c) for c in table.columns)]
    return render(Table(columns, _rows(table, decimals), _caption(table), _tidy(table)), fmt)


def results_table(
    results: str | Path | pd.DataFrame,
    metric: str = "rmse",
    fmt: str = "markdown",
    references: Sequence[str] = (),
    hashes: Iterable[str] | None = None,
    datasets: Sequence[str] | None = None,
    decimals: int | None = None,
    split: str = "test",
) -> str:
    """The formatted comparison table of a results file (or DataFrame of runs).

    ``hashes`` keeps only those runs (e.g. the grid a suite just ran); ``split``
    is ``test`` or ``validation`` (the hold-out parts).
    """
    df = load_runs(results, hashes)
    return format_table(comparison_table(df, metric, references, datasets, split), fmt, decimals)
