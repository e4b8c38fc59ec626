"""scikit-learn's diabetes data as a tenth benchmark set, split like the UCI sets.

442 patients, 10 inputs (age, sex, body-mass index, blood pressure, six serum
measurements; in original units, ``scaled=False``), target a measure of disease
progression one year later. It ships inside scikit-learn, so nothing is
downloaded. Its 20 splits follow the UCI recipe (:func:`make_splits`).

Reference setup, chosen to mirror boston (a set of similar size): 50 hidden
units, 40 epochs and boston's dropout grid. As in the published MC-dropout code,
``tau`` is the noise precision in the target's original units, and boston's grid
puts ``1/sqrt(tau)`` (2.2 to 3.2) around the RMSE good models reach there. The
diabetes target is on a larger scale (std 77; a linear model reaches RMSE about
55 on these splits), so its tau grid puts ``1/sqrt(tau)`` at about 47, 53 and 63.
"""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_diabetes

from bnn_priors.data.dataset import Dataset
from bnn_priors.data.splits import make_splits

NAME = "diabetes"
N_SPLITS = 20
N_HIDDEN = 50
N_EPOCHS = 40
DROPOUT_RATES = (0.005, 0.01, 0.05, 0.1)
TAU_VALUES = (2.5e-4, 3.5e-4, 4.5e-4)


def load_diabetes_dataset() -> Dataset:
    """The diabetes set with its 20 splits and reference setup."""
    X, y = load_diabetes(return_X_y=True, scaled=False)
    train, test = make_splits(len(y), N_SPLITS)
    return Dataset(
        name=NAME,
        X=np.asarray(X, dtype=np.float64),
        y=np.asarray(y, dtype=np.float64),
        train_indices=train,
        test_indices=test,
        n_hidden=N_HIDDEN,
        n_epochs=N_EPOCHS,
        dropout_rates=np.array(DROPOUT_RATES),
        tau_values=np.array(TAU_VALUES),
    )
