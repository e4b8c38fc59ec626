"""Tests of the benchmark suite (bnn_priors.suite): configs, grid, store, runner, tables, plots.

Training uses diabetes (ships with scikit-learn) with a few splits and tiny budgets.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import sqlite3
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bnn_priors.errors import (
    InvalidParameterError,
    UnknownNameError,
    UnsupportedCombinationError,
)
from bnn_priors.suite import (
    METHODS,
    RunConfig,
    comparison_table,
    config_hash,
    expand_grid,
    format_table,
    parse_arch,
    parse_splits,
    plan_jobs,
    plot_heatmaps,
    plot_metric,
    preset_configs,
    read_results,
    results_table,
    run_suite,
    summarize,
)
from bnn_priors.suite.build import method_label
from bnn_priors.suite.config import Architecture, canonical_json
from bnn_priors.suite.planning import check_support
from bnn_priors.suite.references import REFERENCES
from bnn_priors.suite.store import ResultsStore, array_to_npy, npy_to_array

TINY = {"steps": 25, "epochs": 2, "samples": 5}


def _config(**kw) -> RunConfig:
    base = dict(dataset="diabetes", split=0, noise="half-cauchy", structure="ard", arch="mlp-1x50",
                inference="svi", budget=100, seed=0)
    base.update(kw)
    return RunConfig(**base)


# ------------------------------------------------------------------- configs
def test_hash_is_stable_across_processes_and_option_order():
    cfg = _config(options={"lr": 0.005, "batch_size": 64}, prior={"scale": 0.5})
    same = _config(options={"batch_size": 64, "lr": 0.005}, prior={"scale": 0.5}, label="another name")
    assert cfg.hash == same.hash == config_hash(cfg)
    fields = {"v": 1, **cfg.hashed_fields()}  # the definition: sha256 of the canonical JSON
    assert cfg.hash == hashlib.sha256(canonical_json(fields).encode()).hexdigest()
    assert pickle.loads(pickle.dumps(cfg)).hash == cfg.hash
    assert _config(seed=1).hash != _config().hash
    assert _config(options={"lr": 0.01}).hash != _config(options={"lr": 0.02}).hash
    code = (
        "from bnn_priors.suite import RunConfig\n"
        "c = RunConfig(dataset='diabetes', split=0, noise='half-cauchy', structure='ard', arch='mlp-1x50',"
        " inference='svi', budget=100, seed=0, prior={'scale': 0.5}, options={'batch_size': 64, 'lr': 0.005})\n"
        "print(c.hash)\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}  # a string-hash seed other than this process's
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == cfg.hash


def test_config_normalizes_and_round_trips():
    cfg = _config(noise="Half_Cauchy", arch="MLP-1x50", options={"lr": np.float64(0.5)})
    assert (cfg.noise, cfg.arch, cfg.options) == ("half-cauchy", "mlp-1x50", {"lr": 0.5})
    assert RunConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert cfg.budget_unit == "steps"
    assert _config(inference="mc-dropout").budget_unit == "epochs"
    with pytest.raises(InvalidParameterError):
        _config(options={"lr": float("nan")})
    with pytest.raises(InvalidParameterError):
        _config(budget=0)


def test_parse_arch():
    assert parse_arch("mlp-1x50") == Architecture("mlp", 1, 50)
    assert parse_arch("resnet-2x50").hidden == (50, 50)
    for bad in ("mlp-50", "resnet-2x", "mlp-0x50", "mlp1x50"):
        with pytest.raises(InvalidParameterError, match="depth"):
            parse_arch(bad)


def test_parse_splits():
    assert parse_splits("0-4") == [0, 1, 2, 3, 4]
    assert parse_splits("0,3,5") == [0, 3, 5]
    assert parse_splits("5, 0-2,2") == [0, 1, 2, 5]
    assert parse_splits("all") is None
    assert parse_splits(3) == [3]
    for bad in ("a", "3-1", "1-", "-1", "0;1"):
        with pytest.raises(InvalidParameterError):
            parse_splits(bad)


def test_grid_is_the_product_of_the_lists():
    configs = expand_grid("diabetes", "0-2", noise="half-cauchy,rayleigh", structure="ard,add",
                          arch="mlp-1x50,resnet-2x50", inference="svi,svi-em", seeds="0,1")
    assert len(configs) == 3 * 2 * 2 * 2 * 2 * 2
    assert len({c.hash for c in configs}) == len(configs)
    assert {c.budget for c in configs} == {2000}
    axes = {(c.split, c.noise, c.structure, c.arch, c.inference, c.seed) for c in configs}
    assert len(axes) == len(configs)
    # budgets by unit or method; priors without scales take structure none only
    grid = expand_grid("diabetes", "0", noise="normal,bernoulli", structure="ard,add",
                       inference="svi,mc-dropout", budget={"steps": 7, "mc-dropout": 3})
    assert {(c.noise, c.structure) for c in grid} == {("normal", "none"), ("bernoulli", "ard"), ("bernoulli", "add")}
    assert {(c.inference, c.budget) for c in grid} == {("svi", 7), ("mc-dropout", 3)}
    assert len(expand_grid("yacht", "all", noise="half-cauchy")) == 20


@pytest.mark.parametrize(
    "kwargs, kind, choices",
    [
        ({"noise": "cauchy"}, "prior", "half-cauchy"),
        ({"structure": "rows"}, "structure", "ard-add"),
        ({"inference": "hmc"}, "inference method", "mc-dropout"),
        ({"datasets": "mnist"}, "data set", "yacht"),
        ({"arch": "cnn-2x50"}, "architecture", "resnet"),
    ],
)
def test_unknown_names_fail_before_any_work(kwargs, kind, choices):
    args = {"datasets": "diabetes", **kwargs}
    with pytest.raises(UnknownNameError, match=f"unknown {kind}") as info:
        expand_grid(args.pop("datasets"), **args)
    assert choices in str(info.value)


def test_split_out_of_range_names_the_valid_range():
    with pytest.raises(InvalidParameterError, match="has splits 0-19; asked for 20-25"):
        expand_grid("diabetes", "18-25")
    with pytest.raises(InvalidParameterError, match="protein' has splits 0-4"):
        expand_grid("protein", "0-9")


def test_method_labels_and_presets():
    assert method_label(_config(inference="mc-dropout", noise="bernoulli")) == "MC dropout (bernoulli/ard, mlp-1x50)"
    cfg = _config(inference="svi-em", structure="ard-add", arch="resnet-2x50", options={"lr": 0.001})
    assert method_label(cfg) == "SVI-EM (half-cauchy/ard-add, resnet-2x50, lr=0.001)"
    assert method_label(_config(inference="vd", noise="log-uniform", structure="none")) == "VD (log-uniform, mlp-1x50)"
    quick = preset_configs("quick")
    assert {c.dataset for c in quick} == {"diabetes"} and {c.split for c in quick} == set(range(5))
    assert {c.inference for c in quick} >= {"svi", "mc-dropout"}
    paper = preset_configs("nalisnick2019")
    assert {c.dataset for c in paper} == {"boston", "concrete", "energy", "kin8nm", "power", "wine", "yacht"}
    assert len({c.split for c in paper}) == 20
    assert {(c.noise, c.structure) for c in paper if c.inference == "svi-em"} == {
        (n, s) for n in ("inverse-nakagami", "half-cauchy") for s in ("ard", "add", "ard-add")
    }
    assert all(c.label for c in paper)
    # command-line values override the preset's
    with pytest.warns(UserWarning, match="steps 10 \\(the preset's svi-em, map-em: 3000\\)"):
        small = preset_configs("nalisnick2019", datasets="yacht", splits="0-1", budget={"steps": 10, "epochs": 2})
    assert {(c.dataset, c.split) for c in small} == {("yacht", 0), ("yacht", 1)}
    assert {(c.inference, c.budget) for c in small} == {("svi-em", 10), ("map-em", 10), ("mc-dropout", 2)}
    assert {(c.noise, c.structure) for c in paper if c.inference == "map-em"} == {
        ("inverse-nakagami", s) for s in ("ard", "add", "ard-add")
    }
    # the grid axes select among the preset's runs (issue 14, item 10: tests/test_reliability_suite.py)
    narrowed = preset_configs("quick", noise="half-cauchy")
    assert {(c.inference, c.options["lr"]) for c in narrowed} == {("svi", 0.01)} and len(narrowed) == 5
    with pytest.raises(InvalidParameterError, match="preset quick has no run with noise rayleigh"):
        preset_configs("quick", noise="rayleigh", inference="svi")
    with pytest.raises(UnknownNameError, match="quick"):
        preset_configs("slow")


def test_check_support_names_the_refused_combinations():
    configs = expand_grid("diabetes", "0", noise="bernoulli,half-cauchy", inference="svi,nuts,mc-dropout",
                          budget=TINY)
    refused = check_support(configs, {"diabetes": 10})
    assert {(c.inference, c.noise) for c, _ in refused} == {("svi", "bernoulli"), ("nuts", "bernoulli")}
    assert all("bernoulli" in reason for _, reason in refused)
    with pytest.raises(InvalidParameterError, match="unknown option 'learning_rate'"):
        check_support([_config(options={"learning_rate": 0.1})], {"diabetes": 10})
    with pytest.raises(InvalidParameterError, match="set by the runner"):
        check_support([_config(options={"steps": 5})], {"diabetes": 10})


def test_map_em_runs_through_the_suite_and_refuses_priors_without_a_map(tmp_path):
    db = tmp_path / "r.sqlite"
    configs = expand_grid("diabetes", "0-1", noise="inverse-nakagami", structure="ard-add", arch="resnet-2x50",
                          inference="map-em", budget={"steps": 300})
    report = run_suite(configs, db, progress=False)
    assert report.ok == 2
    df = read_results(db)
    assert set(df["label"]) == {"MAP-EM (inverse-nakagami/ard-add, resnet-2x50)"}
    # a point estimate beats the constant predictor (diabetes targets have std about 77)
    assert (df["rmse"] < 70).all() and np.isfinite(df["log_likelihood"]).all()
    refused = check_support(expand_grid("diabetes", "0", noise="gaussian,log-uniform,normal", inference="map-em",
                                        budget=TINY), {"diabetes": 10})
    assert {c.noise for c, _ in refused} == {"gaussian", "log-uniform"}


def test_unsupported_grid_is_refused_up_front_or_skipped(tmp_path):
    db = tmp_path / "r.sqlite"
    only_bad = expand_grid("diabetes", "0", noise="bernoulli", inference="nuts", budget=TINY)
    with pytest.raises(UnsupportedCombinationError, match="NUTS"):
        run_suite(only_bad, db, progress=False)
    mixed = expand_grid("diabetes", "0", noise="bernoulli", inference="nuts,mc-dropout", budget=TINY)
    with pytest.warns(UserWarning, match="skipping 1 unsupported run: NUTS"):
        report = run_suite(mixed, db, progress=False)
    assert report.ok == 1 and len(report.unsupported) == 1
    with pytest.raises(UnsupportedCombinationError):
        run_suite(mixed, db, progress=False, on_unsupported="error")


# --------------------------------------------------------------------- store
def _row(cfg: RunConfig, **kw) -> dict:
    row = {
        "config_hash": cfg.hash, "config": json.dumps(cfg.to_dict()), "label": method_label(cfg),
        "method_key": cfg.method_key, "dataset": cfg.dataset, "split": cfg.split, "noise": cfg.noise,
        "structure": cfg.structure, "arch": cfg.arch, "inference": cfg.inference, "budget": cfg.budget,
        "budget_unit": "steps", "seed": cfg.seed, "status": "ok", "rmse": 1.5, "log_likelihood": -2.0,
        "timestamp": "2024-01-01T00:00:00+00:00",
    }
    row.update(kw)
    return row


def test_store_round_trip(tmp_path):
    path = tmp_path / "results.sqlite"
    a, b = _config(split=0), _config(split=1)
    w = np.arange(12, dtype=np.float32).reshape(3, 4)
    with ResultsStore(path) as store:
        store.insert([_row(a, weights=array_to_npy(w), weights_layer="layer0"),
                      _row(b, status="failed", error="FitDivergedError: boom", rmse=None, log_likelihood=None)])
        assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store.ok_hashes() == {a.hash}
        assert store.status() == {a.hash: "ok", b.hash: "failed"}
        np.testing.assert_array_equal(store.weights(a.hash), w)
        first = store.frame()
        store.insert([_row(b, rmse=2.5, timestamp="2024-01-02T00:00:00+00:00")])  # the retry replaces the failure
        second = store.frame()
    assert len(second) == 2 and second["id"].tolist() == first["id"].tolist()
    assert second.set_index("config_hash").loc[b.hash, "status"] == "ok"
    df = read_results(path)
    assert df["rmse"].tolist() == [1.5, 2.5]
    assert RunConfig.from_dict(json.loads(df["config"][0])) == a
    weights = read_results(path, with_weights=True)["weights"]
    np.testing.assert_array_equal(npy_to_array(weights[0]), w)


def test_a_failed_row_never_replaces_an_ok_one(tmp_path):
    """Two processes on one grid: the one whose try failed (a broken worker pool, a held part of a
    retried job) must not undo the other's stored result; an ok row still replaces an ok one."""
    a = _config(split=0)
    with ResultsStore(tmp_path / "r.sqlite") as store:
        store.insert([_row(a, rmse=1.25)])
        store.insert([_row(a, status="failed", error="BrokenProcessPool", rmse=None, log_likelihood=None)])
        assert store.status() == {a.hash: "ok"} and store.frame()["rmse"].tolist() == [1.25]
        store.insert([_row(a, rmse=1.5)])
        assert store.frame()["rmse"].tolist() == [1.5]


