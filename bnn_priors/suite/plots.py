"""Figures from a results file (matplotlib, Agg backend: no display needed).

* :func:`plot_metric`: one panel per data set, each method's mean test metric over
  splits with standard-error bars (same numbers as the table:
  :func:`bnn_priors.suite.tables.summarize`). Published figures (``references``) are
  drawn beside them as open diamonds with their own spread (a dashed bar for a
  standard deviation), only those measured in the same metric
  (:func:`bnn_priors.suite.references.published_columns`), only on data sets we ran.
* :func:`plot_calibration`: one panel per data set, each method's fraction of test
  targets inside the central predictive interval of each nominal level
  (:func:`coverage_curves`, from the runs' stored ``coverage`` counts, pooled over
  splits) against the level; a calibrated predictive lies on the diagonal, an
  overconfident one below it.
* :func:`plot_heatmaps`: heat maps of the stored posterior mean of the first
  hidden-to-hidden weight matrix (the first weight matrix of a one-hidden-layer
  net), ``|W|``, for one fitted run per structure. Rows are input units, columns
  output units: ARD shrinks whole rows together, ADD the whole matrix.

Every figure is written to the path :func:`check_out` makes of ``out``: a name
without a suffix gets ``.png`` (what matplotlib would write), and the path returned
is the file written. A folder, a missing parent folder, a suffix that is no image
format and a file that cannot be written are :class:`~bnn_priors.InvalidParameterError`.

Imports: :mod:`bnn_priors.errors`, :mod:`bnn_priors.structures` and, of the suite,
:mod:`~bnn_priors.suite.references`, :mod:`~bnn_priors.suite.store` and
:mod:`~bnn_priors.suite.tables`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from bnn_priors.errors import DataError, InvalidParameterError
from bnn_priors.structures import STRUCTURES
from bnn_priors.suite.references import published_columns
from bnn_priors.suite.store import load_runs, npy_to_array
from bnn_priors.suite.tables import check_metric, dataset_order, metric_info, ok_runs, summarize

DPI = 120


def _pyplot():
    """pyplot, on the file-only Agg backend unless a session (a notebook) already chose one."""
    import sys

    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def image_formats() -> list[str]:
    """The file suffixes matplotlib writes (``png``, ``pdf``, ``svg``, ...)."""
    from matplotlib.backend_bases import FigureCanvasBase

    return sorted(FigureCanvasBase.get_supported_filetypes())


def check_out(out: str | Path) -> Path:
    """The file a figure asked for as ``out`` is written to, checked before any drawing."""
    path = Path(out).expanduser()
    if path.is_dir():
        raise InvalidParameterError(f"cannot write a figure to {path}: {path} is a folder; give a file name such as "
                                    f"{path / 'figure.png'}")
    if not path.suffix:
        path = path.with_name(path.name + ".png")
    formats = image_formats()
    if path.suffix[1:].lower() not in formats:
        raise InvalidParameterError(f"cannot write {path}: '{path.suffix}' is not an image format; use one of "
                                    f"{', '.join('.' + f for f in formats)}")
    if not path.parent.exists():
        raise InvalidParameterError(f"cannot write {path}: folder {path.parent} does not exist")
    return path


def _save(fig, path: Path) -> Path:
    """Write ``fig`` to ``path`` and close it; a file system's refusal is one line naming the file."""
    plt = _pyplot()
    try:
        fig.savefig(path, dpi=DPI, bbox_inches="tight")
    except OSError as exc:
        raise InvalidParameterError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)
    return path


# ------------------------------------------------------------------ metric
def metric_points(results: str | Path | pd.DataFrame, metric: str = "rmse",
                  references: Sequence[str] = ()) -> pd.DataFrame:
    """What :func:`plot_metric` draws, one line per (data set, row): ``dataset``, ``row`` (a method, or a
    published column's header), ``source`` (``suite`` or ``published``), ``mean``, ``spread`` and
    ``spread_kind`` (``se`` or ``sd``). Published figures only in ``metric`` and on data sets with runs."""
    key = check_metric(metric)
    summary = summarize(load_runs(results), key)
    if summary.empty:
        _, name, _ = metric_info(key)
        raise DataError(f"there are no successful runs with a {name} to plot"
                        + (" (runs recorded before this code measured it have none)" if key == "sample-mae" else ""))
    points = summary.rename(columns={"method": "row", "se": "spread"}).assign(source="suite", spread_kind="se")
    rows = [points[["dataset", "row", "source", "mean", "spread", "spread_kind"]]]
    datasets = set(summary["dataset"])
    for header, column in published_columns(references, key).items():
        figures = [(d, m, s) for d, (m, s) in column.figures.items() if d in datasets]
        rows.append(pd.DataFrame({"dataset": [d for d, _, _ in figures], "row": header, "source": "published",
                                  "mean": [m for _, m, _ in figures], "spread": [s for _, _, s in figures],
                                  "spread_kind": column.spread}))
    return pd.concat(rows, ignore_index=True)


