"""The presets that follow released code: ``gal2016-2layer`` (Gal's two-layer runs) and
``nalisnick2019-released`` (Nalisnick et al.'s released training script)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from bnn_priors.errors import InvalidParameterError
from bnn_priors.suite import read_results, run_suite
from bnn_priors.suite.data_options import gal_weight_decay, resolve_options
from bnn_priors.suite.presets import GAL2_SETTINGS, preset_configs


# ----------------------------------------------------------- gal2016-2layer
def test_gal2_configs_carry_each_sets_own_settings():
    configs = preset_configs("gal2016-2layer")
    # nine sets, 20 splits each except protein's 5: one run per split, no grid over (p, tau)
    assert len(configs) == 8 * 20 + 5
    by_set = {}
    for c in configs:
        by_set.setdefault(c.dataset, set()).add((c.arch, c.budget, c.prior["p"], c.options["gal_tau"],
                                                 c.options["length_scale"], c.holdout, c.eval_samples))
    assert all(len(v) == 1 for v in by_set.values())
    (boston,) = by_set["boston"]
    assert boston == ("mlp-2x50", 40 * 500, 0.05, 0.159707652696, 1e-2, None, 10000)
    (yacht,) = by_set["yacht"]
    assert yacht == ("mlp-2x50", 20000, 0.01, 0.541869562034, 1e-1, None, 10000)
    (protein,) = by_set["protein"]
    assert protein[:3] == ("mlp-2x100", 20 * 500, 0.005)
    assert {c.inference for c in configs} == {"mc-dropout"} and {c.noise for c in configs} == {"bernoulli"}
    assert {c.options["batch_size"] for c in configs} == {128} and {c.options["lr"] for c in configs} == {1e-3}
    assert set(GAL2_SETTINGS) == set(by_set)


def test_gal2_weight_decay_and_precision_follow_gals_formula():
    (cfg,) = preset_configs("gal2016-2layer", datasets="concrete", splits="3")
    opts = resolve_options(cfg, 927, [16.7])
    s = GAL2_SETTINGS["concrete"]
    assert opts["weight_decay"] == pytest.approx(1e-4 * (1 - 0.01) / (2 * 927 * 0.0557319157756), rel=1e-12)
    assert opts["weight_decay"] == gal_weight_decay(s.p, s.tau, 927, s.length_scale)
    assert opts["precision"] == pytest.approx(0.0557319157756 * 16.7**2)
    assert "gal_tau" not in opts


def test_gal2_refuses_a_set_it_has_no_settings_for():
    with pytest.raises(InvalidParameterError, match="no settings for data set diabetes"):
        preset_configs("gal2016-2layer", datasets="diabetes")


def test_gal2_tiny_run_on_yacht(uci_dir, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the budget change is announced; it is the point here
        configs = preset_configs("gal2016-2layer", datasets="yacht", splits="0-1", budget={"epochs": 30},
                                 eval_samples=200)
    report = run_suite(configs, tmp_path / "r.sqlite", data_dir=uci_dir, progress=False)
    assert report.ok == 2
    df = read_results(tmp_path / "r.sqlite")
    assert set(df["label"]) == {"MC dropout, Gal 2 layers (p=0.01, tau=0.5419, mlp-2x50)"}
    # yacht's targets have a standard deviation of about 15: 30 epochs already beat the mean by far
    assert (df["rmse"] < 8).all() and (df["sample_mae"] > 0).all() and np.isfinite(df["log_likelihood"]).all()