def test_a_copy_of_the_database_file_alone_holds_every_inserted_run(tmp_path):
    """What git commits while a grid still runs is the .sqlite file, not its -wal: every insert
    moves its rows into the file itself, with the writer's connection still open."""
    import shutil

    path = tmp_path / "results.sqlite"
    with ResultsStore(path) as store:
        for split in range(3):
            store.insert([_row(_config(split=split))])
            copy = tmp_path / f"copy{split}.sqlite"
            shutil.copyfile(path, copy)  # the file alone, as git sees it
            rows = sqlite3.connect(copy).execute("SELECT COUNT(*) FROM runs").fetchone()[0]
            assert rows == split + 1


def test_store_refuses_what_is_not_a_results_file(tmp_path):
    from bnn_priors.errors import DataError

    with pytest.raises(DataError, match="no results database"):
        read_results(tmp_path / "missing.sqlite")
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.commit()
    with pytest.raises(DataError, match="no 'runs' table"):
        read_results(other)
    text = tmp_path / "text.sqlite"
    text.write_text("not a database" * 100)
    with pytest.raises(DataError):
        read_results(text)


# -------------------------------------------------------------------- tables
@pytest.fixture
def handmade() -> pd.DataFrame:
    """Two data sets, three methods, three splits; method C has two seeds on split 0 of boston."""
    values = {
        ("boston", "A"): [3.0, 3.2, 3.4],
        ("boston", "B"): [2.0, 2.4, 2.2],
        ("boston", "C"): [2.5, 2.5, 2.5],
        ("yacht", "A"): [1.0, 1.0, 1.3],
        ("yacht", "B"): [1.5, 1.5, 1.5],
        ("yacht", "C"): [0.9, 1.1, 1.0],
    }
    rows = []
    for (dataset, method), rmse in values.items():
        for split, v in enumerate(rmse):
            rows.append({"dataset": dataset, "split": split, "seed": 0, "label": method, "status": "ok",
                         "rmse": v, "log_likelihood": -v})
    # a second seed on boston/C split 0: averaged within the split first (2.5 and 3.5 -> 3.0)
    rows.append({"dataset": "boston", "split": 0, "seed": 1, "label": "C", "status": "ok",
                 "rmse": 3.5, "log_likelihood": -3.5})
    rows.append({"dataset": "boston", "split": 2, "seed": 0, "label": "A", "status": "failed",
                 "rmse": np.nan, "log_likelihood": np.nan})
    return pd.DataFrame(rows)


