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
    (:func:`gal_backend_options`). :func:`gal_select` picks, per (data set, split),
    the (p, tau) with the highest validation log-likelihood (the first in grid
    order on a tie, as Gal's strict ``>``) and reports that run's test RMSE and
    log-likelihood, as Gal evaluates the selected network (trained on the 80%
    part) on the test split. :func:`gal_table` prints them beside the published
    figures (:mod:`bnn_priors.suite.references`) with how often each (p, tau) was
    chosen. The preset of the same name (:mod:`bnn_priors.suite.presets`) runs the
    grid.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bnn_priors.errors import InvalidParameterError, UnknownNameError
from bnn_priors.suite.references import get_reference

PROTOCOLS = ("gal2016",)
#: Gal's prior length-scale ``l``.
GAL_LENGTH_SCALE = 1e-2
#: The columns of :func:`gal_select`'s result.
SELECTED_COLUMNS = ("dataset", "split", "setting", "p", "tau", "val_log_likelihood", "val_rmse",
                    "rmse", "log_likelihood", "config_hash")


def check_protocol(name: str) -> str:
    key = str(name).strip().lower()
    if key not in PROTOCOLS:
        raise UnknownNameError("protocol", name, PROTOCOLS)
    return key


# ------------------------------------------------------------------- the formulas
def gal_weight_decay(p: float, tau: float, n_train: int, length_scale: float = GAL_LENGTH_SCALE) -> float:
    """Gal's ``reg = l^2 (1 - p) / (2 N tau)``, with ``tau`` as given (original units)."""
    for label, value in (("tau", tau), ("length_scale", length_scale)):
        if not (isinstance(value, (int, float, np.number)) and math.isfinite(value) and value > 0):
            raise InvalidParameterError(f"{label} must be a positive number, got {value!r}")
    if not 0 <= p < 1:
        raise InvalidParameterError(f"the dropout rate p must be in [0, 1), got {p!r}")
    if int(n_train) < 1:
        raise InvalidParameterError(f"the training size must be positive, got {n_train!r}")
    return float(length_scale) ** 2 * (1.0 - float(p)) / (2.0 * int(n_train) * float(tau))


def gal_precision(tau: float, y_std: float | Sequence[float]) -> float | list[float]:
    """The precision in standardized units whose log-likelihood is Gal's with ``tau`` in original units:
    ``tau * y_std^2`` (one value, or a list of one per replica)."""
    stds = np.atleast_1d(np.asarray(y_std, dtype=np.float64))
    values = [float(tau) * float(s) ** 2 for s in stds]
    return values[0] if np.ndim(y_std) == 0 else values


def gal_backend_options(
    p: float, tau: float, n_train: int, y_std: Sequence[float], length_scale: float = GAL_LENGTH_SCALE
) -> dict[str, Any]:
    """``MCDropout`` options of Gal's run for dropout rate ``p`` and grid precision ``tau``.

    ``weight_decay`` is :func:`gal_weight_decay`; ``precision`` is
    :func:`gal_precision`: a number when the replicas share it (one replica, or
    seeds of one split), else a list of one per replica.
    """
    precision = gal_precision(tau, list(np.atleast_1d(np.asarray(y_std, dtype=np.float64))))
    return {
        "weight_decay": gal_weight_decay(p, tau, n_train, length_scale),
        "precision": precision[0] if len(set(precision)) == 1 else precision,
    }


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
    from bnn_priors.suite.store import load_runs

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
    from bnn_priors.suite.tables import _dataset_order, mean_se

    ref = get_reference("gal2016")
    published = {m: next(iter(ref.metric_columns(m).values())) for m in ("rmse", "ll")}
    if datasets is not None:
        selected = selected[selected["dataset"].isin(list(datasets))]
    names = _setting_names(selected)
    rows = []
    order = {d: i for i, d in enumerate(_dataset_order(selected["dataset"]))}
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


def _caption() -> str:
    return (
        "Gal & Ghahramani (2016) protocol: per data set and split, the (dropout rate p, precision tau) of the "
        "data set's grid with the highest validation log-likelihood (last 20% of the training split in file "
        "order; trained on the first 80%); its test RMSE and test log-likelihood (original units), mean ± "
        "standard error over splits (SE = sample standard deviation with ddof=1 / sqrt(n)). Columns marked "
        "(published) are the paper's figures; the last column counts how often each (p, tau) was chosen."
    )


def _cell(mean: float, se: float, decimals: int, pm: str) -> str:
    from bnn_priors.suite.tables import _cell_text

    return "–" if not math.isfinite(mean) else _cell_text(mean, se, decimals, pm)


def format_gal_table(summary: pd.DataFrame, fmt: str = "markdown", decimals: int | None = None) -> str:
    """Render :func:`gal_summary` as ``markdown``, ``latex``, ``csv`` or ``html``."""
    from bnn_priors.suite.tables import _decimals, _latex_escape, check_format, html_table

    fmt = check_format(fmt)
    if summary.empty:
        raise InvalidParameterError(
            "there are no hold-out runs of the gal2016 grid to select from (run bnn-priors bench --preset gal2016)"
        )
    if fmt == "csv":
        buf = io.StringIO()
        summary.to_csv(buf, index=False, lineterminator="\n")
        return buf.getvalue()
    pm = " \\pm " if fmt == "latex" else " ± "
    body = []
    for row in summary.itertuples(index=False):
        dr = _decimals([row.rmse_mean, row.published_rmse_mean]) if decimals is None else decimals
        dl = _decimals([row.ll_mean, row.published_ll_mean]) if decimals is None else decimals
        body.append([
            row.dataset, str(row.n),
            _cell(row.rmse_mean, row.rmse_se, dr, pm), _cell(row.published_rmse_mean, row.published_rmse_se, dr, pm),
            _cell(row.ll_mean, row.ll_se, dl, pm), _cell(row.published_ll_mean, row.published_ll_se, dl, pm),
            row.choices,
        ])
    if fmt == "markdown":
        from tabulate import tabulate

        text = tabulate(body, headers=list(HEADER), tablefmt="github", disable_numparse=True,
                        colalign=("left",) + ("right",) * 5 + ("left",))
        return f"{text}\n\n{_caption()}\n"
    if fmt == "latex":
        lines = [f"% {_caption()}", "\\begin{tabular}{lrcccc" + "l}", "\\toprule",
                 " & ".join(["Data set", *(_latex_escape(h) for h in HEADER[1:])]) + " \\\\", "\\midrule"]
        for row in body:
            cells = [_latex_escape(row[0]), row[1]]
            cells += ["--" if c == "–" else f"${c}$" for c in row[2:6]]
            cells.append(_latex_escape(row[6]))
            lines.append(" & ".join(cells) + " \\\\")
        lines += ["\\bottomrule", "\\end{tabular}"]
        return "\n".join(lines) + "\n"
    return html_table(_caption(), HEADER, [[(c, False) for c in row] for row in body])


def protocol_table(
    results: str | Path | pd.DataFrame,
    protocol: str = "gal2016",
    fmt: str = "markdown",
    hashes: Iterable[str] | None = None,
    datasets: Sequence[str] | None = None,
    decimals: int | None = None,
) -> str:
    """The formatted table of a protocol (``gal2016``) from a results file or DataFrame of runs.

    ``hashes`` keeps only those runs (e.g. the grid a suite just ran).
    """
    from bnn_priors.suite.store import load_runs

    check_protocol(protocol)
    df = load_runs(results, hashes)
    return format_gal_table(gal_summary(gal_select(df), datasets), fmt, decimals)


def gal_table(results: str | Path | pd.DataFrame, fmt: str = "markdown", **kwargs) -> str:
    """:func:`protocol_table` of ``gal2016``."""
    return protocol_table(results, "gal2016", fmt, **kwargs)


__all__ = [
    "GAL_LENGTH_SCALE",
    "PROTOCOLS",
    "format_gal_table",
    "gal_backend_options",
    "gal_precision",
    "gal_select",
    "gal_summary",
    "gal_table",
    "gal_weight_decay",
    "protocol_table",
]
