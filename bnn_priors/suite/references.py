"""Published UCI regression results, to print beside a suite's own numbers.

Every figure is ``(mean, standard error over the splits)`` in the target's
original units, copied as printed in the source (the sources round them; a
printed ``±.00`` is stored as 0.0). Only the data sets each source reports are
present.

``nalisnick2019``
    Nalisnick, Hernández-Lobato & Smyth (2019), "Dropout as a Structured Shrinkage
    Prior", ICML, Table 2 (UCI regression, test RMSE): MC dropout, their ARD, ADD
    and ARD-ADD residual networks, and the Probabilistic Backpropagation and Deep
    GP baselines their table reprints. No test log-likelihoods.
``gal2016``
    Gal & Ghahramani (2016), "Dropout as a Bayesian Approximation: Representing
    Model Uncertainty in Deep Learning", ICML, Table 1 (UCI regression): MC
    dropout test RMSE and test log-likelihood.

Imports: :mod:`bnn_priors.errors` only.
"""

from __future__ import annotations

from dataclasses import dataclass

from bnn_priors.errors import InvalidParameterError, lookup

Figures = dict[str, tuple[float, float]]  # dataset -> (mean, standard error)


@dataclass(frozen=True)
class Reference:
    """One paper's table: ``columns[metric][method] -> {dataset: (mean, se)}``."""

    key: str
    citation: str
    columns: dict[str, dict[str, Figures]]

    def metric_columns(self, metric: str) -> dict[str, Figures]:
        """The paper's columns for ``metric`` (``rmse`` or ``ll``), labelled ``method [citation] (published)``."""
        if metric not in self.columns:
            raise InvalidParameterError(
                f"{self.citation} reports no {'test log-likelihood' if metric == 'll' else metric} figures; "
                f"it has: {', '.join(self.columns)}"
            )
        return {f"{method} [{self.citation}] (published)": figs for method, figs in self.columns[metric].items()}


def _figures(table: dict[str, tuple]) -> list[Figures]:
    """Column-wise: ``{dataset: ((m1, s1), (m2, s2), ...)}`` -> one ``{dataset: (m, s)}`` per column."""
    width = len(next(iter(table.values())))
    return [{ds: row[i] for ds, row in table.items()} for i in range(width)]


_NALISNICK_RMSE = {
    #            MC dropout      ARD             ADD             ARD-ADD         Prob. Backprop  Deep GP
    "boston": ((2.80, 0.13), (2.158, 0.20), (2.343, 0.31), (2.367, 0.18), (2.795, 0.16), (2.38, 0.12)),
    "concrete": ((4.50, 0.18), (3.805, 0.28), (4.084, 0.34), (3.761, 0.23), (5.241, 0.12), (4.64, 0.11)),
    "energy": ((0.47, 0.01), (0.852, 0.01), (0.867, 0.11), (0.853, 0.08), (0.903, 0.05), (0.57, 0.02)),
    "kin8nm": ((0.08, 0.00), (0.066, 0.01), (0.064, 0.00), (0.064, 0.00), (0.071, 0.00), (0.05, 0.00)),
    "power": ((3.63, 0.04), (3.486, 0.10), (3.290, 0.06), (3.236, 0.07), (4.028, 0.03), (3.60, 0.03)),
    "wine": ((0.60, 0.01), (0.561, 0.03), (0.555, 0.01), (0.538, 0.03), (0.643, 0.01), (0.50, 0.01)),
    "yacht": ((0.66, 0.06), (0.691, 0.12), (0.657, 0.14), (0.604, 0.16), (0.848, 0.05), (0.98, 0.09)),
}
_NALISNICK_COLUMNS = ("Dropout", "ARD", "ADD", "ARD-ADD", "Prob. Backprop", "Deep GP")

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

REFERENCES: dict[str, Reference] = {
    "nalisnick2019": Reference(
        "nalisnick2019",
        "Nalisnick et al. 2019",
        {"rmse": dict(zip(_NALISNICK_COLUMNS, _figures(_NALISNICK_RMSE)))},
    ),
    "gal2016": Reference(
        "gal2016",
        "Gal & Ghahramani 2016",
        {"rmse": {"MC dropout": _figures(_GAL)[0]}, "ll": {"MC dropout": _figures(_GAL)[1]}},
    ),
}


def get_reference(key: str) -> Reference:
    return REFERENCES[lookup("reference", key, REFERENCES)]