def test_summary_mean_and_standard_error(handmade):
    s = summarize(handmade).set_index(["dataset", "method"])
    assert s.loc[("boston", "B"), "mean"] == pytest.approx(2.2)
    assert s.loc[("boston", "B"), "se"] == pytest.approx(np.std([2.0, 2.4, 2.2], ddof=1) / math.sqrt(3))
    assert s.loc[("boston", "C"), "mean"] == pytest.approx((3.0 + 2.5 + 2.5) / 3)
    assert s.loc[("boston", "C"), "n"] == 3
    assert s.loc[("yacht", "A"), "se"] == pytest.approx(np.std([1.0, 1.0, 1.3], ddof=1) / math.sqrt(3))
    single = summarize(handmade[handmade["split"] == 0]).set_index(["dataset", "method"])
    assert np.isnan(single.loc[("yacht", "A"), "se"])


def test_table_bold_best_and_average_rank(handmade):
    t = comparison_table(handmade, "rmse")
    assert t.datasets == ["boston", "yacht"]  # registry order
    assert t.best == {("boston", "B"), ("yacht", "C")}
    # boston: B 2.2 < C 2.667 < A 3.2 ; yacht: C 1.0 < A 1.1 < B 1.5
    assert t.ranks[("boston", "A")] == 3 and t.ranks[("yacht", "A")] == 2
    mean, se, n = t.average_rank["A"]
    assert (mean, n) == (2.5, 2) and se == pytest.approx(np.std([3, 2], ddof=1) / math.sqrt(2))
    assert t.average_rank["B"][0] == 2.0 and t.average_rank["C"][0] == 1.5
    ll = comparison_table(handmade, "ll")  # higher is better: the mirror image
    assert ll.best == {("boston", "B"), ("yacht", "C")}
    text = format_table(t, "markdown")
    assert "**2.20 ± 0.12**" in text and "**1.00 ± 0.06**" in text
    assert "3.20 ± 0.12" in text
    assert "| average rank" in text and "**1.50 ± 0.50**" in text
    assert "ddof=1" in text


