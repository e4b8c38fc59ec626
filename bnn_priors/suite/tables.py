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
"(published)", shown for reference: they are neither bolded nor ranked.

Method columns are the runs' labels (the preset's name for a method, else a
label derived from the config such as ``SVI-EM (half-cauchy/ard-add, resnet-2x50)``).
When one label covers runs of different configurations (e.g. two budgets), the
budget, else a short config key, is appended so they are not mixed.

``split="validation"`` tabulates the metrics of the held-out validation parts
of hold-out runs (``val_rmse``, ``val_log_likelihood``) instead of the test
metrics; runs without a hold-out have none and are left out, and published
(test) figures cannot be shown beside them.

Formats: ``markdown`` (GitHub pipe table), ``latex`` (booktabs ``tabular``),
``html`` and ``csv``. The CSV is the tidy form for further analysis, one line per
(data set, method): ``dataset, method, source, mean, se, n, rank, best``.
"""

from __future__ import annotations

import html
import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from bnn_priors.errors import InvalidParameterError, UnknownNameError
from bnn_priors.suite.references import get_reference

#: ``metric -> (results column, name, higher is better)``
METRICS: dict[str, tuple[str, str, bool]] = {
    "rmse": ("rmse", "test RMSE", False),
    "ll": ("log_likelihood", "test log-likelihood", True),
}
FORMATS = ("markdown", "latex", "csv", "html")
#: Which part of each split the metrics are of: the test split, or the hold-out validation part.
SPLITS = ("test", "validation")
RANK_ROW = "average rank"


def _metric(metric: str, split: str = "test") -> tuple[str, str, bool]:
    key = str(metric).strip().lower()
    if key in ("log_likelihood", "log-likelihood", "loglik"):
        key = "ll"
    if key not in METRICS:
        raise UnknownNameError("metric", metric, METRICS)
    column, name, higher = METRICS[key]
    if check_split(split) == "validation":
        return f"val_{column}", name.replace("test ", "validation "), higher
    return column, name, higher


def check_format(fmt: str) -> str:
    key = str(fmt).strip().lower()
    if key not in FORMATS:
        raise UnknownNameError("table format", fmt, FORMATS)
    return key


def check_split(split: str) -> str:
    key = str(split).strip().lower()
    if key not in SPLITS:
        raise UnknownNameError("split", split, SPLITS)
    return key


def _dataset_order(names: Iterable[str]) -> list[str]:
    from bnn_priors.data import DATASETS

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


def summarize(df: pd.DataFrame, metric: str = "rmse", split: str = "test") -> pd.DataFrame:
    """One line per (dataset, method): ``mean``, ``se`` and ``n`` (splits) of the metric.

    ``df`` needs ``dataset``, ``split``, ``label`` and the metric's column
    (``rmse`` or ``log_likelihood``; with ``split="validation"`` ``val_rmse`` or
    ``val_log_likelihood``); ``status``, ``seed``, ``method_key`` are used
    when present (only ``ok`` runs count).
    """
    column, _, _ = _metric(metric, split)
    missing = {"dataset", "split", column} - set(df.columns)
    if missing:
        raise InvalidParameterError(f"results need the columns {sorted(missing)}")
    runs = df if "status" not in df else df[df["status"] == "ok"]
    runs = runs[np.isfinite(pd.to_numeric(runs[column], errors="coerce").astype(float))].copy()
    out_cols = ["dataset", "method", "mean", "se", "n"]
    if runs.empty:
        return pd.DataFrame(columns=out_cols)
    if "id" in runs:
        runs = runs.sort_values("id", kind="stable")
    runs = runs.reset_index(drop=True)
    runs["method"] = method_columns(runs)
    per_split = runs.groupby(["dataset", "method", "split"], sort=False)[column].mean().reset_index()
    grouped = per_split.groupby(["dataset", "method"], sort=False)[column]
    summary = grouped.agg(mean="mean", std=lambda v: v.std(ddof=1), n="count").reset_index()
    summary["se"] = np.where(summary["n"] > 1, summary["std"] / np.sqrt(summary["n"]), np.nan)
    return summary[out_cols]


@dataclass
class ComparisonTable:
    """A table ready to format: cells ``(mean, se, n)`` by (data set, column)."""

    metric: str
    datasets: list[str]
    methods: list[str]  # the suite's columns, ranked and bolded
    published: list[str] = field(default_factory=list)  # reference columns
    cells: dict[tuple[str, str], tuple[float, float, int]] = field(default_factory=dict)
    best: set[tuple[str, str]] = field(default_factory=set)
    ranks: dict[tuple[str, str], float] = field(default_factory=dict)  # (dataset, method) -> rank
    average_rank: dict[str, tuple[float, float, int]] = field(default_factory=dict)
    split: str = "test"  # or "validation": the hold-out parts

    @property
    def columns(self) -> list[str]:
        return self.methods + self.published

    @property
    def higher_is_better(self) -> bool:
        return _metric(self.metric)[2]


def comparison_table(
    df: pd.DataFrame,
    metric: str = "rmse",
    references: Sequence[str] = (),
    datasets: Sequence[str] | None = None,
    split: str = "test",
) -> ComparisonTable:
    """Summarize runs into a :class:`ComparisonTable` (see the module docstring for the rules)."""
    _, _, higher = _metric(metric, split)
    key = "ll" if higher else "rmse"
    split = check_split(split)
    if split == "validation" and references:
        raise InvalidParameterError(
            "published figures are test-set figures: show them with the test metrics (--split test), "
            "not beside validation metrics"
        )
    summary = summarize(df, metric, split)
    if datasets is not None:
        summary = summary[summary["dataset"].isin(list(datasets))]
    table = ComparisonTable(key, _dataset_order(summary["dataset"]), list(dict.fromkeys(summary["method"])),
                            split=split)
    for row in summary.itertuples(index=False):
        table.cells[(row.dataset, row.method)] = (float(row.mean), float(row.se), int(row.n))
    for ref in references:
        for column, figures in get_reference(ref).metric_columns(key).items():
            table.published.append(column)
            for dataset in table.datasets:
                if dataset in figures:
                    mean, se = figures[dataset]
                    table.cells[(dataset, column)] = (float(mean), float(se), 0)
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
def _decimals(values: Iterable[float]) -> int:
    """Enough decimals for three significant digits of the smallest non-zero magnitude (0 to 4)."""
    mags = [abs(v) for v in values if math.isfinite(v) and v != 0]
    if not mags:
        return 2
    return int(min(4, max(0, 2 - math.floor(math.log10(min(mags))))))


def _cell_text(mean: float, se: float, decimals: int, pm: str) -> str:
    text = f"{mean:.{decimals}f}"
    if math.isfinite(se):
        text += f"{pm}{se:.{decimals}f}"
    return text


def _caption(table: ComparisonTable) -> str:
    _, name, higher = _metric(table.metric, table.split)
    ns = sorted({c[2] for (d, m), c in table.cells.items() if m in table.methods})
    nsplits = f"n = {ns[0]}" if len(ns) == 1 else f"n = {ns[0]} to {ns[-1]}"
    text = (
        f"{name[0].upper() + name[1:]} ({'higher' if higher else 'lower'} is better): mean ± standard error over "
        f"splits ({nsplits}; SE = sample standard deviation with ddof=1 / sqrt(n)). Best per data set in bold. "
        f"Average rank: mean ± SE over data sets of each method's rank (1 = best, ties averaged)."
    )
    if table.published:
        text += " Columns marked (published) are the source papers' figures, neither bolded nor ranked."
    return text


def _grid(table: ComparisonTable, decimals: int | None, pm: str) -> list[list[tuple[str, bool]]]:
    """The table body as ``(text, bold)`` cells: one row per data set, then the rank row."""
    rows = []
    for dataset in table.datasets:
        values = [table.cells[(dataset, c)][0] for c in table.columns if (dataset, c) in table.cells]
        dec = _decimals(values) if decimals is None else decimals
        row = [(dataset, False)]
        for c in table.columns:
            if (dataset, c) not in table.cells:
                row.append(("–", False))
                continue
            mean, se, _ = table.cells[(dataset, c)]
            row.append((_cell_text(mean, se, dec, pm), (dataset, c) in table.best))
        rows.append(row)
    if table.average_rank:
        best = min(v[0] for v in table.average_rank.values())
        row = [(RANK_ROW, False)]
        for c in table.columns:
            if c not in table.average_rank:
                row.append(("", False))
                continue
            mean, se, _ = table.average_rank[c]
            row.append((_cell_text(mean, se, 2, pm), mean == best))
        rows.append(row)
    return rows


def _latex_escape(text: str) -> str:
    out = []
    for ch in text:
        if ch in "&%$#_{}":
            out.append("\\" + ch)
        elif ch == "~":
            out.append("\\textasciitilde{}")
        elif ch == "^":
            out.append("\\textasciicircum{}")
        elif ch == "\\":
            out.append("\\textbackslash{}")
        else:
            out.append(ch)
    return "".join(out)


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
            })
    return pd.DataFrame(rows, columns=["dataset", "method", "source", "mean", "se", "n", "rank", "best"])


def format_table(table: ComparisonTable, fmt: str = "markdown", decimals: int | None = None) -> str:
    """Render a :class:`ComparisonTable` as ``markdown``, ``latex``, ``csv`` or ``html``."""
    fmt = check_format(fmt)
    if not table.datasets:
        if table.split == "validation":
            raise InvalidParameterError(
                "there are no successful hold-out runs with validation metrics to tabulate (run bench with --holdout)"
            )
        raise InvalidParameterError("there are no successful runs to tabulate")
    if fmt == "csv":
        buf = io.StringIO()
        _tidy(table).to_csv(buf, index=False, lineterminator="\n")
        return buf.getvalue()
    header = ["dataset", *table.columns]
    if fmt == "markdown":
        from tabulate import tabulate

        body = [[f"**{t}**" if b else t for t, b in row] for row in _grid(table, decimals, " ± ")]
        text = tabulate(body, headers=header, tablefmt="github", disable_numparse=True,
                        colalign=("left",) + ("right",) * len(table.columns))
        return f"{text}\n\n{_caption(table)}\n"
    if fmt == "latex":
        lines = [
            f"% {_caption(table)}",
            "\\begin{tabular}{l" + "c" * len(table.columns) + "}",
            "\\toprule",
            " & ".join(["Data set", *(_latex_escape(c) for c in table.columns)]) + " \\\\",
            "\\midrule",
        ]
        for row in _grid(table, decimals, " \\pm "):
            name = row[0][0]
            if name == RANK_ROW:
                lines.append("\\midrule")
            cells = [_latex_escape(name[0].upper() + name[1:] if name == RANK_ROW else name)]
            for text, bold in row[1:]:
                if text in ("", "–"):
                    cells.append("--" if text else "")
                else:
                    cells.append(f"$\\mathbf{{{text}}}$" if bold else f"${text}$")
            lines.append(" & ".join(cells) + " \\\\")
        lines += ["\\bottomrule", "\\end{tabular}"]
        return "\n".join(lines) + "\n"
    return html_table(_caption(table), header, _grid(table, decimals, " ± "))


def html_table(caption: str, header: Sequence[str], rows: Iterable[Sequence[tuple[str, bool]]]) -> str:
    """An HTML table of ``(text, bold)`` cells with a caption (every text escaped)."""
    out = ["<table>", f"<caption>{html.escape(caption)}</caption>", "<thead><tr>"]
    out += [f"<th>{html.escape(h)}</th>" for h in header]
    out.append("</tr></thead>\n<tbody>")
    for row in rows:
        cells = "".join(f"<td><b>{html.escape(t)}</b></td>" if b else f"<td>{html.escape(t)}</td>" for t, b in row)
        out.append(f"<tr>{cells}</tr>")
    out.append("</tbody>\n</table>")
    return "\n".join(out) + "\n"


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
    from bnn_priors.suite.store import load_runs

    df = load_runs(results, hashes)
    return format_table(comparison_table(df, metric, references, datasets, split), fmt, decimals)