def _short(header: str) -> str:
    """A published column's tick label: its header without the word 'published' (the marker says so)."""
    head, _, rest = header.partition(" (published")
    rest = rest.lstrip("; ").rstrip(")")
    return head + (f" ({rest})" if rest else "")


def plot_metric(results: str | Path | pd.DataFrame, out: str | Path, metric: str = "rmse",
                references: Sequence[str] = ()) -> Path:
    """Save a figure of the metric, one panel per data set: methods with standard-error bars, and the
    published figures of ``references`` in the same metric as open diamonds with their own spread."""
    key = check_metric(metric)
    _, name, higher = metric_info(key)
    path = check_out(out)
    points = metric_points(results, key, references)
    datasets = dataset_order(points["dataset"])
    methods = list(dict.fromkeys(points.loc[points["source"] == "suite", "row"]))
    published = list(dict.fromkeys(points.loc[points["source"] == "published", "row"]))
    rows = methods + published
    colors = {m: f"C{i % 10}" for i, m in enumerate(methods)}
    plt = _pyplot()
    ncols = min(3, len(datasets))
    nrows = math.ceil(len(datasets) / ncols)
    labels = methods + [_short(h) for h in published]
    height = 0.3 * len(rows) + 1.3
    label_width = 0.065 * max(len(label) for label in labels)  # inches of tick labels (font size 8)
    fig, axes = plt.subplots(nrows, ncols, figsize=(label_width + 3.6 * ncols, height * nrows), squeeze=False,
                             sharey=True)
    y_of = {r: i for i, r in enumerate(rows)}
    for ax, dataset in zip(axes.flat, datasets):
        part = points[points["dataset"] == dataset]
        for p in part.itertuples(index=False):
            y = y_of[p.row]
            spread = 0.0 if not np.isfinite(p.spread) else p.spread
            if p.source == "suite":
                ax.errorbar(p.mean, y, xerr=spread, fmt="o", color=colors[p.row], ecolor="black", capsize=3, lw=1,
                            ms=6, zorder=3)
            else:
                bar = ax.errorbar(p.mean, y, xerr=spread, fmt="D", mfc="white", mec="0.2", ecolor="0.35",
                                  capsize=3, lw=1, ms=6, zorder=3)
                if p.spread_kind == "sd":
                    bar[2][0].set_linestyle("--")
        if published and methods:
            ax.axhline(len(methods) - 0.5, color="0.6", lw=0.8)
        ax.set_title(dataset)
        ax.set_xlabel(f"{name} ({'higher' if higher else 'lower'} is better)")
        ax.grid(axis="x", alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels(labels, fontsize=8)
    axes[0, 0].set_ylim(len(rows) - 0.5, -0.5)
    for ax in list(axes.flat)[len(datasets):]:
        ax.set_visible(False)
    title = f"{name}: ours, mean ± standard error over splits (filled)"
    if published:
        kinds = set(points.loc[points["source"] == "published", "spread_kind"])
        bars = "solid bar ± SE" if kinds == {"se"} else "dashed bar ± SD" if kinds == {"sd"} else \
            "solid bar ± SE, dashed bar ± SD"
        title += f";\npublished figures in the same metric (open diamonds): {bars} over splits"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


# ------------------------------------------------------------- calibration
def coverage_curves(results: str | Path | pd.DataFrame) -> pd.DataFrame:
    """Per (data set, method, nominal level): the fraction of test targets inside the central predictive
    interval, pooled over the method's runs (their ``coverage`` counts added), with ``targets`` and ``runs``.

    Runs without a stored coverage (recorded before it existed) are left out."""
    runs = ok_runs(load_runs(results))
    if "coverage" in runs:
        runs = runs[runs["coverage"].notna()]
    lines = []
    for (dataset, method), part in runs.groupby(["dataset", "method"], sort=False) if "coverage" in runs else ():
        records = [json.loads(text) for text in part["coverage"]]
        levels = records[0]["levels"]
        if any(r["levels"] != levels for r in records):
            raise DataError(f"the runs of {method} on {dataset} count coverage at different levels")
        inside = np.sum([r["inside"] for r in records], axis=0)
        targets = sum(r["targets"] for r in records)
        for level, count in zip(levels, inside):
            lines.append({"dataset": dataset, "method": method, "level": float(level),
                          "fraction": count / targets, "targets": targets, "runs": len(records)})
    if not lines:
        raise DataError("no successful run has a stored interval coverage to plot (runs recorded before this "
                        "code measured it have none)")
    return pd.DataFrame(lines)


def plot_calibration(results: str | Path | pd.DataFrame, out: str | Path) -> Path:
    """Save the calibration curves of :func:`coverage_curves`, one panel per data set."""
    path = check_out(out)
    curves = coverage_curves(results)
    datasets = dataset_order(curves["dataset"])
    methods = list(dict.fromkeys(curves["method"]))
    plt = _pyplot()
    ncols = min(3, len(datasets))
    nrows = math.ceil(len(datasets) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 4.0 * nrows + 0.25 * len(methods)), squeeze=False)
    for ax, dataset in zip(axes.flat, datasets):
        n = curves.loc[curves["dataset"] == dataset, "targets"].max()
        grid = np.linspace(0, 1, 101)
        band = 2 * np.sqrt(grid * (1 - grid) / n)
        ax.fill_between(grid, grid - band, grid + band, color="0.85", lw=0,
                        label="calibrated ± 2 binomial SE (n as in the title)")
        ax.plot([0, 1], [0, 1], color="0.5", lw=1, ls="--", label="calibrated")
        for i, method in enumerate(methods):
            c = curves[(curves["dataset"] == dataset) & (curves["method"] == method)]
            if c.empty:
                continue
            ax.plot(c["level"], c["fraction"], marker="o", ms=3.5, lw=1.3, color=f"C{i % 10}", label=method)
        ax.set_title(f"{dataset} (up to {n} test targets per method)", fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_aspect("equal")
        ax.set_xlabel("nominal level of the central interval")
        ax.set_ylabel("fraction of test targets inside")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(datasets):]:
        ax.set_visible(False)
    legend: dict = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    handles, labels = list(legend.values()), list(legend)
    fig.legend(handles, labels, loc="lower center", ncol=min(2, len(labels)), fontsize=8, frameon=False)
    fig.suptitle("Calibration: test targets inside the central predictive interval (pooled over splits)\n"
                 "below the diagonal: intervals too narrow (overconfident); above: too wide", fontsize=10)
    fig.tight_layout(rect=(0, 0.04 + 0.03 * math.ceil(len(labels) / 2), 1, 1))
    return _save(fig, path)


