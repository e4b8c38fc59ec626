"""Figures from a results file (matplotlib, Agg backend: no display needed).

* :func:`plot_metric`: one panel per data set, each method's mean test RMSE (or
  log-likelihood) over splits with standard-error bars (same numbers as the
  table: :func:`bnn_priors.suite.tables.summarize`).
* :func:`plot_heatmaps`: heat maps of the stored posterior mean of the first
  hidden-to-hidden weight matrix (the first weight matrix of a one-hidden-layer
  net), ``|W|``, for one fitted run per structure. Rows are input units, columns
  output units: ARD shrinks whole rows together, ADD the whole matrix.

Imports: :mod:`bnn_priors.errors`, :mod:`bnn_priors.structures` and, of the suite,
:mod:`~bnn_priors.suite.store` and :mod:`~bnn_priors.suite.tables`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from bnn_priors.errors import DataError, InvalidParameterError
from bnn_priors.structures import STRUCTURES
from bnn_priors.suite.store import load_runs, npy_to_array
from bnn_priors.suite.tables import dataset_order, metric_info, summarize


def _pyplot():
    """pyplot, on the file-only Agg backend unless a session (a notebook) already chose one."""
    import sys

    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _check_out(out: str | Path) -> Path:
    path = Path(out).expanduser()
    if not path.parent.exists():
        raise InvalidParameterError(f"cannot write {path}: folder {path.parent} does not exist")
    return path


def plot_metric(results: str | Path | pd.DataFrame, out: str | Path, metric: str = "rmse") -> Path:
    """Save a figure of the metric, one panel per data set, methods with standard-error bars."""
    _, name, higher = metric_info(metric)
    path = _check_out(out)
    summary = summarize(load_runs(results), metric)
    if summary.empty:
        raise DataError("there are no successful runs to plot")
    datasets = dataset_order(summary["dataset"])
    methods = list(dict.fromkeys(summary["method"]))
    colors = {m: f"C{i % 10}" for i, m in enumerate(methods)}
    plt = _pyplot()
    ncols = min(3, len(datasets))
    nrows = math.ceil(len(datasets) / ncols)
    height = 0.45 * len(methods) + 1.2
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.0 * ncols, height * nrows), squeeze=False)
    for ax, dataset in zip(axes.flat, datasets):
        rows = summary[summary["dataset"] == dataset].set_index("method").reindex(methods)
        y = np.arange(len(methods))
        present = rows["mean"].notna().to_numpy()
        ax.errorbar(
            rows["mean"].to_numpy()[present], y[present], xerr=rows["se"].fillna(0).to_numpy()[present],
            fmt="none", ecolor="black", capsize=3, lw=1,
        )
        ax.scatter(rows["mean"].to_numpy()[present], y[present], c=[colors[m] for m in np.array(methods)[present]], zorder=3)
        ax.set_yticks(y)
        ax.set_yticklabels(methods if ax in axes[:, 0] else [""] * len(methods), fontsize=8)
        ax.invert_yaxis()
        ax.set_title(dataset)
        ax.set_xlabel(f"{name} ({'higher' if higher else 'lower'} is better)")
        ax.grid(axis="x", alpha=0.3)
    for ax in list(axes.flat)[len(datasets):]:
        ax.set_visible(False)
    fig.suptitle(f"{name}: mean ± standard error over splits")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


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
    path = _check_out(out)
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
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
