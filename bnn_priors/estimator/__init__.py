"""A scikit-learn estimator over the whole stack: prior, network and inference backend.

``from bnn_priors.estimator import BNNRegressor``. It combines the three parts of the
project (``bnn_priors`` priors, ``models`` networks, ``inference`` backends), so it is a
subpackage of its own that ``bnn_priors`` does not import: the prior modules stay free
of models and inference.
"""

from bnn_priors.estimator.regressor import BNNRegressor

__all__ = ["BNNRegressor"]
