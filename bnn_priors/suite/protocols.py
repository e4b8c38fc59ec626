"""Model-selection protocols: tune on a validation part of each training split, report on the test split.

No choice is ever made on the test splits. A protocol's runs are hold-out runs
(:attr:`~bnn_priors.suite.config.RunConfig.holdout`): each trains on the first
part of a training split and records the metrics of the rest of it (validation)
beside the test metrics; the protocol picks, per data set and split, the run with
the best validation score and reports that run's test metrics.

``gal2016``
    Gal & Ghahramani (2016), "Dropout as a Bayesian Approximation", UCI
    regression, as in the reference code (``github.com/yaringal/DropoutUncertaintyExps``,
    ``experiment.py`` and ``net.py``): MC dropout on one hidden layer, one run per
    (dropout rate ``p``, precision ``tau``) of the data set's grid
    (``dropout_rates.txt`` x ``tau_values.txt``), trained on the first 80% of the
    training indices (in file order) and validated on the last 20%, standardized
    with the 80% part. The weight decay is Gal's ``reg = l^2 (1 - p) / (2 N tau)``
    (``l = 1e-2``, ``N`` the 80% part's size) with ``tau`` in the target's
    ORIGINAL units although the targets are standardized (his code does this), and
    the log-likelihood uses ``tau`` in original units on predictions in original
    units, i.e. the precision ``tau * y_std^2`` in standardized units
    (:func:`bnn_priors.suite.data_options.gal_backend_options`). :func:`gal_select` picks, per (data set, split),
    the (p, tau) with the highest validation log-likelihood (the first in grid
    order on a tie, as Gal's strict ``>``) and reports that run's test RMSE and
    log-likelihood, as Gal evaluates the selected network (trained on the 80%
    part) on the test split. :func:`gal_table` prints them beside the published
    figures (:mod:`bnn_priors.suite.references`) with how often each (p, tau) was
    chosen. The preset of the same name (:mod:`bnn_priors.suite.presets`) runs the
    grid.

:data:`PROTOCOLS` is the registry (the command line's ``--protocol``): a protocol
is its description and the function that makes its table from runs.

Imports: :mod:`bnn_priors.errors` and, of the suite, :mod:`~bnn_priors.suite.references`,
:mod:`~bnn_priors.suite.render`, :mod:`~bnn_priors.suite.store` and
:mod:`~bnn_priors.suite.tables`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bnn_priors.errors import InvalidParameterError, lookup
from bnn_priors.suite.references import get_reference
from bnn_priors.suite.render import Column, Estimate, Row, Table, check_format, decimals_for, render
from bnn_priors.suite.store import load_runs
from bnn_priors.suite.tables import dataset_order, mean_se

#: The columns of :func:`gal_select`'s result.
SELECTED_COLUMNS = ("dataset", "split", "setting", "p", "tau", "val_log_likelihood", "val_rmse",
                    "rmse", "log_likelihood", "config_hash")


# -------------------------------------------------------------------- selection
def _settings(df: pd.DataFrame) -> tuple[pd.Series, pd.Series, pd.Series]:
    """``(p, tau, setting)`` of each run: from the ``p``/``tau`` columns where present, else the config."""
    if "config" in df:
        configs = [json.loads(c) if isinstance(c, str) else {} for c in df["config"]]
    else:
        configs = [{} for _ in range(len(df))]
    if "p" in df:
        p = pd.to_numeric(df["p"], errors="coerce")
    else:
        p = pd.Series([c.get("prior", {}).get("p") for c in configs], index=df.index, dtype=float)
    if "tau" in df:
        tau = pd.to_numeric(df["tau"], errors="coerce")
    else:
        tau = pd.Series([c.get("options", {}).get("gal_tau") for c in configs], index=df.index, dtype=float)
    if "setting" in df:
        setting = df["setting"].astype(str)
    else:
        keys = []
        for c in configs:  # everything but the split, seed and the grid's (p, tau)
            rest = {k: v for k, v in c.items() if k not in ("split", "seed", "label")}
            rest["prior"] = {k: v for k, v in rest.get("prior", {}).items() if k != "p"}
            rest["options"] = {k: v for k, v in rest.get("options", {}).items() if k != "gal_tau"}
            keys.append(json.dumps(rest, sort_keys=True))
        setting = pd.Series(keys, index=df.index, dtype=str)
    return p, tau, setting


def gal_select(results: str | Path | pd.DataFrame) -> pd.DataFrame:
    """Gal's choice per (data set, split): the (p, tau) run with the highest validation log-likelihood.

    ``results`` is a results file or a DataFrame of runs with ``dataset``,
    ``split``, ``val_log_likelihood``, ``rmse`` and ``log_likelihood``, and either
    ``p`` and ``tau`` columns or the stored ``config`` JSON (dropout rate
    ``prior.p``, grid precision ``options.gal_tau``). Only ``ok`` runs with a
    finite validation log-likelihood and a (p, tau) take part. Several seeds of a
    (split, p, tau) are averaged first. Runs that differ in anything but split,
    seed, p and tau (e.g. the epochs) are different settings: each is selected on
    its own (column ``setting``). A tie goes to the first (p, tau) in grid order
    (p, then tau, ascending), like the strict ``>`` of Gal's loop.

    Returns one row per (data set, setting, split) with the chosen ``p``, ``tau``,
    its validation metrics and its TEST ``rmse`` and ``log_likelihood``.
    """
    df = load_runs(results)
    missing = {"dataset", "split", "val_log_likelihood", "rmse", "log_likelihood"} - set(df.columns)
    if missing:
        raise InvalidParameterError(f"results need the columns {sorted(missing)}")
    runs = df if "status" not in df else df[df["status"] == "ok"]
    runs = runs.copy()
    runs["p"], runs["tau"], runs["setting"] = _settings(runs)
    runs["val_log_likelihood"] = pd.to_numeric(runs["val_log_likelihood"], errors="coerce")
    runs = runs[np.isfinite(runs["val_log_likelihood"]) & runs["p"].notna() & runs["tau"].notna()]
    if runs.empty:
        return pd.DataFrame(columns=list(SELECTED_COLUMNS))
    if "val_rmse" not in runs:
        runs["val_rmse"] = np.nan
    if "config_hash" not in runs:
        runs["config_hash"] = None
    keys = ["dataset", "setting", "split", "p", "tau"]
    metrics = ["val_log_likelihood", "val_rmse", "rmse", "log_likelihood"]
    per_point = runs.groupby(keys, sort=False).agg(
        **{m: (m, "mean") for m in metrics}, config_hash=("config_hash", "first")
    ).reset_index()
    per_point = per_point.sort_values(["p", "tau"], kind="stable")
    best = per_point.loc[per_point.groupby(["dataset", "setting", "split"], sort=False)["val_log_likelihood"].idxmax()]
    best = best.sort_values(["dataset", "setting", "split"], kind="stable").reset_index(drop=True)
    return best[list(SELECTED_COLUMNS)]


# ------------------------------------------------------------------------ table
def _setting_names(selected: pd.DataFrame) -> dict[tuple[str, str], str]:
    """The row name of each (data set, setting): the data set, with what differs when it has several."""
    names = {}
    for dataset, rows in selected.groupby("dataset", sort=False):
        settings = list(dict.fromkeys(rows["setting"]))
        if len(settings) == 1:
            names[(dataset, settings[0])] = dataset
            continue
        parsed = [json.loads(s) if s.startswith("{") else {"setting": s} for s in settings]
        differing = sorted(k for k in set().union(*parsed) if len({json.dumps(c.get(k), sort_keys=True) for c in parsed}) > 1)
        for s, c in zip(settings, parsed):
            parts = [f"{k}={json.dumps(c.get(k), sort_keys=True)}" for k in differing] or [s[:8]]
            names[(dataset, s)] = f"{dataset} [{', '.join(parts)}]"
    return names


def _fmt(value: float) -> str:
    return f"{value:g}"


def gal_summary(selected: pd.DataFrame, datasets: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per (data set, setting) of :func:`gal_select`'s result: mean, SE over splits of the test
    RMSE and log-likelihood, the published figures, and the choices with their counts."""
    ref = get_reference("gal2016")
    published = {m: ref.column("MC dropout", m).figures for m in ("rmse", "ll")}
    if datasets is not None:
        selected = selected[selected["dataset"].isin(list(datasets))]
    names = _setting_names(selected)
    rows = []
    order = {d: i for i, d in enumerate(dataset_order(selected["dataset"]))}
    for (dataset, setting), part in sorted(selected.groupby(["dataset", "setting"], sort=False),
                                           key=lambda item: order[item[0][0]]):
        rmse, rmse_se, n = mean_se(part["rmse"])
        ll, ll_se, _ = mean_se(part["log_likelihood"])
        counts = part.groupby(["p", "tau"]).size().reset_index(name="count")
        counts = counts.sort_values(["count", "p", "tau"], ascending=[False, True, True], kind="stable")
        choices = "; ".join(f"p={_fmt(r.p)} tau={_fmt(r.tau)}: {r.count}" for r in counts.itertuples())
        pub_rmse = published["rmse"].get(dataset, (math.nan, math.nan))
        pub_ll = published["ll"].get(dataset, (math.nan, math.nan))
        rows.append({
            "dataset": names[(dataset, setting)], "n": n,
            "rmse_mean": rmse, "rmse_se": rmse_se, "ll_mean": ll, "ll_se": ll_se,
            "published_rmse_mean": pub_rmse[0], "published_rmse_se": pub_rmse[1],
            "published_ll_mean": pub_ll[0], "published_ll_se": pub_ll[1],
            "choices": choices,
        })
    columns = ["dataset", "n", "rmse_mean", "rmse_se", "ll_mean", "ll_se", "published_rmse_mean",
               "published_rmse_se", "published_ll_mean", "published_ll_se", "choices"]
    return pd.DataFrame(rows, columns=columns)


