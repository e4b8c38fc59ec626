"""The presets that follow released code: ``gal2016-2layer`` (Gal's two-layer runs) and
``nalisnick2019-released`` (Nalisnick et al.'s released training script)."""

from __future__ import annotations

import json
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
    # yacht's targets have a standard deviation of about 15: 30 epochs already beat the mean (6.2-7.4 under
    # seeds 0, 1 and 7)
    assert (df["rmse"] < 10).all() and (df["sample_mae"] > 0).all() and np.isfinite(df["log_likelihood"]).all()
    # beside the two-layer table, in the same metrics
    from bnn_priors.suite.tables import comparison_table

    head = "MC dropout, 2 layers [Gal, DropoutUncertaintyExps a6259f1] (published)"
    t = comparison_table(df, "rmse", references=["gal2016-2layer"])
    assert t.published == [head] and t.cells[("yacht", head)][:2] == (0.66, 0.06)
    ll = comparison_table(df, "ll", references=["gal2016-2layer"])
    assert ll.cells[("yacht", head)][:2] == (-1.37, 0.02)


def test_gal2_reference_is_the_two_layer_readme_table():
    from bnn_priors.suite.references import get_reference

    ref = get_reference("gal2016-2layer")
    rmse, ll = ref.column("MC dropout, 2 layers", "rmse"), ref.column("MC dropout, 2 layers", "ll")
    assert (rmse.splits, rmse.spread, ll.splits, ll.spread) == ("standard", "se", "standard", "se")
    assert rmse.figures["boston"] == (2.80, 0.13) and rmse.figures["energy"] == (0.47, 0.01)
    assert ll.figures["boston"] == (-2.34, 0.02) and ll.figures["wine"] == (-0.9, 0.01)
    assert set(rmse.figures) == set(GAL2_SETTINGS) and not rmse.qualifiers


# -------------------------------------------------- nalisnick2019-released
def test_released_configs_follow_the_released_script(uci_dir):
    from bnn_priors.suite.build import build_model
    from bnn_priors.suite.presets import NALISNICK_RELEASED_OPTIONS

    configs = preset_configs("nalisnick2019-released", datasets="yacht,boston", data_dir=uci_dir)
    assert len(configs) == 2 * 3 * 20
    assert {c.structure for c in configs} == {"ard", "add", "ard-add"}
    assert {c.noise for c in configs} == {"inverse-nakagami"} and {c.inference for c in configs} == {"svi"}
    assert all(c.prior == {"shape": 3.0, "spread": 1.0} and c.eval_samples == 500 for c in configs)
    # 4500 epochs of floor(N / 32) steps: yacht 277 -> 8, boston 455 -> 14 training points per split
    assert {c.dataset: c.budget for c in configs} == {"yacht": 4500 * 8, "boston": 4500 * 14}
    opts = configs[0].options
    assert opts == NALISNICK_RELEASED_OPTIONS
    assert (opts["lr"], opts["batch_size"], opts["num_particles"], opts["likelihood_precision"]) == (1e-3, 32, 10, 20.0)
    assert opts["sign_flip"] == [-1.0, 3.0] and opts["kl_weight"] == "per-weight" and opts["bias"] == "point"
    # ADD and ARD-ADD on the hidden-to-hidden matrix only, ARD on the input and output matrices
    for cfg in configs[:60:20]:
        model = build_model(cfg, 6)
        assert [layer.prior.structure for layer in model.layers] == ["ard", cfg.structure, "ard"]
        assert not model.likelihood.learned and model.likelihood.precision == 20.0
        # the model's options never reach the backend
        backend_opts = resolve_options(cfg, 277, [15.0])
        assert "outer_structure" not in backend_opts and "likelihood_precision" not in backend_opts


def test_released_tiny_run_on_yacht(uci_dir, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the budget change is announced; it is the point here
        configs = preset_configs("nalisnick2019-released", datasets="yacht", splits="0-1", structure="ard-add",
                                 budget={"steps": 160}, eval_samples=50, data_dir=uci_dir)
    report = run_suite(configs, tmp_path / "r.sqlite", data_dir=uci_dir, progress=False)
    assert report.ok == 2
    df = read_results(tmp_path / "r.sqlite", with_weights=True)
    assert set(df["label"]) == {"ARD-ADD (released code: inverse-gamma(3, 3), resnet-2x50, 4500 epochs)"}
    info = json.loads(df["backend_info"].iloc[0])
    assert info["steps"] == 160 and info["guide"] == "mean-field"
    # yacht's targets have a standard deviation of about 15: even 20 epochs at lr 1e-3 beat the mean
    assert (df["rmse"] < 14).all() and (df["sample_mae"] < df["rmse"] * 1.5).all()
    assert np.isfinite(df["log_likelihood"]).all()