def test_table_ties_share_the_rank(handmade):
    tied = handmade[handmade["label"] != "C"].copy()
    tied.loc[(tied["dataset"] == "yacht") & (tied["label"] == "B"), "rmse"] = [1.0, 1.0, 1.3]
    t = comparison_table(tied)
    assert t.ranks[("yacht", "A")] == t.ranks[("yacht", "B")] == 1.5
    assert {("yacht", "A"), ("yacht", "B")} <= t.best


def test_one_label_over_several_configurations_is_split_by_budget(handmade):
    runs = handmade.assign(method_key="k1", budget=100, budget_unit="steps")
    longer = runs[runs["label"] == "A"].assign(method_key="k2", budget=500)
    t = comparison_table(pd.concat([runs, longer]))
    assert {"A, 100 steps", "A, 500 steps", "B", "C"} == set(t.methods)


def test_reference_columns(handmade):
    t = comparison_table(handmade, "rmse", references=["nalisnick2019", "gal2016"])
    # RMSE columns only: Nalisnick et al.'s ARD, ADD and ARD-ADD are a sample-MAE and are left out
    nal = "[Nalisnick et al. 2019] (published)"
    assert t.published == [f"Dropout {nal}", f"Prob. Backprop {nal}", f"Deep GP {nal}",
                           "MC dropout [Gal & Ghahramani 2016] (published)"]
    assert t.left_out == {f"{m} [Nalisnick et al. 2019]": "sample-MAE" for m in ("ARD", "ADD", "ARD-ADD")}
    assert t.cells[("boston", f"Dropout {nal}")][:2] == (2.80, 0.13)
    assert t.cells[("yacht", "MC dropout [Gal & Ghahramani 2016] (published)")][:2] == (0.67, 0.05)
    assert not any(c in t.published for _, c in t.best)  # published figures are neither bolded
    assert set(t.average_rank) == {"A", "B", "C"}  # nor ranked
    md = format_table(t, "markdown")
    assert "2.158" not in md and "Left out, measured in another metric: ARD [Nalisnick et al. 2019]" in md
    ll = comparison_table(handmade, "ll", references=["gal2016", "nalisnick2019"])  # gal2016's LL only
    assert ll.published == ["MC dropout [Gal & Ghahramani 2016] (published)"]
    assert ll.cells[("boston", "MC dropout [Gal & Ghahramani 2016] (published)")][:2] == (-2.40, 0.04)
    with pytest.raises(InvalidParameterError, match="no test log-likelihood"):
        comparison_table(handmade, "ll", references=["nalisnick2019"])
    with pytest.raises(UnknownNameError, match="gal2016"):
        comparison_table(handmade, "rmse", references=["hinton2012"])
    assert set(REFERENCES["nalisnick2019"].column("Dropout", "rmse").figures) == {
        "boston", "concrete", "energy", "kin8nm", "power", "wine", "yacht"}
    from bnn_priors.suite.tables import METRICS

    for ref in REFERENCES.values():
        assert all(c.metric in METRICS for c in ref.columns)


