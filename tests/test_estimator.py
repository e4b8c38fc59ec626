"""``BNNRegressor``: scikit-learn's own estimator checks, its tools, standardization, seeds, errors.

The checks run at a small budget (a 10-unit network, tens of steps) for SVI and MC
dropout. No check is skipped or expected to fail (``EXPECTED_FAILED`` is empty and
strict); scikit-learn itself skips ``check_array_api_input`` unless ``SCIPY_ARRAY_API=1``
is set (with it set, that check passes too). NUTS is not among them: the checks fit about a hundred times, minutes of
sampling for nothing the other backends do not cover (the estimator treats every
backend alike); a NUTS fit is tested once below.
"""

from __future__ import annotations

import copy
import pickle
import subprocess
import sys

import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from bnn_priors.errors import (
    BNNPriorsError,
    InvalidParameterError,
    UnknownNameError,
    UnsupportedCombinationError,
)
from bnn_priors.estimator import BNNRegressor
from bnn_priors.scale_mixture import NormalPrior, ScaleMixturePrior

SVI_SMALL = dict(inference="svi", inference_options={"steps": 60, "lr": 0.05})
MCD_SMALL = dict(prior="bernoulli", inference="mc-dropout", inference_options={"epochs": 30, "batch_size": 20, "lr": 0.01})
#: A budget that fits ``_data`` well (held-out R² about 0.97 for seeds 0-2).
FIT = dict(arch="mlp-1x20", inference="svi-em", inference_options={"steps": 600, "lr": 0.02})
#: Checks expected to fail, with the reason: none.
EXPECTED_FAILED: dict[str, str] = {}


def _small(**kw) -> BNNRegressor:
    return BNNRegressor(**{"arch": "mlp-1x10", "num_samples": 20, "random_state": 0, **SVI_SMALL, **kw})


