"""Published UCI regression results, each figure with what it measured, to set beside a suite's own.

A published column (:class:`PublishedColumn`) carries, as data, what its figures are:

* ``metric``: a key of :data:`bnn_priors.suite.tables.METRICS` (``rmse``: RMSE of the
  predictive mean; ``sample-mae``: ``|y - f_s(x)|`` averaged over test points and posterior
  draws; ``ll``: test log-likelihood), whatever the source calls it (``printed_as``);
* ``splits``: ``standard`` (the 20 splits of Hernández-Lobato & Adams 2015, which this
  project uses) or ``own`` (the authors' own random splits: the same data sets, other test
  sets, so their figures are not paired with ours split by split);
* ``spread``: what the ``±`` is: ``se`` (standard error over splits) or ``sd`` (standard
  deviation over splits).

Tables and plots set a published column only beside our figures of the same metric, and
say in its header where its splits or spread differ (:meth:`PublishedColumn.header`).
Figures are ``(mean, spread)`` in the target's original units, copied as printed (the
sources round them; a printed ``±.00`` is stored as 0.0), with the decimal places they are
printed to (``places``), so that tables show them as printed and never with more places than the
source gave (``0.064 ± 0.00``, a spread under 0.005, not ``0.0640 ± 0.0000``); only the data sets
each source reports are present.

``nalisnick2019``
    Nalisnick, Hernández-Lobato & Smyth (2019), "Dropout as a Structured Shrinkage
    Prior", ICML, Table 2 (UCI regression, printed as test RMSE). Read against the
    authors' released code (github.com/enalisnick/dropout_icml2019, its one commit
    2ed38e1): the ARD, ADD and ARD-ADD columns are a **sample-MAE**, not an RMSE —
    ``get_test_metrics`` in ``models/bnn.py`` takes per posterior draw
    ``sqrt(reduce_mean(square(Y - y_hat), axis=1))`` over the output axis of an ``(N, 1)``
    target, i.e. ``|y - f_s(x)|`` per point, and averages it over draws and points; on
    their **own splits** (``yacht_data/make_splits_and_pkl.py``: 20 unseeded
    ``random.shuffle`` 90/10 splits; the shipped ``yacht_paper_splits.pkl`` holds none of
    the standard test sets); the ``±`` is ``np.std`` over the splits (ddof 0, ``train_bnn.py``),
    a **standard deviation**. The Dropout column equals the two-layer table of Gal's
    DropoutUncertaintyExps README as of its commit a6259f1 (RMSE ± SE on the standard
    splits; that commit changed the README from SD to SE "to conform with PBP paper").
    Probabilistic Backprop and Deep GP are reprinted from their papers, which report RMSE
    ± SE on the standard splits (taken as reprinted, not checked against those papers).
``gal2016``
    Gal & Ghahramani (2016), "Dropout as a Bayesian Approximation: Representing
    Model Uncertainty in Deep Learning", ICML, Table 1 (UCI regression): MC
    dropout test RMSE and test log-likelihood ± SE on the standard splits.
``gal2016-2layer``
    The "2 layers results" table of Gal's DropoutUncertaintyExps README at commit
    a6259f1 (the Dropout column of Nalisnick et al.'s Table 2), made by each set's
    ``net/experiment_2_layers.py`` (the ``gal2016-2layer`` preset): two ReLU layers, one
    dropout rate and precision per set, no grid search. Checked against the logs committed
    beside it (``<set>/net/results_2_layers/log.txt``): the RMSE is that of the MC
    predictive mean over ``T = 10000`` stochastic passes ("MC errors", not the
    weight-averaged "errors"), the test log-likelihood Gal's with tau in original units,
    and the ``±`` the log's ``np.std`` over the 20 standard splits divided by
    ``sqrt(20)``, a standard error (boston: 0.601 / sqrt(20) = 0.13).

Imports: :mod:`bnn_priors.errors` only.
"""

from __future__ import annotations

from dataclasses import dataclass

from bnn_priors.errors import InvalidParameterError, lookup

Figures = dict[str, tuple[float, float]]  # dataset -> (mean, spread)

