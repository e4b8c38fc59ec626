"""Faults a user meets: bad seeds, a corrupt cached data file offline, a killed driver.

Each test reproduces one item of the reliability report (issue 14) and checks the
behaviour that replaced it: one clear error naming what was given, a message that
says what is wrong and what to do, worker processes that die with their driver.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from bnn_priors.errors import InvalidParameterError
from inference import NUTS, SVI, MCDropout
from models import BayesianMLP

# ---------------------------------------------------------------------- seeds
BAD_SEEDS = ["abc", 1.5, None, -1, True, [1, "x"], [0, -2], (3, 1.5), np.float64(2.0)]


@pytest.mark.parametrize("backend", [SVI, MCDropout, NUTS], ids=lambda b: b.__name__)
@pytest.mark.parametrize("seed", BAD_SEEDS, ids=repr)
def test_a_bad_seed_is_one_error_naming_the_value_as_given(backend, seed):
    with pytest.raises(InvalidParameterError, match="seed") as info:
        backend(seed=seed)
    assert str(info.value).endswith(f"got {seed!r}"), str(info.value)


@pytest.mark.parametrize("seed", [0, 7, np.int64(3), [4], (5,)], ids=repr)
def test_good_seeds_are_accepted(seed):
    for backend in (SVI, MCDropout, NUTS):
        assert backend(seed=seed).seed is seed


def test_a_bad_prediction_seed_names_the_value_as_given():
    X = torch.linspace(-1, 1, 8)[:, None]
    post = SVI(steps=1, progress=False).fit(BayesianMLP(1, 1, hidden=(3,)), X, X[:, 0])
    for seed in ("abc", 1.5, [1, "x"]):
        with pytest.raises(InvalidParameterError, match=re.escape(f"got {seed!r}")):
            post.predict(X, num_samples=2, seed=seed)