@parametrize_with_checks(
    [_small(), _small(**MCD_SMALL)],
    expected_failed_checks=lambda est: EXPECTED_FAILED,
    xfail_strict=True,
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def _data(n=120, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.uniform(-2, 2, size=(n, 3))
    y = np.sin(2 * X[:, 0]) + 0.5 * X[:, 1] + 0.1 * rng.standard_normal(n)
    return X, y


@pytest.fixture(scope="module")
def fitted():
    X, y = _data()
    return _small(**FIT).fit(X, y), X, y


# ------------------------------------------------------------------ predictions
def test_fit_learns_and_stores_the_standardization(fitted):
    est, X, y = fitted
    np.testing.assert_allclose(est.X_mean_, X.mean(0))
    np.testing.assert_allclose(est.X_scale_, X.std(0))
    assert est.y_mean_ == pytest.approx(y.mean()) and est.y_scale_ == pytest.approx(y.std())
    assert est.n_features_in_ == 3 and est.seed_ == 0
    assert isinstance(est.prior_, ScaleMixturePrior) and est.prior_.structure == "ard"
    Xt, yt = _data(60, seed=1)
    assert est.score(Xt, yt) > 0.9


def test_predictions_are_equivariant_under_affine_changes_of_units(fitted):
    """Standardizing inside ``fit`` makes the fit the same in any units of X and y."""
    est, X, y = fitted
    Xt = _data(30, seed=2)[0]
    shift, scale = np.array([10.0, -3.0, 0.5]), np.array([100.0, 0.01, 2.0])
    other = _small(**FIT).fit(X * scale + shift, 1000 * y - 7)
    mean, std = est.predict(Xt, return_std=True)
    mean2, std2 = other.predict(Xt * scale + shift, return_std=True)
    np.testing.assert_allclose(mean2, 1000 * mean - 7, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(std2, 1000 * std, rtol=1e-6)


def test_return_std_includes_the_observation_noise_and_matches_sample_y(fitted):
    est, X, y = fitted
    Xt = np.array([[0.0, 0.0, 0.0], [1.0, -1.0, 0.5], [3.5, 3.5, -3.5]])
    mean, std = est.predict(Xt, return_std=True)
    assert mean.shape == std.shape == (3,)
    post = est.posterior_
    f, precision = post.sample_functions((Xt - est.X_mean_) / est.X_scale_, est.num_samples)
    f_sd = f[:, 0, :, 0].numpy().std(0) * est.y_scale_
    noise_sd = np.sqrt(np.mean(1 / precision.numpy())) * est.y_scale_
    np.testing.assert_allclose(std, np.sqrt(f_sd**2 + noise_sd**2), rtol=1e-6)
    many = copy.deepcopy(est).set_params(num_samples=4000)
    mean, std = many.predict(Xt, return_std=True)
    draws = est.sample_y(Xt, n_samples=4000, random_state=5)
    assert draws.shape == (3, 4000)
    # 4000 draws each: the standard error of a mean is at most std / 63, of a std about std / 89.
    np.testing.assert_allclose(draws.mean(1), mean, atol=0.1 * std.max())
    np.testing.assert_allclose(draws.std(1), std, rtol=0.1)


def test_sample_y_is_reproducible_per_random_state(fitted):
    est, X, _ = fitted
    a = est.sample_y(X[:5], n_samples=3, random_state=1)
    np.testing.assert_array_equal(a, est.sample_y(X[:5], n_samples=3, random_state=1))
    assert not np.allclose(a, est.sample_y(X[:5], n_samples=3, random_state=2))
    assert est.sample_y(X[:5]).shape == (5, 1)


# ------------------------------------------------------------------------ seeds
def test_random_state_maps_to_the_backend_seed():
    X, y = _data(40)
    a = _small(random_state=3).fit(X, y)
    assert a.seed_ == 3
    np.testing.assert_array_equal(a.predict(X), _small(random_state=3).fit(X, y).predict(X))
    assert not np.allclose(a.predict(X), _small(random_state=4).fit(X, y).predict(X))
    np.random.seed(11)
    b = _small(random_state=None).fit(X, y)
    np.random.seed(11)
    assert _small(random_state=None).fit(X, y).seed_ == b.seed_
    assert b.seed_ == np.random.RandomState(11).randint(2**31 - 1)
    assert _small(random_state=np.random.RandomState(11)).fit(X, y).seed_ == b.seed_
    np.testing.assert_array_equal(_small(random_state=b.seed_).fit(X, y).predict(X), b.predict(X))
    with pytest.raises(InvalidParameterError, match="random_state"):
        _small(random_state=-1).fit(X, y)


# ---------------------------------------------------------------- sklearn tools
def test_pipeline_and_cross_val_score():
    X, y = _data(150)
    pipe = make_pipeline(StandardScaler(), _small(**FIT))
    scores = cross_val_score(pipe, X, y, cv=KFold(3, shuffle=True, random_state=0))
    assert scores.shape == (3,) and scores.min() > 0.9


def test_grid_search_tunes_the_prior():
    X, y = _data(90)
    grid = GridSearchCV(_small(), {"prior": ["half-cauchy", "normal"]}, cv=2)
    grid.fit(X, y)
    assert list(grid.cv_results_["param_prior"]) == ["half-cauchy", "normal"]
    assert np.isfinite(grid.cv_results_["mean_test_score"]).all()
    best = grid.best_estimator_
    expected = NormalPrior if grid.best_params_["prior"] == "normal" else ScaleMixturePrior
    assert isinstance(best.prior_, expected)
    assert best.get_params()["prior"] == grid.best_params_["prior"]


def test_other_backends_fit_through_the_same_interface():
    X, y = _data(60)
    nuts = BNNRegressor(prior="normal", arch="mlp-1x5", inference="nuts", random_state=0,
                        inference_options={"num_samples": 20, "warmup": 20, "num_chains": 1, "max_tree_depth": 3,
                                           "jit_compile": False})
    nuts.fit(X, y)
    assert nuts.posterior_.backend == "nuts" and nuts.posterior_.num_draws == 20
    mapem = _small(prior="inverse-nakagami", arch="mlp-1x20", inference="map-em",
                   inference_options={"steps": 500, "lr": 0.02}).fit(X, y)
    assert mapem.posterior_.info["guide"] == "map" and mapem.score(*_data(100, seed=1)) > 0.9


def test_pickle_keeps_the_fit(fitted):
    est, X, _ = fitted
    again = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(again.predict(X), est.predict(X))
    np.testing.assert_array_equal(again.posterior_.weight_means()["layer0"], est.posterior_.weight_means()["layer0"])


# ------------------------------------------------------------------------ errors
def test_bad_parameters_raise_the_projects_errors_at_fit():
    X, y = _data(20)
    est = BNNRegressor(prior="no-such-prior")  # __init__ checks nothing
    with pytest.raises(UnknownNameError, match="unknown prior 'no-such-prior'"):
        est.fit(X, y)
    with pytest.raises(UnknownNameError, match="inference method"):
        _small(inference="adam").fit(X, y)
    with pytest.raises(InvalidParameterError, match="seed.*random_state"):
        _small(inference_options={"seed": 1}).fit(X, y)
    with pytest.raises(InvalidParameterError, match="unknown option 'epochs'"):
        _small(inference_options={"epochs": 3}).fit(X, y)
    with pytest.raises(BNNPriorsError, match="architecture"):
        _small(arch="cnn-3x3").fit(X, y)
    with pytest.raises(InvalidParameterError, match="num_samples"):
        _small(num_samples=0).fit(X, y)
    with pytest.raises(InvalidParameterError, match="prior_options"):
        _small(prior_options=[1]).fit(X, y)
    with pytest.raises(UnsupportedCombinationError, match="SVI cannot fit"):
        _small(prior="bernoulli").fit(X, y)
    for err in (UnknownNameError, InvalidParameterError):
        assert issubclass(err, ValueError)


def test_bad_data_raises_sklearns_errors():
    X, y = _data(20)
    X[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        _small().fit(X, y)
    est = _small().fit(*_data(20))
    with pytest.raises(ValueError, match="3 features"):
        est.predict(np.zeros((2, 4)))


def test_bnn_priors_does_not_import_the_estimator_models_or_inference():
    code = (
        "import sys, bnn_priors; "
        "print(sorted(m for m in ('bnn_priors.estimator', 'models', 'inference', 'sklearn') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