def test_published_figures_are_shown_as_printed_never_with_more_places():
    """kin8nm's figures are small: ours get four places, the published ones keep the paper's, so a
    printed ±0.00 (a spread under 0.005) never reads as ±0.0000."""
    runs = pd.DataFrame([{"dataset": "kin8nm", "split": i, "seed": 0, "label": "A", "status": "ok",
                          "rmse": 0.0714 + 0.001 * i, "log_likelihood": 1.1, "sample_mae": 0.0555 + 0.001 * i}
                         for i in range(3)])
    md = format_table(comparison_table(runs, "rmse", references=["nalisnick2019", "gal2016"]), "markdown")
    row = [c.strip().strip("*") for c in next(x for x in md.splitlines() if x.startswith("| kin8nm")).split("|")[1:-1]]
    assert row == ["kin8nm", "0.0724 ± 0.0006", "0.08 ± 0.00", "0.071 ± 0.00", "0.05 ± 0.00", "0.08 ± 0.00"]
    mae = format_table(comparison_table(runs, "sample-mae", references=["nalisnick2019"]), "markdown")
    assert "0.066 ± 0.01" in mae and "0.064 ± 0.00" in mae and "0.0640" not in mae and "0.0000" not in mae
    column = REFERENCES["nalisnick2019"].column("ARD", "sample-mae")
    assert column.places == (3, 2) and column.printed("boston") == "2.158 ± 0.20"
    assert REFERENCES["gal2016"].column("MC dropout", "rmse").printed("naval") == "0.00 ± 0.00"


def test_sample_mae_table_sets_only_sample_mae_beside_ours_and_shows_unmeasured_runs(handmade):
    """Runs recorded before the sample-MAE existed keep their columns with missing cells; the published
    sample-MAE columns say how they differ (own splits, a standard deviation for the ±)."""
    old = handmade.assign(sample_mae=np.nan)
    t = comparison_table(old, "sample-mae", references=["nalisnick2019", "gal2016"])
    ard = 'ARD [Nalisnick et al. 2019] (published; sample-MAE, printed as "RMSE", own splits, ±SD)'
    assert t.published == [ard, ard.replace("ARD", "ADD", 1), ard.replace("ARD", "ARD-ADD", 1)]
    assert t.cells[("boston", ard)][:2] == (2.158, 0.20) and t.spreads[ard] == "sd"
    assert t.methods == ["A", "B", "C"] and t.datasets == ["boston", "yacht"]
    assert not any((d, m) in t.cells for d in t.datasets for m in t.methods)
    assert len(t.unmeasured) == 6 and not t.best and not t.average_rank
    assert t.left_out["MC dropout [Gal & Ghahramani 2016]"] == "RMSE and test LL"
    md = format_table(t, "markdown")
    boston = next(line for line in md.splitlines() if line.startswith("| boston"))
    assert [c.strip() for c in boston.split("|")[1:-1]] == ["boston", "–", "–", "–", "2.158 ± 0.20", "2.343 ± 0.31",
                                                            "2.367 ± 0.18"]
    assert "not measured" in md and "±SD the ± is a standard deviation" in md
    csv = pd.read_csv(__import__("io").StringIO(format_table(t, "csv")))
    assert set(csv["spread"]) == {"sd"} and set(csv["source"]) == {"published"}
    # once some runs have it, they alone are ranked and bolded; the others stay missing
    new = old.copy()
    new.loc[new["label"] == "B", "sample_mae"] = 0.7 * new["rmse"]
    mixed = comparison_table(new, "sample-mae")
    assert mixed.best == {("boston", "B"), ("yacht", "B")} and set(mixed.average_rank) == {"B"}
    assert mixed.cells[("boston", "B")][0] == pytest.approx(0.7 * 2.2)
    assert ("boston", "A") in mixed.unmeasured and ("boston", "B") not in mixed.unmeasured
    assert "not measured" not in format_table(comparison_table(handmade, "rmse"), "markdown")


def test_every_output_format(handmade):
    t = comparison_table(handmade, "rmse", references=["gal2016"])
    md = format_table(t, "markdown")
    assert md.splitlines()[0].startswith("| dataset") and "(published)" in md
    latex = format_table(t, "latex")
    assert "\\begin{tabular}{lcccc}" in latex and "\\mathbf{2.20 \\pm 0.12}" in latex
    assert "Gal \\& Ghahramani" in latex and latex.rstrip().endswith("\\end{tabular}")
    html = format_table(t, "html")
    assert "<b>2.20 ± 0.12</b>" in html and "Gal &amp; Ghahramani" in html
    csv = pd.read_csv(__import__("io").StringIO(format_table(t, "csv")))
    assert list(csv.columns) == ["dataset", "method", "source", "mean", "se", "n", "rank", "best", "spread"]
    row = csv[(csv.dataset == "boston") & (csv.method == "B")].iloc[0]
    assert row["mean"] == pytest.approx(2.2) and row["rank"] == 1 and bool(row["best"])
    assert set(csv.source) == {"suite", "published"}
    with pytest.raises(UnknownNameError):
        format_table(t, "xlsx")