#: What a published figure's split protocol may be.
SPLIT_PROTOCOLS = {
    "standard": "the standard 20 splits of Hernández-Lobato & Adams (2015)",
    "own": "the authors' own random splits",
}
#: What a published figure's ``±`` may be.
SPREADS = {"se": "standard error over splits", "sd": "standard deviation over splits"}
#: How a header names each metric (keys of :data:`bnn_priors.suite.tables.METRICS`).
METRIC_NAMES = {"rmse": "RMSE", "sample-mae": "sample-MAE", "ll": "test LL"}


@dataclass(frozen=True)
class PublishedColumn:
    """One published column: its figures and what they measured (see the module docstring)."""

    method: str
    metric: str
    splits: str
    spread: str
    figures: Figures
    printed_as: str | None = None  # the source's name for the metric, where it differs
    places: tuple[int, int] = (2, 2)  # decimal places of the mean and of the ``±`` as the source prints them

    def __post_init__(self):
        for value, allowed in ((self.metric, METRIC_NAMES), (self.splits, SPLIT_PROTOCOLS), (self.spread, SPREADS)):
            if value not in allowed:
                raise InvalidParameterError(f"a published column needs one of {', '.join(allowed)}, got {value!r}")

    @property
    def qualifiers(self) -> list[str]:
        """What sets these figures apart from ours beyond the metric: how the source names the metric,
        other splits, a standard deviation for a ``±``."""
        out = []
        if self.printed_as is not None:
            out.append(f'{METRIC_NAMES[self.metric]}, printed as "{self.printed_as}"')
        if self.splits != "standard":
            out.append(f"{self.splits} splits")
        if self.spread != "se":
            out.append(f"±{self.spread.upper()}")
        return out

    def printed(self, dataset: str) -> str:
        """``dataset``'s figure as the source prints it (a printed ``±0.00`` is a spread under 0.005,
        not zero)."""
        mean, spread = self.figures[dataset]
        return f"{mean:.{self.places[0]}f} ± {spread:.{self.places[1]}f}"

    def header(self, citation: str) -> str:
        """``method [citation] (published)``, with the qualifiers where there are any."""
        q = self.qualifiers
        return f"{self.method} [{citation}] (published{'; ' + ', '.join(q) if q else ''})"


@dataclass(frozen=True)
class Reference:
    """One paper's table: its published columns, each with its metric, splits and spread."""

    key: str
    citation: str
    columns: tuple[PublishedColumn, ...]

    @property
    def metrics(self) -> list[str]:
        return list(dict.fromkeys(c.metric for c in self.columns))

    def column(self, method: str, metric: str) -> PublishedColumn:
        """The column of ``method`` in ``metric``."""
        for c in self.columns:
            if c.method == method and c.metric == metric:
                return c
        raise InvalidParameterError(f"{self.citation} has no {METRIC_NAMES.get(metric, metric)} column {method!r}")

    def metric_columns(self, metric: str) -> dict[str, PublishedColumn]:
        """The paper's columns measured in ``metric``, by header (:meth:`PublishedColumn.header`)."""
        if metric not in self.metrics:
            raise InvalidParameterError(
                f"{self.citation} reports no {'test log-likelihood' if metric == 'll' else METRIC_NAMES.get(metric, metric)} "
                f"figures; it has: {', '.join(self.metrics)}"
            )
        return {c.header(self.citation): c for c in self.columns if c.metric == metric}


def _figures(table: dict[str, tuple]) -> list[Figures]:
    """Column-wise: ``{dataset: ((m1, s1), (m2, s2), ...)}`` -> one ``{dataset: (m, s)}`` per column."""
    width = len(next(iter(table.values())))
    return [{ds: row[i] for ds, row in table.items()} for i in range(width)]