_CITATION = "Gal & Ghahramani 2016"
HEADER = ("dataset", "splits", "test RMSE", f"RMSE [{_CITATION}] (published)", "test LL",
          f"LL [{_CITATION}] (published)", "chosen (p, tau): splits")
_KINDS = ("label", "count", "estimate", "estimate", "estimate", "estimate", "text")


def _caption() -> str:
    return (
        "Gal & Ghahramani (2016) protocol: per data set and split, the (dropout rate p, precision tau) of the "
        "data set's grid with the highest validation log-likelihood (last 20% of the training split in file "
        "order; trained on the first 80%); its test RMSE and test log-likelihood (original units), mean ± "
        "standard error over splits (SE = sample standard deviation with ddof=1 / sqrt(n)). Columns marked "
        "(published) are the paper's figures; the last column counts how often each (p, tau) was chosen."
    )


def format_gal_table(summary: pd.DataFrame, fmt: str = "markdown", decimals: int | None = None) -> str:
    """Render :func:`gal_summary` in a format of :data:`bnn_priors.suite.render.FORMATS`."""
    fmt = check_format(fmt)
    if summary.empty:
        raise InvalidParameterError(
            "there are no hold-out runs of the gal2016 grid to select from (run bnn-priors bench --preset gal2016)"
        )
    ref = get_reference("gal2016")
    rmse_places, ll_places = (ref.column("MC dropout", m).places for m in ("rmse", "ll"))
    rows = []
    for row in summary.itertuples(index=False):
        dr = decimals_for([row.rmse_mean, row.published_rmse_mean]) if decimals is None else decimals
        dl = decimals_for([row.ll_mean, row.published_ll_mean]) if decimals is None else decimals
        rows.append(Row([  # the published figures as printed, never with more places than the paper
            row.dataset, str(row.n),
            Estimate(row.rmse_mean, row.rmse_se, dr),
            Estimate(row.published_rmse_mean, row.published_rmse_se, rmse_places[0], se_decimals=rmse_places[1]),
            Estimate(row.ll_mean, row.ll_se, dl),
            Estimate(row.published_ll_mean, row.published_ll_se, ll_places[0], se_decimals=ll_places[1]),
            row.choices,
        ]))
    columns = [Column(title, kind) for title, kind in zip(HEADER, _KINDS)]
    columns[0] = Column(HEADER[0], "label", latex_title="Data set")
    return render(Table(columns, rows, _caption(), summary), fmt)