# ---------------------------------------------------------------- heat maps
def heatmap_runs(df: pd.DataFrame) -> pd.DataFrame:
    """One fitted run per structure (the first stored, preferring methods that learn scales)."""
    runs = df[(df["status"] == "ok") & df["weights"].notna()] if "status" in df else df[df["weights"].notna()]
    if runs.empty:
        return runs
    order = {"svi-em": 0, "map-em": 1, "svi": 2, "nuts": 3, "vd": 4, "mc-dropout": 5}
    runs = runs.assign(_pref=runs["inference"].map(order).fillna(9))
    runs = runs.sort_values(["_pref", "id" if "id" in runs else "split"], kind="stable")
    return runs.groupby("structure", sort=False).head(1).drop(columns="_pref")


def plot_heatmaps(results: str | Path | pd.DataFrame, out: str | Path) -> Path:
    """Save heat maps of ``|posterior mean|`` of the stored weight matrix, one run per structure."""
    path = check_out(out)
    runs = heatmap_runs(load_runs(results, with_weights=True))
    if runs.empty:
        raise DataError("no successful run has a stored weight matrix to draw")
    runs = runs.assign(_o=runs["structure"].map({s: i for i, s in enumerate(STRUCTURES)}).fillna(9)).sort_values("_o")
    plt = _pyplot()
    n = len(runs)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 4.2), squeeze=False)
    for ax, row in zip(axes[0], runs.itertuples(index=False)):
        w = np.abs(npy_to_array(row.weights))
        image = ax.imshow(w, cmap="viridis", aspect="auto", interpolation="nearest")
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        ax.set_title(f"{row.structure}: {row.label}\n{row.dataset} split {row.split}, {row.weights_layer}", fontsize=8)
        ax.set_xlabel("output unit")
        ax.set_ylabel("input unit")
    fig.suptitle("|posterior mean| of the stored weights (first hidden-to-hidden matrix; first matrix of 1-layer nets)")
    fig.tight_layout()
    return _save(fig, path)
