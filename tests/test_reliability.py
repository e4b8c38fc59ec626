"""Faults a user meets: bad seeds, a corrupt cached data file offline, a killed driver.

Each test reproduces one item of the reliability report (issue 14) and checks the
behaviour that replaced it: one clear error naming what was given, a message that
says what is wrong and what to do, worker processes that die with their driver.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pytest
import torch

from bnn_priors.data import UCI_SOURCES, load_dataset
from bnn_priors.errors import DataError, InvalidParameterError
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


# ------------------------------------------------------------ a corrupt cache
@pytest.mark.parametrize("download", [True, False])
def test_a_corrupt_cached_file_offline_says_so_where_and_what_to_do(isolated_data, download):
    """No network (the download address refuses connections) and a cached file that fails its
    sha256 check: the error is about that file, not a download failure."""
    cached = isolated_data / "cache" / "yacht" / "data.txt"
    cached.parent.mkdir(parents=True)
    cached.write_text("1 2 3\n")
    with pytest.raises(DataError) as info:
        load_dataset("yacht", download=download)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"the cached file {cached} failed its sha256 check"), message
    assert hashlib.sha256(b"1 2 3\n").hexdigest() in message
    assert UCI_SOURCES["yacht"].sha256["data.txt"] in message
    assert f"delete {cached}" in message and "--data-dir" in message
    assert cached.read_text() == "1 2 3\n"  # left for the user to inspect