def test_one_renderer_writes_both_tables_and_an_unknown_format_raises(handmade, monkeypatch):
    from bnn_priors.suite.protocols import format_gal_table, gal_select, gal_summary
    from bnn_priors.suite.render import FORMATS

    t = comparison_table(handmade, "rmse")
    gal = handmade.assign(p=0.05, tau=0.5, val_log_likelihood=-handmade["rmse"], val_rmse=handmade["rmse"])
    summary = gal_summary(gal_select(gal))
    # a format registered once is a format of both tables
    monkeypatch.setitem(FORMATS, "rows", lambda table: f"{len(table.rows)} rows of {len(table.columns)}\n")
    assert format_table(t, "rows") == "3 rows of 4\n"  # two data sets and the rank row; dataset + A, B, C
    assert format_gal_table(summary, "ROWS") == "2 rows of 7\n"
    for render_it in (lambda fmt: format_table(t, fmt), lambda fmt: format_gal_table(summary, fmt)):
        with pytest.raises(UnknownNameError, match="unknown table format 'xlsx'; valid choices are: csv, html") as info:
            render_it("xlsx")
        assert info.value.choices == ["csv", "html", "latex", "markdown", "rows"]


@pytest.mark.parametrize(
    "look_up, spelling, expected",
    [
        ("bnn_priors.errors:lookup", ("registry", "Foo_Bar", {"foo-bar": 1}), "foo-bar"),
        ("bnn_priors.suite.methods:get_method", ("Map_EM",), "map-em"),
        ("bnn_priors.suite.config:check_inference", (" SVI_em ",), "svi-em"),
        ("bnn_priors.suite.config:check_noise", ("Half_Cauchy",), "half-cauchy"),
        ("bnn_priors.suite.config:check_noise", ("Log_Uniform",), "log-uniform"),
        ("bnn_priors.suite.config:check_dataset", ("Boston",), "boston"),
        ("bnn_priors.suite.config:check_arch", ("ResNet_2x50",), "resnet-2x50"),
        ("bnn_priors.suite.presets:get_preset", ("NALISNICK2019",), "nalisnick2019"),
        ("bnn_priors.suite.references:get_reference", ("Gal2016",), "gal2016"),
        ("bnn_priors.suite.protocols:check_protocol", ("GAL2016",), "gal2016"),
        ("bnn_priors.suite.render:check_format", ("LaTeX",), "latex"),
        ("bnn_priors.suite.tables:check_split", ("Validation",), "validation"),
        ("bnn_priors.suite.tables:metric_info", ("Log_Likelihood",), "test log-likelihood"),
        ("bnn_priors.data:dataset_splits", ("Protein",), 5),
        ("bnn_priors.data:load_dataset", ("Diabetes",), "diabetes"),
        ("bnn_priors.suite.executors:make_executor", ("Local",), "in-process"),
    ],
)
def test_every_name_look_up_takes_any_case_and_underscores(look_up, spelling, expected):
    import importlib

    module, name = look_up.split(":")
    found = getattr(importlib.import_module(module), name)(*spelling)
    for attribute in ("name", "key", "column"):  # a method, preset, reference, data set, executor or metric
        found = getattr(found, attribute, found)
    assert found == expected


def test_an_unknown_name_lists_the_registry():
    from bnn_priors.errors import lookup

    with pytest.raises(UnknownNameError, match="unknown colour 'mauve'; valid choices are: blue, red") as info:
        lookup("colour", "mauve", {"red": 1, "blue": 2})
    assert (info.value.kind, info.value.name) == ("colour", "mauve")


def test_backends_declare_their_options_as_their_constructors_take_them():
    """The runner reads a backend's class attributes, never its signature: they must agree."""
    import inspect

    from inference import BACKENDS

    assert set(BACKENDS) == {"svi", "nuts", "mc-dropout"}
    for name, backend in BACKENDS.items():
        params = inspect.signature(backend.__init__).parameters
        defaults = {k: p.default for k, p in params.items() if k not in ("self", "device", "seed", "progress", "threads")}
        assert backend.options == defaults, name
        assert backend.name == name and backend.budget_option in backend.options
        assert set(backend.replica_options) <= set(backend.options)
    assert [m.budget_unit for m in METHODS.values()] == ["steps"] * 4 + ["samples", "epochs"]
    # NUTS warms up for as long as it samples unless told otherwise
    assert METHODS["nuts"].backend_kwargs(30, {})["warmup"] == 30
    assert METHODS["nuts"].backend_kwargs(30, {"warmup": 5})["warmup"] == 5
    assert "warmup" not in METHODS["mc-dropout"].backend_kwargs(30, {})


def test_chunks_of_points_add_up_to_the_whole_evaluation():
    import torch

    import bnn_priors
    import inference
    import models

    g = torch.Generator().manual_seed(0)
    X = torch.randn(2, 30, 3, generator=g)
    y = X[..., 0].sin() + 0.1 * torch.randn(2, 30, generator=g)
    net = models.BayesianMLP(3, 1, hidden=(8,), prior=bnn_priors.prior("half-cauchy"), replicas=2)
    posterior = inference.SVI(steps=20, seed=[1, 2], progress=False).fit(net, X, y)
    whole = posterior.evaluation_sums(X, y, num_samples=7, seed=3)
    parts = [posterior.evaluation_sums(X[:, a:b], y[:, a:b], num_samples=7, seed=3) for a, b in ((0, 11), (11, 30))]
    assert whole["count"] == 30 and [p["count"] for p in parts] == [11, 19]
    for key in ("squared_error", "log_likelihood"):
        np.testing.assert_allclose(parts[0][key] + parts[1][key], whole[key], rtol=1e-5, atol=1e-5)
    metrics = posterior.evaluate(X, y, num_samples=7, seed=3, y_scale=[2.0, 3.0])
    scale = torch.tensor([2.0, 3.0])
    assert metrics["rmse"].tolist() == ((whole["squared_error"] / 30).sqrt() * scale).tolist()
    assert metrics["log_likelihood"].tolist() == (whole["log_likelihood"] / 30 - scale.log()).tolist()