_NALISNICK = {
    #            Dropout         ARD             ADD             ARD-ADD         Prob. Backprop  Deep GP
    "boston": ((2.80, 0.13), (2.158, 0.20), (2.343, 0.31), (2.367, 0.18), (2.795, 0.16), (2.38, 0.12)),
    "concrete": ((4.50, 0.18), (3.805, 0.28), (4.084, 0.34), (3.761, 0.23), (5.241, 0.12), (4.64, 0.11)),
    "energy": ((0.47, 0.01), (0.852, 0.01), (0.867, 0.11), (0.853, 0.08), (0.903, 0.05), (0.57, 0.02)),
    "kin8nm": ((0.08, 0.00), (0.066, 0.01), (0.064, 0.00), (0.064, 0.00), (0.071, 0.00), (0.05, 0.00)),
    "power": ((3.63, 0.04), (3.486, 0.10), (3.290, 0.06), (3.236, 0.07), (4.028, 0.03), (3.60, 0.03)),
    "wine": ((0.60, 0.01), (0.561, 0.03), (0.555, 0.01), (0.538, 0.03), (0.643, 0.01), (0.50, 0.01)),
    "yacht": ((0.66, 0.06), (0.691, 0.12), (0.657, 0.14), (0.604, 0.16), (0.848, 0.05), (0.98, 0.09)),
}
_NALISNICK_COLUMNS = (
    # method, metric, splits, spread, printed as, places of the mean and the ± as printed
    ("Dropout", "rmse", "standard", "se", None, (2, 2)),
    ("ARD", "sample-mae", "own", "sd", "RMSE", (3, 2)),
    ("ADD", "sample-mae", "own", "sd", "RMSE", (3, 2)),
    ("ARD-ADD", "sample-mae", "own", "sd", "RMSE", (3, 2)),
    ("Prob. Backprop", "rmse", "standard", "se", None, (3, 2)),
    ("Deep GP", "rmse", "standard", "se", None, (2, 2)),
)

_GAL = {
    #            RMSE            test LL
    "boston": ((2.90, 0.18), (-2.40, 0.04)),
    "concrete": ((4.82, 0.16), (-2.93, 0.02)),
    "energy": ((0.54, 0.06), (-1.21, 0.01)),
    "kin8nm": ((0.08, 0.00), (1.14, 0.01)),
    "naval": ((0.00, 0.00), (4.45, 0.00)),
    "power": ((4.01, 0.04), (-2.80, 0.01)),
    "protein": ((4.27, 0.02), (-2.87, 0.00)),
    "wine": ((0.62, 0.01), (-0.93, 0.01)),
    "yacht": ((0.67, 0.05), (-1.25, 0.01)),
}

_GAL_2LAYER = {
    #            RMSE            test LL
    "boston": ((2.80, 0.13), (-2.34, 0.02)),
    "concrete": ((4.50, 0.18), (-2.82, 0.02)),
    "energy": ((0.47, 0.01), (-1.48, 0.00)),
    "kin8nm": ((0.08, 0.00), (1.10, 0.00)),
    "naval": ((0.00, 0.00), (4.32, 0.00)),
    "power": ((3.63, 0.04), (-2.67, 0.01)),
    "protein": ((3.62, 0.01), (-2.70, 0.00)),
    "wine": ((0.60, 0.01), (-0.9, 0.01)),
    "yacht": ((0.66, 0.06), (-1.37, 0.02)),
}

REFERENCES: dict[str, Reference] = {
    "nalisnick2019": Reference(
        "nalisnick2019",
        "Nalisnick et al. 2019",
        tuple(PublishedColumn(method, metric, splits, spread, figures, printed, places)
              for (method, metric, splits, spread, printed, places), figures
              in zip(_NALISNICK_COLUMNS, _figures(_NALISNICK))),
    ),
    "gal2016": Reference(
        "gal2016",
        "Gal & Ghahramani 2016",
        (PublishedColumn("MC dropout", "rmse", "standard", "se", _figures(_GAL)[0]),
         PublishedColumn("MC dropout", "ll", "standard", "se", _figures(_GAL)[1])),
    ),
    "gal2016-2layer": Reference(
        "gal2016-2layer",
        "Gal, DropoutUncertaintyExps a6259f1",
        (PublishedColumn("MC dropout, 2 layers", "rmse", "standard", "se", _figures(_GAL_2LAYER)[0]),
         PublishedColumn("MC dropout, 2 layers", "ll", "standard", "se", _figures(_GAL_2LAYER)[1])),
    ),
}


def get_reference(key: str) -> Reference:
    return REFERENCES[lookup("reference", key, REFERENCES)]


def published_columns(references, metric: str) -> dict[str, PublishedColumn]:
    """The columns of the named references measured in ``metric``, by header; a reference with none
    in it is passed over, unless none of them has any (:class:`~bnn_priors.InvalidParameterError`)."""
    refs = [get_reference(r) for r in references]
    usable = [r for r in refs if metric in r.metrics]
    if refs and not usable:
        refs[0].metric_columns(metric)  # raises, naming what the first has
    return {header: c for r in usable for header, c in r.metric_columns(metric).items()}