def gal_protocol_table(runs: pd.DataFrame, fmt: str = "markdown", datasets: Sequence[str] | None = None,
                       decimals: int | None = None) -> str:
    """The gal2016 table of a DataFrame of runs: :func:`gal_select`, :func:`gal_summary`, :func:`format_gal_table`."""
    return format_gal_table(gal_summary(gal_select(runs), datasets), fmt, decimals)


@dataclass(frozen=True)
class Protocol:
    """A selection protocol: what it chooses, and its table from a DataFrame of runs."""

    name: str
    description: str
    table: Callable[..., str]


#: Every selection protocol by name.
PROTOCOLS: dict[str, Protocol] = {
    "gal2016": Protocol(
        "gal2016",
        "per split, the (p, tau) run with the best validation log-likelihood; its test RMSE and log-likelihood "
        "beside the published figures",
        gal_protocol_table,
    ),
}


def check_protocol(name: str) -> str:
    return lookup("protocol", name, PROTOCOLS)


def protocol_table(
    results: str | Path | pd.DataFrame,
    protocol: str = "gal2016",
    fmt: str = "markdown",
    hashes: Iterable[str] | None = None,
    datasets: Sequence[str] | None = None,
    decimals: int | None = None,
) -> str:
    """The formatted table of a protocol (a key of :data:`PROTOCOLS`) from a results file or DataFrame of runs.

    ``hashes`` keeps only those runs (e.g. the grid a suite just ran).
    """
    chosen = PROTOCOLS[check_protocol(protocol)]
    return chosen.table(load_runs(results, hashes), fmt, datasets, decimals)


def gal_table(results: str | Path | pd.DataFrame, fmt: str = "markdown", **kwargs) -> str:
    """:func:`protocol_table` of ``gal2016``."""
    return protocol_table(results, "gal2016", fmt, **kwargs)


__all__ = [
    "PROTOCOLS",
    "Protocol",
    "format_gal_table",
    "gal_select",
    "gal_summary",
    "gal_table",
    "protocol_table",
]