# -------------------------------------------------------------------- runner
def test_plan_groups_runs_that_differ_only_in_split_or_seed():
    configs = expand_grid("diabetes", "0-4", noise="half-cauchy,rayleigh", seeds="0,1", budget=TINY)
    jobs = plan_jobs(configs, max_replicas=64)
    assert len(jobs) == 2 and all(len(j.configs) == 10 for j in jobs)
    assert len(plan_jobs(configs, max_replicas=4)) == 6


def test_on_a_cpu_jobs_batch_as_many_rows_per_step_as_pay():
    """On a CPU the default batches at most CPU_BATCH_ROWS rows per step: all replicas of a small set or
    of a mini-batch method, few of a large full-batch one; on a GPU up to DEFAULT_MAX_REPLICAS."""
    from bnn_priors.suite.loading import DataInfo
    from bnn_priors.suite.planning import CPU_BATCH_ROWS, DEFAULT_MAX_REPLICAS

    svi = expand_grid("diabetes", "0-9", noise="half-cauchy", seeds="0,1", budget=TINY)  # full batch
    mcd = expand_grid("diabetes", "0-9", noise="bernoulli", inference="mc-dropout", seeds="0,1", budget=TINY)
    large = {"diabetes": DataInfo("diabetes", 10, tuple((8000, 2000) for _ in range(20)))}
    small = {"diabetes": DataInfo("diabetes", 10, tuple((300, 100) for _ in range(20)))}
    per_job = CPU_BATCH_ROWS // 8000
    assert [len(j.configs) for j in plan_jobs(svi, large)] == [per_job] * (20 // per_job)
    assert [len(j.configs) for j in plan_jobs(mcd, large)] == [20]  # batches of 128 rows
    assert [len(j.configs) for j in plan_jobs(svi, small)] == [20]
    assert [len(j.configs) for j in plan_jobs(svi, large, device="cuda")] == [20]
    assert [len(j.configs) for j in plan_jobs(svi, large, max_replicas=3)] == [3] * 6 + [2]
    assert DEFAULT_MAX_REPLICAS >= 20


def test_batched_job_equals_one_at_a_time(tmp_path):
    # (Float rounding differs between batch shapes; Adam's first steps, about lr * sign(g), can
    # amplify it where a gradient is within rounding of zero, so the check uses a net and
    # seeds where that does not happen and compares to a tolerance.)
    configs = expand_grid("diabetes", "0-2", noise="half-cauchy", structure="ard-add",
                          arch="mlp-1x50", inference="svi", seeds="0,3", budget={"steps": 30})
    batched = run_suite(configs, tmp_path / "batched.sqlite", progress=False)
    single = run_suite(configs, tmp_path / "single.sqlite", progress=False, max_replicas=1)
    assert (batched.jobs, single.jobs) == (1, 6)
    a = read_results(tmp_path / "batched.sqlite", with_weights=True).set_index("config_hash")
    b = read_results(tmp_path / "single.sqlite", with_weights=True).set_index("config_hash").loc[a.index]
    assert (a["replicas"] == 6).all() and (b["replicas"] == 1).all()
    np.testing.assert_allclose(a["rmse"], b["rmse"], rtol=1e-5)
    np.testing.assert_allclose(a["log_likelihood"], b["log_likelihood"], rtol=1e-5)
    for h in a.index:
        np.testing.assert_allclose(npy_to_array(a.loc[h, "weights"]), npy_to_array(b.loc[h, "weights"]),
                                   rtol=1e-4, atol=1e-6)
    assert set(a["weights_layer"]) == {"layer0"}  # one hidden layer: the first weight matrix
    assert npy_to_array(a["weights"].iloc[0]).shape == (10, 50)
    row = a.iloc[0]
    assert row["status"] == "ok" and row["device"] == "cpu" and row["train_seconds"] > 0
    assert row["torch_version"] and row["pyro_version"] and row["python_version"] and row["bnn_priors_version"]
    assert json.loads(row["backend_info"])["steps"] == 30


def test_a_failing_run_is_recorded_and_the_suite_goes_on(tmp_path):
    good = expand_grid("diabetes", "0-1", noise="half-cauchy", budget={"steps": 10})
    bad = expand_grid("diabetes", "0-1", noise="half-cauchy", budget={"steps": 10}, options={"lr": 1e8})
    db = tmp_path / "r.sqlite"
    report = run_suite(bad + good, db, progress=False)
    assert report.ok == 2 and len(report.failed) == 2
    df = read_results(db, status=None).set_index("config_hash")
    assert len(df) == 4
    for cfg in bad:
        assert df.loc[cfg.hash, "status"] == "failed"
        assert df.loc[cfg.hash, "error"].startswith("FitDivergedError: SVI: the loss became NaN or infinite")
        assert pd.isna(df.loc[cfg.hash, "rmse"])
    assert (df.loc[[c.hash for c in good], "status"] == "ok").all()
    # a rerun retries the failed runs only
    again = run_suite(bad + good, db, progress=False)
    assert len(again.skipped) == 2 and len(again.failed) == 2


def test_data_errors_fail_before_any_work(tmp_path):
    from bnn_priors.errors import DataError

    configs = expand_grid("yacht", "0", budget=TINY)
    with pytest.raises(DataError, match="yacht"):
        run_suite(configs, tmp_path / "r.sqlite", progress=False, data_dir=tmp_path / "empty")
    assert not (tmp_path / "r.sqlite").exists() or len(read_results(tmp_path / "r.sqlite", status=None)) == 0


def test_local_processes_give_the_same_rows_as_in_process(tmp_path):
    configs = expand_grid("diabetes", "0-1", noise="half-cauchy,inverse-nakagami", inference="svi",
                          budget={"steps": 20})
    run_suite(configs, tmp_path / "inproc.sqlite", progress=False)
    report = run_suite(configs, tmp_path / "procs.sqlite", progress=False, workers=2)
    assert report.ok == 4 and report.jobs == 2
    cols = ["rmse", "log_likelihood", "status", "label", "dataset", "split", "noise", "seed", "replicas"]
    a = read_results(tmp_path / "inproc.sqlite").set_index("config_hash").sort_index()[cols]
    b = read_results(tmp_path / "procs.sqlite").set_index("config_hash").sort_index()[cols]
    pd.testing.assert_frame_equal(a, b)


# --------------------------------------------------------------------- plots
@pytest.fixture(scope="module")
def fitted_db(tmp_path_factory) -> Path:
    db = tmp_path_factory.mktemp("fitted") / "results.sqlite"
    configs = expand_grid("diabetes", "0-1", noise="inverse-nakagami", structure="ard,add",
                          arch="resnet-2x50", inference="svi-em", budget={"steps": 20})
    configs += expand_grid("diabetes", "0-1", noise="bernoulli", inference="mc-dropout", budget={"epochs": 2})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_suite(configs, db, progress=False)
    return db


def test_plots_write_pngs(fitted_db, tmp_path):
    out = plot_metric(fitted_db, tmp_path / "rmse.png")
    heat = plot_heatmaps(fitted_db, tmp_path / "heat.png")
    for path in (out, heat):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(InvalidParameterError, match="does not exist"):
        plot_metric(fitted_db, tmp_path / "missing" / "x.png")


def test_every_run_records_sample_mae_and_interval_coverage(fitted_db, tmp_path):
    """Beside RMSE and LL: the sample-MAE and, per nominal level, the count of test targets inside the
    central predictive interval (JSON); hold-out runs also the validation sample-MAE. For a point
    estimate (MAP-EM) the sample-MAE is the MAE, never above the RMSE."""
    from inference.common import Posterior

    df = read_results(fitted_db)
    assert len(df) == 6 and np.all(np.isfinite(df["sample_mae"])) and np.all(df["sample_mae"] > 0)
    for row in df.itertuples():
        record = json.loads(row.coverage)
        assert record["levels"] == list(Posterior.COVERAGE_LEVELS)
        inside = np.array(record["inside"])
        assert record["targets"] == 44 and np.all(np.diff(inside) >= 0) and 0 <= inside[0] and inside[-1] <= 44
    configs = expand_grid("diabetes", "0-1", noise="inverse-nakagami", inference="map-em", budget=TINY, holdout=0.2)
    run_suite(configs, tmp_path / "h.sqlite", progress=False)
    held = read_results(tmp_path / "h.sqlite")
    assert len(held) == 2 and np.all(held["sample_mae"] <= held["rmse"])
    assert np.all(np.isfinite(held["val_sample_mae"])) and np.all(held["val_sample_mae"] <= held["val_rmse"])
    assert df["val_sample_mae"].isna().all()  # no hold-out part, no validation figure


def test_results_table_from_a_results_file(fitted_db):
    df = read_results(fitted_db, with_weights=True)
    resnet = df[df["arch"] == "resnet-2x50"]
    assert set(resnet["weights_layer"]) == {"layer1"}  # the first hidden-to-hidden matrix
    assert npy_to_array(resnet["weights"].iloc[0]).shape == (50, 50)
    text = results_table(fitted_db)
    assert "SVI-EM (inverse-nakagami/ard, resnet-2x50)" in text
    assert "MC dropout (bernoulli/ard, mlp-1x50)" in text
    assert text.count("**") == 4  # one best cell and the best average rank


def test_nuts_runs_are_diagnosed_at_their_test_inputs(tmp_path):
    """The runner gives NUTS the test inputs (never their targets), and each run stores the
    R-hat and ESS of its predictions there, with compile and other options passed through."""
    configs = expand_grid("diabetes", "0-1", noise="half-cauchy", inference="nuts", arch="mlp-1x4", budget=TINY,
                          options={"num_chains": 2, "max_tree_depth": 3, "init_steps": 5})
    run_suite(configs, tmp_path / "r.sqlite", progress=False)
    df = read_results(tmp_path / "r.sqlite")
    assert (df["status"] == "ok").all() and len(df) == 2
    for text in df["backend_info"]:
        info = json.loads(text)
        assert info["predictive"]["points"] == 44  # diabetes: 442 points, 44 of them in the test split
        assert info["num_chains"] == 2 and info["compile"] is False
        assert {"r_hat_max", "ess_bulk_median", "ess_tail_min"} <= set(info["predictive"])
