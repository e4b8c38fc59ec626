"""``BNNRegressor``: a Bayesian neural network as a scikit-learn regressor.

It follows scikit-learn's conventions so that it works in a ``Pipeline``,
``cross_val_score`` and ``GridSearchCV``: ``__init__`` stores its parameters and
nothing else, ``fit`` checks them and the data (scikit-learn's own validation, so bad
data raises the errors scikit-learn's tools expect; bad parameters raise this
project's one-line errors), and what ``fit`` learns ends in ``_``.

The pieces are the project's public ones: the prior from :func:`bnn_priors.prior`, the
network from :func:`bnn_priors.suite.config.parse_arch` and ``models``, the backend from
the inference methods of the benchmark runner (:mod:`bnn_priors.suite.methods`), so a
name means here what it means to ``bnn-priors bench``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

import bnn_priors
from bnn_priors.errors import InvalidParameterError
from bnn_priors.suite.config import parse_arch
from bnn_priors.suite.methods import RESERVED_OPTIONS, get_method
from models import ARCHITECTURES

#: The largest seed drawn for ``random_state=None`` or a ``RandomState`` (any int32 is valid for every backend).
_SEED_BOUND = 2**31 - 1


def resolve_seed(random_state) -> int:
    """The backend's seed for a scikit-learn ``random_state``.

    A non-negative int is the seed itself (``random_state=3`` fits as ``seed=3`` does);
    ``None`` draws the seed from NumPy's global ``RandomState`` (so ``np.random.seed``
    makes it reproducible), a ``numpy.random.RandomState`` draws it from that
    generator; either draw is uniform on ``[0, 2**31 - 1)``.
    """
    if isinstance(random_state, (int, np.integer)) and not isinstance(random_state, bool):
        if random_state < 0:
            raise InvalidParameterError(f"random_state must be None, a non-negative integer or a RandomState, got {random_state!r}")
        return int(random_state)
    if random_state is None or isinstance(random_state, np.random.RandomState):
        return int(check_random_state(random_state).randint(_SEED_BOUND))
    raise InvalidParameterError(f"random_state must be None, a non-negative integer or a RandomState, got {random_state!r}")


def _options(label: str, value) -> dict:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidParameterError(f"{label} must be a dict of keyword arguments or None, got {value!r}")
    return dict(value)


class BNNRegressor(RegressorMixin, BaseEstimator):
    """A Bayesian neural network regressor: prior, architecture and inference by name.

    ``BNNRegressor(prior="half-cauchy", structure="ard", arch="resnet-2x50",
    inference="svi", inference_options={"steps": 2000}, random_state=0).fit(X, y)``

    Parameters
    ----------
    prior : str, default="half-cauchy"
        A prior of :func:`bnn_priors.prior`: a noise model (``bernoulli``, ``gaussian``,
        ``rayleigh``, ``inverse-nakagami``, ``half-cauchy``), ``normal`` or
        ``log-uniform``; every weight matrix gets it.
    structure : str or None, default=None
        How the scales are shared (``none``, ``ard``, ``add``, ``ard-add``); ``None`` is
        the prior's default (``ard`` for the noise models, ``none`` for ``normal`` and
        ``log-uniform``, which take no other), so a grid over ``prior`` needs no
        structure.
    prior_options : dict or None, default=None
        More arguments of :func:`bnn_priors.prior`: ``sigma0`` and the noise model's
        parameters, e.g. ``{"scale": 0.5}``.
    arch : str, default="mlp-1x50"
        ``{mlp|resnet}-{depth}x{width}``, as for ``bnn-priors bench --arch``.
    inference : str, default="svi"
        An inference method of ``bnn-priors bench``: ``svi``, ``svi-em``, ``map-em``,
        ``vd``, ``mc-dropout`` or ``nuts`` (:mod:`bnn_priors.suite.methods`).
    inference_options : dict or None, default=None
        Keyword arguments of the method's backend, the budget included (``steps`` for
        the SVI methods, ``epochs`` for ``mc-dropout``, ``num_samples`` for ``nuts``);
        what is not given is the method's default. ``seed``, ``device`` and ``progress``
        are set by the estimator.
    num_samples : int, default=100
        Posterior samples (function draws) behind :meth:`predict` and :meth:`score`.
    device : str, default="cpu"
        Where the network trains and predicts (``cpu``, ``cuda``, ``cuda:N``).
    random_state : int, RandomState or None, default=None
        The seed of the fit: see :func:`resolve_seed`. The seed used is ``seed_``;
        ``random_state=est.seed_`` repeats a fit exactly (on the same device).

    Attributes
    ----------
    posterior_ : inference.Posterior
        The fitted posterior, on standardized inputs and targets (its ``to_arviz``,
        ``weight_means`` and ``info`` are the backend's).
    prior_ : bnn_priors.WeightPrior
        The prior every weight matrix has.
    seed_ : int
        The backend's seed.
    n_features_in_ : int
        Number of input features.
    feature_names_in_ : ndarray of str
        The input's column names, when it had string column names.
    X_mean_, X_scale_ : ndarray of shape (n_features_in_,)
        The standardization of the inputs (training mean and standard deviation;
        a constant feature gets scale 1).
    y_mean_, y_scale_ : float
        The standardization of the target, the same way.

    Notes
    -----
    The network computes in float64, so that predictions do not depend on how the
    data are split into batches beyond rounding (scikit-learn checks this). One
    target only; a 2-D ``y`` of one column is flattened with a warning.
    """

    def __init__(
        self,
        prior="half-cauchy",
        structure=None,
        prior_options=None,
        arch="mlp-1x50",
        inference="svi",
        inference_options=None,
        num_samples=100,
        device="cpu",
        random_state=None,
    ):
        self.prior = prior
        self.structure = structure
        self.prior_options = prior_options
        self.arch = arch
        self.inference = inference
        self.inference_options = inference_options
        self.num_samples = num_samples
        self.device = device
        self.random_state = random_state

    # ----------------------------------------------------------------------- fit
    def _backend(self, seed: int):
        method = get_method(self.inference)
        options = _options("inference_options", self.inference_options)
        reserved = sorted(set(options) & set(RESERVED_OPTIONS))
        if reserved:
            raise InvalidParameterError(
                f"inference_options may not set {', '.join(reserved)}: the estimator sets them "
                "(use random_state and device)"
            )
        budget = options.pop(method.budget_arg, method.default_budget)
        return method.make_backend(budget, options, seed=seed, device=self.device, progress=False)

    def _network(self, in_features: int):
        prior = bnn_priors.prior(self.prior, structure=self.structure, **_options("prior_options", self.prior_options))
        arch = parse_arch(self.arch)
        net = ARCHITECTURES[arch.kind](in_features, 1, hidden=arch.hidden, prior=prior)
        return net.to(torch.float64), prior

    def fit(self, X, y):
        """Standardize ``X`` and ``y`` (training mean and standard deviation), then fit the network.

        Returns the fitted estimator.
        """
        X, y = validate_data(self, X, y, y_numeric=True, dtype=np.float64)
        if isinstance(self.num_samples, bool) or not isinstance(self.num_samples, (int, np.integer)) or self.num_samples < 1:
            raise InvalidParameterError(f"num_samples must be a positive integer, got {self.num_samples!r}")
        seed = resolve_seed(self.random_state)
        backend = self._backend(seed)
        model, prior = self._network(X.shape[1])
        X_mean, X_scale = X.mean(0), _scale(X.std(0))
        y_mean, y_scale = float(y.mean()), float(_scale(y.std()))
        Xs, ys = (X - X_mean) / X_scale, (y - y_mean) / y_scale
        self.posterior_ = backend.fit(model, torch.as_tensor(Xs), torch.as_tensor(ys))
        self.prior_ = prior
        self.seed_ = seed
        self.X_mean_, self.X_scale_ = X_mean, X_scale
        self.y_mean_, self.y_scale_ = y_mean, y_scale
        return self

    # ------------------------------------------------------------------- predict
    def _standardized(self, X) -> torch.Tensor:
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        return torch.as_tensor((X - self.X_mean_) / self.X_scale_)

    def predict(self, X, return_std=False):
        """The predictive mean of ``y`` at ``X`` (``num_samples`` posterior samples), in the target's units.

        With ``return_std=True`` also the predictive standard deviation of ``y``: the
        spread of the function samples AND the observation noise (the fitted noise
        precision), so it describes where a new observation falls, not only the
        uncertainty about the function. Shapes ``(n_samples,)``.
        """
        Xs = self._standardized(X)
        pred = self.posterior_.predict(Xs, num_samples=self.num_samples)
        mean = pred.mean * self.y_scale_ + self.y_mean_
        if return_std:
            return mean, pred.std * self.y_scale_
        return mean

    def sample_y(self, X, n_samples=1, random_state=0):
        """Draws of ``y`` at ``X`` from the posterior predictive, shape ``(n_samples_X, n_samples)``.

        Each column is one posterior function plus Gaussian observation noise of that
        draw's precision, in the target's units. ``random_state`` as for the fit
        (:func:`resolve_seed`); the same value gives the same draws.
        """
        Xs = self._standardized(X)
        seed = resolve_seed(random_state)
        f, precision = self.posterior_.sample_functions(Xs, num_samples=n_samples, seed=seed)
        f = f[:, 0, :, 0].cpu().numpy()  # (S, N)
        sd = precision[:, 0].rsqrt().cpu().numpy()[:, None]
        noise = np.random.default_rng(seed).standard_normal(f.shape)
        return ((f + sd * noise) * self.y_scale_ + self.y_mean_).T


def _scale(std):
    """A standard deviation as a divisor: 1 where it is zero (a constant feature or target)."""
    return np.where(std > 0, std, 1.0)
