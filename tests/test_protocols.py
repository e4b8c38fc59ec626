"""Tests of hold-out validation in the runner and of Gal & Ghahramani's (2016) grid-search protocol.

The hold-out split is checked against the index files read here directly (Gal's
``experiment.py``: train = the first ``int(0.8 n)`` training indices in file
order, validation = the rest); training uses yacht with tiny budgets.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import sqlite3
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bnn_priors.cli.main import main
from bnn_priors.data import load_dataset, stack_splits
from bnn_priors.errors import InvalidParameterError, UnknownNameError
from bnn_priors.suite import (
    RunConfig,
    comparison_table,
    expand_grid,
    gal_select,
    plan_jobs,
    preset_configs,
    read_results,
    results_table,
    run_suite,
)
from bnn_priors.suite.config import canonical_json
from bnn_priors.suite.data_options import (
    gal_backend_options,
    gal_weight_decay,
    resolve_job_options,
    resolve_options,
)
from bnn_priors.suite.presets import GAL_EPOCH_MULTIPLIER, GAL_EVAL_SAMPLES
from bnn_priors.suite.protocols import gal_summary
from bnn_priors.suite.store import COLUMNS, ResultsStore


def _gal_reference_split(uci_dir: Path, k: int):
    """Gal's experiment.py for split ``k`` of yacht, from the raw files: (train, validation, test) rows."""
    folder = uci_dir / "yacht"
    data = np.loadtxt(folder / "data.txt")
    features = np.loadtxt(folder / "index_features.txt").astype(int)
    target = int(np.loadtxt(folder / "index_target.txt"))
    X, y = data[:, features], data[:, target]
    index_train = np.loadtxt(folder / f"index_train_{k}.txt").astype(int)
    index_test = np.loadtxt(folder / f"index_test_{k}.txt").astype(int)
    X_train, y_train = X[index_train], y[index_train]
    num_training_examples = int(0.8 * X_train.shape[0])
    return (
        (X_train[:num_training_examples], y_train[:num_training_examples]),
        (X_train[num_training_examples:], y_train[num_training_examples:]),
        (X[index_test], y[index_test]),
    )


@pytest.fixture(scope="module")
def yacht(uci_dir):
    return load_dataset("yacht", data_dir=uci_dir)


# ------------------------------------------------------------ the hold-out split
@pytest.mark.parametrize("k", [0, 7])
def test_holdout_split_is_gals_first_80_last_20_in_file_order(yacht, uci_dir, k):
    (Xt, yt), (Xv, yv), (Xs, ys) = _gal_reference_split(uci_dir, k)
    assert (len(yt), len(yv), len(ys)) == (221, 56, 31)  # int(0.8 * 277) = 221
    raw = yacht.split(k, standardize=False, holdout=0.2)
    np.testing.assert_array_equal(raw.X_train, Xt)
    np.testing.assert_array_equal(raw.y_train, yt)
    np.testing.assert_array_equal(raw.X_val, Xv)
    np.testing.assert_array_equal(raw.y_val, yv)
    np.testing.assert_array_equal(raw.X_test, Xs)
    np.testing.assert_array_equal(raw.y_test, ys)
    assert yacht.split(k).X_val is None  # no hold-out unless asked for


def test_holdout_is_standardized_with_the_smaller_training_part(yacht, uci_dir):
    (Xt, yt), (Xv, yv), (Xs, ys) = _gal_reference_split(uci_dir, 3)
    part = yacht.split(3, holdout=0.2)
    # Gal's net.py: np.std (ddof=0) of the 80% part, constant columns left unscaled
    x_std = np.std(Xt, 0)
    x_std[x_std == 0] = 1
    np.testing.assert_allclose(part.x_mean, Xt.mean(0))
    np.testing.assert_allclose(part.x_std, x_std)
    assert part.y_mean == pytest.approx(yt.mean()) and part.y_std == pytest.approx(np.std(yt))
    full = yacht.split(3)
    assert part.y_std != pytest.approx(full.y_std)  # not the whole training split's
    np.testing.assert_allclose(part.X_val, (Xv - Xt.mean(0)) / x_std)
    np.testing.assert_allclose(part.y_val * part.y_std + part.y_mean, yv)
    np.testing.assert_allclose(part.y_test * part.y_std + part.y_mean, ys)
    stacked = stack_splits(yacht, [0, 3], holdout=0.2)
    assert stacked.X_train.shape == (2, 221, 6) and stacked.X_val.shape == (2, 56, 6)
    assert stacked.y_val.shape == (2, 56) and stacked.X_test.shape == (2, 31, 6)
    np.testing.assert_allclose(stacked.y_val[1], part.y_val)
    assert stack_splits(yacht, [0]).X_val is None
    for bad in (0.0, 1.0, 1.5, -0.2, 0.999):
        with pytest.raises(InvalidParameterError, match="holdout"):
            yacht.split(0, holdout=bad)
    with pytest.raises(InvalidParameterError, match="not both"):
        yacht.split(0, validation=0.2, holdout=0.2)
    assert yacht.split(0, validation=0.2).X_test.shape == (55, 6)  # the random validation= is unchanged


def test_holdout_is_hashed_only_when_set():
    base = dict(dataset="yacht", split=0, noise="bernoulli", structure="ard", arch="mlp-1x50",
                inference="mc-dropout", budget=5)
    plain = RunConfig(**base)
    assert "holdout" not in plain.hashed_fields()  # hashes of earlier results are unchanged
    fields = {"v": 1, **{k: v for k, v in plain.hashed_fields().items()}}
    assert plain.hash == hashlib.sha256(canonical_json(fields).encode()).hexdigest()
    held = RunConfig(**base, holdout=0.2)
    assert held.hashed_fields()["holdout"] == 0.2 and held.hash != plain.hash
    assert held.method_key != plain.method_key and held.group_key() != plain.group_key()
    assert RunConfig.from_dict(json.loads(json.dumps(held.to_dict()))) == held
    assert RunConfig(**base, holdout=np.float64(0.2)).hash == held.hash
    for bad in (0, 1, 1.2, True, "0.2", float("nan")):
        with pytest.raises(InvalidParameterError, match="holdout"):
            RunConfig(**base, holdout=bad)
    assert {c.holdout for c in expand_grid("yacht", "0-1", holdout=0.2)} == {0.2}


# -------------------------------------------------------------- hold-out runs
def test_a_holdout_run_records_validation_and_test_metrics(uci_dir, tmp_path, monkeypatch):
    import bnn_priors.suite.evaluation as evaluation

    db = tmp_path / "r.sqlite"
    held = expand_grid("yacht", "0-1", noise="bernoulli", inference="mc-dropout", budget={"epochs": 3},
                       prior={"p": 0.05}, holdout=0.2, eval_samples=20)
    plain = expand_grid("yacht", "0-1", noise="bernoulli", inference="mc-dropout", budget={"epochs": 3},
                        prior={"p": 0.05}, eval_samples=20)
    report = run_suite(held + plain, db, data_dir=uci_dir, progress=False)
    assert report.ok == 4 and report.jobs == 2
    df = read_results(db).set_index("config_hash")
    h, p = df.loc[[c.hash for c in held]], df.loc[[c.hash for c in plain]]
    assert (h["holdout"] == 0.2).all() and p["holdout"].isna().all()
    for col in ("val_rmse", "val_log_likelihood", "rmse", "log_likelihood"):
        assert np.isfinite(h[col]).all()
    assert p["val_rmse"].isna().all() and p["val_log_likelihood"].isna().all()
    assert not np.allclose(h["val_rmse"], h["rmse"])
    assert not np.allclose(h["rmse"], p["rmse"])  # trained on 221, not 277, points
    # evaluation in chunks of points gives the same metrics (the same function samples)
    monkeypatch.setattr(evaluation, "EVAL_CHUNK_ELEMENTS", 20 * 50 * 7)  # 7 points a chunk
    run_suite(held, tmp_path / "chunked.sqlite", data_dir=uci_dir, progress=False)
    c = read_results(tmp_path / "chunked.sqlite").set_index("config_hash").loc[h.index]
    for col in ("val_rmse", "val_log_likelihood", "rmse", "log_likelihood"):
        np.testing.assert_allclose(c[col], h[col], rtol=1e-5)
    # tables of the validation metrics
    text = results_table(db, split="validation")
    assert "Validation RMSE" in text and "| yacht" in text
    t = comparison_table(read_results(db), "ll", split="validation")
    assert set(t.methods) == {"MC dropout (bernoulli(p=0.05)/ard, mlp-1x50)"}  # the hold-out runs only
    assert t.cells[("yacht", t.methods[0])][0] == pytest.approx(h["val_log_likelihood"].mean())
    with pytest.raises(InvalidParameterError, match="test-set figures"):
        comparison_table(read_results(db), "rmse", references=["gal2016"], split="validation")
    with pytest.raises(UnknownNameError, match="validation"):
        comparison_table(read_results(db), "rmse", split="train")


def test_an_older_results_file_gets_the_new_columns(tmp_path):
    db = tmp_path / "old.sqlite"
    old = [(n, k) for n, k in COLUMNS if n not in ("holdout", "val_rmse", "val_log_likelihood")]
    conn = sqlite3.connect(db)
    cols = ", ".join(f"{n} {k}" for n, k in old)
    conn.execute(f"CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT, {cols})")
    conn.execute("PRAGMA user_version = 1")
    conn.execute("INSERT INTO runs (config_hash, config, dataset, split, noise, structure, arch, inference, budget, "
                 "seed, status, rmse, log_likelihood, timestamp, label) VALUES "
                 "('h', '{}', 'yacht', 0, 'bernoulli', 'ard', 'mlp-1x50', 'mc-dropout', 5, 0, 'ok', 1.0, -1.0, 't', 'A')")
    conn.commit()
    conn.close()
    df = read_results(db)  # reading leaves the file alone; the new columns are empty
    assert df["val_rmse"].isna().all() and df["holdout"].isna().all() and df["rmse"].tolist() == [1.0]
    with ResultsStore(db) as store:  # opening it for writing adds them
        present = {r[1] for r in store.conn.execute("PRAGMA table_info(runs)")}
        assert {"holdout", "val_rmse", "val_log_likelihood"} <= present
        assert len(store) == 1


# ------------------------------------------------------------------- gal2016
def test_gal_weight_decay_and_precision_are_gals_formulas():
    # reg = l^2 (1 - p) / (2 N tau): l = 0.01, p = 0.05, N = 221, tau = 0.5
    assert gal_weight_decay(0.05, 0.5, 221) == pytest.approx(1e-4 * 0.95 / 221, rel=1e-12)
    opts = gal_backend_options(0.05, 0.5, 221, [2.0, 3.0])
    assert opts["weight_decay"] == pytest.approx(4.298642533936652e-07, rel=1e-12)
    assert opts["precision"] == pytest.approx([2.0, 4.5])  # tau * y_std^2 per replica
    assert gal_backend_options(0.05, 0.5, 221, [2.0])["precision"] == pytest.approx(2.0)
    cfg = RunConfig(dataset="yacht", split=0, noise="bernoulli", structure="ard", arch="mlp-1x50",
                    inference="mc-dropout", budget=5, prior={"p": 0.1},
                    options={"gal_tau": 0.25, "length_scale": 0.02, "lr": 0.001}, holdout=0.2)
    resolved = resolve_options(cfg, 100, [4.0, 0.5])
    assert "gal_tau" not in resolved and resolved["lr"] == 0.001 and resolved["length_scale"] == 0.02
    assert resolved["weight_decay"] == pytest.approx(0.02**2 * 0.9 / (2 * 100 * 0.25), rel=1e-12)
    assert resolved["precision"] == pytest.approx([0.25 * 16.0, 0.25 * 0.25])
    with pytest.raises(InvalidParameterError, match="gal_tau"):
        resolve_options(RunConfig(**{**cfg.hashed_fields(), "noise": "gaussian", "prior": {}}), 100, [1.0])
    with pytest.raises(InvalidParameterError, match="leave weight_decay out"):
        resolve_options(RunConfig(**{**cfg.hashed_fields(), "options": {"gal_tau": 1.0, "weight_decay": 0.1}}),
                        100, [1.0])


def test_the_runner_passes_gals_decay_and_precision_to_mcdropout(uci_dir, tmp_path, monkeypatch):
    import functools

    import inference.mc_dropout as mc

    seen = []
    original = mc.MCDropout.__init__

    @functools.wraps(original)
    def spy(self, *args, **kwargs):
        seen.append(kwargs)
        original(self, *args, **kwargs)

    monkeypatch.setattr(mc.MCDropout, "__init__", spy)
    configs = [c for c in preset_configs("gal2016", datasets="yacht", splits="0-2", budget={"epochs": 2},
                                         eval_samples=10, data_dir=str(uci_dir))
               if c.prior["p"] == 0.05 and c.options["gal_tau"] == 0.5]
    assert len(configs) == 3
    report = run_suite(configs, tmp_path / "r.sqlite", data_dir=uci_dir, progress=False)
    assert report.ok == 3 and report.jobs == 1  # the three splits in one job, a precision each
    fit = [kw for kw in seen if kw.get("epochs") == 2 and isinstance(kw.get("seed"), list)]
    assert len(fit) == 1
    y_std = [np.std(_gal_reference_split(uci_dir, k)[0][1]) for k in range(3)]
    assert fit[0]["weight_decay"] == pytest.approx(0.01**2 * (1 - 0.05) / (2 * 221 * 0.5), rel=1e-12)
    assert fit[0]["precision"] == pytest.approx([0.5 * s**2 for s in y_std], rel=1e-12)
    assert (fit[0]["batch_size"], fit[0]["lr"], fit[0]["length_scale"]) == (128, 1e-3, 1e-2)
    info = read_results(tmp_path / "r.sqlite").sort_values("split")["backend_info"].map(json.loads)
    assert [i["precision"] for i in info] == pytest.approx([0.5 * s**2 for s in y_std], rel=1e-5)


def test_a_gal_grid_batched_as_one_model_gives_each_runs_numbers(uci_dir, tmp_path, monkeypatch):
    """Two dropout rates x two taus x two splits in one job of eight replicas (a rate, a decay and a
    precision per replica) give the numbers of the four (p, tau) jobs of two splits each."""
    from bnn_priors.suite import planning

    configs = [c for c in preset_configs("gal2016", datasets="yacht", splits="0-1", budget={"epochs": 3},
                                         eval_samples=10, data_dir=str(uci_dir))
               if c.prior["p"] in (0.005, 0.05) and c.options["gal_tau"] in (0.25, 0.5)]
    assert len(configs) == 8
    batched = run_suite(configs, tmp_path / "one.sqlite", data_dir=uci_dir, progress=False, max_replicas=8)
    assert batched.ok == 8 and batched.jobs == 1
    monkeypatch.setattr(planning, "batch_key", lambda c: c.group_key())  # one job per (p, tau), as before
    apart = run_suite(configs, tmp_path / "apart.sqlite", data_dir=uci_dir, progress=False, max_replicas=8)
    assert apart.ok == 8 and apart.jobs == 4
    one, four = (read_results(tmp_path / f).set_index("config_hash").sort_index() for f in ("one.sqlite", "apart.sqlite"))
    assert (one["replicas"] == 8).all() and (four["replicas"] == 2).all()
    for column in ("rmse", "log_likelihood", "val_rmse", "val_log_likelihood"):
        np.testing.assert_allclose(one[column], four[column], rtol=1e-4)
    info = one["backend_info"].map(json.loads)
    p = one["config"].map(lambda c: json.loads(c)["prior"]["p"])
    assert [i["noise_params"]["p"] for i in info] == list(p)
    assert [i["noise_mean"]["output"] for i in info] == pytest.approx(list(1 - p))


def test_runs_with_and_without_gal_tau_do_not_share_a_job(uci_dir):
    gal = [c for c in preset_configs("gal2016", datasets="yacht", splits="0", budget={"epochs": 2},
                                     data_dir=str(uci_dir)) if c.prior["p"] == 0.05]
    plain = RunConfig(**{**gal[0].hashed_fields(), "options": {k: v for k, v in gal[0].options.items() if k != "gal_tau"}})
    jobs = plan_jobs([*gal, plain], max_replicas=64)
    assert sorted(len(j.configs) for j in jobs) == [1, len(gal)]


def test_a_job_whose_backend_takes_an_option_once_for_all_is_refused(uci_dir):
    configs = [c for c in preset_configs("gal2016", datasets="yacht", splits="0", budget={"epochs": 2},
                                         data_dir=str(uci_dir))][:4]
    assert len({(c.prior["p"], c.options["gal_tau"]) for c in configs}) == 4
    options = resolve_job_options(configs, 100, [1.0] * 4, ("weight_decay", "precision", "noise_params"))
    assert isinstance(options["precision"], list) and len(options["precision"]) == 4
    with pytest.raises(InvalidParameterError, match="differ in option precision"):
        resolve_job_options(configs, 100, [1.0] * 4, ("weight_decay",))
    same_tau = [c for c in preset_configs("gal2016", datasets="yacht", splits="0", budget={"epochs": 2},
                                          data_dir=str(uci_dir)) if c.options["gal_tau"] == configs[0].options["gal_tau"]]
    with pytest.raises(InvalidParameterError, match="differ in the noise's p"):
        resolve_job_options(same_tau, 100, [1.0] * len(same_tau), ("weight_decay", "precision"))


def test_plan_falls_back_to_one_split_per_job_without_per_replica_precision(uci_dir, monkeypatch):
    from inference import MCDropout

    configs = preset_configs("gal2016", datasets="yacht", splits="0-3", budget={"epochs": 2},
                             seeds="0,1", data_dir=str(uci_dir))
    assert len(configs) == 12 * 4 * 2
    jobs = plan_jobs(configs, max_replicas=96)
    assert len(jobs) == 1  # the whole grid as one model: a dropout rate and a precision per replica
    assert "and 11 other settings" in jobs[0].describe()
    assert [len(j.configs) for j in plan_jobs(configs)] == [64, 32]  # the CPU's default cap
    monkeypatch.setattr(MCDropout, "replica_options", ("weight_decay", "precision"))  # one dropout rate for all
    assert [len(j.configs) for j in plan_jobs(configs)] == [24] * 4  # per p: 3 taus x 4 splits x 2 seeds
    monkeypatch.setattr(MCDropout, "replica_options", ("weight_decay",))  # a precision for all replicas only
    jobs = plan_jobs(configs)
    assert len(jobs) == 12 * 4 and all(len({c.split for c in j.configs}) == 1 for j in jobs)


def test_gal2016_preset_follows_each_data_sets_files(uci_dir):
    configs = preset_configs("gal2016", data_dir=str(uci_dir))
    by_set = pd.DataFrame([{
        "dataset": c.dataset, "split": c.split, "p": c.prior["p"], "tau": c.options["gal_tau"], "arch": c.arch,
        "budget": c.budget, "holdout": c.holdout, "eval_samples": c.eval_samples, "noise": c.noise,
        "structure": c.structure, "inference": c.inference, "options": json.dumps(c.options),
    } for c in configs])
    assert set(by_set["dataset"]) == {"boston", "concrete", "energy", "kin8nm", "naval", "power", "protein",
                                      "wine", "yacht"}
    for name, rows in by_set.groupby("dataset"):
        folder = uci_dir / name
        grid = {(p, t) for p in np.loadtxt(folder / "dropout_rates.txt") for t in np.loadtxt(folder / "tau_values.txt")}
        n_splits = int(np.loadtxt(folder / "n_splits.txt"))
        assert set(zip(rows["p"], rows["tau"])) == grid and len(rows) == len(grid) * n_splits
        assert set(rows["arch"]) == {f"mlp-1x{int(np.loadtxt(folder / 'n_hidden.txt'))}"}
        assert set(rows["budget"]) == {int(np.loadtxt(folder / "n_epochs.txt")) * GAL_EPOCH_MULTIPLIER}
    assert set(by_set[by_set.dataset == "protein"]["arch"]) == {"mlp-1x100"}
    assert set(by_set[by_set.dataset == "boston"]["budget"]) == {40 * GAL_EPOCH_MULTIPLIER} and GAL_EPOCH_MULTIPLIER == 500
    assert set(by_set["holdout"]) == {0.2} and set(by_set["eval_samples"]) == {GAL_EVAL_SAMPLES} == {1000}
    assert set(zip(by_set.noise, by_set.structure, by_set.inference)) == {("bernoulli", "ard", "mc-dropout")}
    opts = json.loads(by_set["options"].iloc[0])
    assert (opts["batch_size"], opts["lr"], opts["length_scale"]) == (128, 1e-3, 1e-2)
    small = preset_configs("gal2016", datasets="yacht", splits="0-1", budget={"epochs": 5}, eval_samples=50,
                           data_dir=str(uci_dir))
    assert {(c.budget, c.eval_samples, c.holdout) for c in small} == {(5, 50, 0.2)} and len(small) == 24


@pytest.fixture
def grid_runs() -> pd.DataFrame:
    """Two data sets, two splits, p x tau = 2 x 2; the best validation LL is never the best test LL."""
    rows = []

    def add(dataset, split, p, tau, val_ll, rmse, ll, **kw):
        rows.append({"dataset": dataset, "split": split, "p": p, "tau": tau, "seed": 0, "status": "ok",
                     "val_log_likelihood": val_ll, "val_rmse": -val_ll, "rmse": rmse, "log_likelihood": ll, **kw})

    #                  p     tau   val LL  test RMSE  test LL
    add("yacht", 0, 0.005, 0.25, -1.0, 0.9, -1.6)
    add("yacht", 0, 0.005, 0.50, -1.5, 0.5, -1.1)   # best test, not chosen
    add("yacht", 0, 0.010, 0.25, -0.8, 0.7, -1.3)   # chosen
    add("yacht", 0, 0.010, 0.50, -2.0, 0.6, -1.2)
    add("yacht", 1, 0.005, 0.25, -0.9, 1.1, -1.9)   # tied: the first in grid order is chosen
    add("yacht", 1, 0.005, 0.50, -1.2, 0.4, -1.0)
    add("yacht", 1, 0.010, 0.25, -0.9, 0.8, -1.4)   # tied, later in the grid
    add("yacht", 1, 0.010, 0.50, 5.0, 0.1, 0.0, status="failed")  # failed runs never count
    add("boston", 0, 0.005, 0.1, -2.5, 3.0, -2.5)
    add("boston", 0, 0.005, 0.1, -2.1, 2.0, -2.3, seed=1)  # seeds averaged: val -2.3, RMSE 2.5, LL -2.4
    add("boston", 0, 0.01, 0.1, -2.35, 2.2, -2.2)
    add("boston", 1, 0.005, 0.1, np.nan, 1.0, -1.0)  # no validation metric: not a candidate
    add("boston", 1, 0.01, 0.1, -2.6, 3.4, -2.6)
    return pd.DataFrame(rows)


def test_gal_select_picks_by_validation_ll_and_reports_test_metrics(grid_runs):
    chosen = gal_select(grid_runs).set_index(["dataset", "split"])
    assert chosen.loc[("yacht", 0), ["p", "tau"]].tolist() == [0.01, 0.25]
    assert chosen.loc[("yacht", 0), ["rmse", "log_likelihood"]].tolist() == [0.7, -1.3]
    assert chosen.loc[("yacht", 1), ["p", "tau"]].tolist() == [0.005, 0.25]
    assert chosen.loc[("yacht", 1), "rmse"] == 1.1
    assert chosen.loc[("boston", 0), ["p", "tau"]].tolist() == [0.005, 0.1]
    assert chosen.loc[("boston", 0), ["val_log_likelihood", "rmse", "log_likelihood"]].tolist() == pytest.approx(
        [-2.3, 2.5, -2.4])
    assert chosen.loc[("boston", 1), ["p", "rmse"]].tolist() == [0.01, 3.4]
    summary = gal_summary(gal_select(grid_runs)).set_index("dataset")
    assert list(summary.index) == ["boston", "yacht"]  # registry order
    assert summary.loc["yacht", "rmse_mean"] == pytest.approx(0.9)
    assert summary.loc["yacht", "rmse_se"] == pytest.approx(np.std([0.7, 1.1], ddof=1) / math.sqrt(2))
    assert summary.loc["yacht", "ll_mean"] == pytest.approx(-1.6)
    assert summary.loc["yacht", ["published_rmse_mean", "published_ll_mean"]].tolist() == [0.67, -1.25]
    assert summary.loc["yacht", "choices"] == "p=0.005 tau=0.25: 1; p=0.01 tau=0.25: 1"
    assert summary.loc["boston", "published_ll_mean"] == -2.40


def test_gal_select_reads_p_and_tau_from_the_stored_configs(grid_runs):
    runs = grid_runs.copy()
    runs["config"] = [json.dumps({"prior": {"p": p}, "options": {"gal_tau": t, "lr": 0.001}, "budget": 400})
                      for p, t in zip(runs["p"], runs["tau"])]
    other_budget = runs[runs["dataset"] == "yacht"].copy()
    other_budget["config"] = other_budget["config"].str.replace('"budget": 400', '"budget": 40')
    other_budget["val_log_likelihood"] = -other_budget["val_log_likelihood"]
    both = pd.concat([runs, other_budget]).drop(columns=["p", "tau"])
    chosen = gal_select(both)
    assert len(chosen) == 6 and chosen.groupby(["dataset", "setting"]).ngroups == 3  # each budget on its own
    summary = gal_summary(chosen)
    assert set(summary["dataset"]) == {"boston", "yacht [budget=40]", "yacht [budget=400]"}


# ------------------------------------------------------------------------- CLI
def test_bench_gal2016_then_table_protocol(cli, offline_env, uci_dir, tmp_path, capsys):
    db = tmp_path / "results.sqlite"
    proc = subprocess.run(
        [*cli, "bench", "--preset", "gal2016", "--datasets", "yacht", "--splits", "0-1", "--epochs", "5",
         "--eval-samples", "50", "--data-dir", str(uci_dir), "--results", str(db), "--quiet"],
        capture_output=True, text=True, env=offline_env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "| yacht" in proc.stdout and "chosen (p, tau)" in proc.stdout
    df = read_results(db)
    assert len(df) == 24 and (df["holdout"] == 0.2).all() and (df["budget"] == 5).all()
    assert np.isfinite(df["val_log_likelihood"]).all()
    assert main(["table", "--results", str(db), "--protocol", "gal2016"]) == 0
    out = capsys.readouterr().out
    header, rule, row = out.splitlines()[:3]
    assert "test RMSE" in header and "RMSE [Gal & Ghahramani 2016] (published)" in header and "test LL" in header
    assert set(rule) <= set("|-: ")
    assert row.startswith("| yacht") and "0.67 ± 0.05" in row and "-1.25 ± 0.01" in row and ": " in row
    chosen = gal_select(df)
    assert len(chosen) == 2
    counts = sum(int(part.rsplit(": ", 1)[1]) for part in row.split("|")[-2].strip().split("; "))
    assert counts == 2  # each split chose one (p, tau)
    assert main(["table", "--results", str(db), "--protocol", "gal2016", "--format", "csv"]) == 0
    csv = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert csv.loc[0, "dataset"] == "yacht" and csv.loc[0, "n"] == 2
    assert csv.loc[0, "rmse_mean"] == pytest.approx(chosen["rmse"].mean())
    assert csv.loc[0, "ll_mean"] == pytest.approx(chosen["log_likelihood"].mean())
    assert main(["table", "--results", str(db), "--split", "validation", "--metric", "ll"]) == 0
    assert "Validation log-likelihood" in capsys.readouterr().out
    for args, expected in ((["--protocol", "gal2016", "--split", "validation"], "leave out --split validation"),
                           (["--protocol", "nalisnick2019"], "unknown protocol"),
                           (["--split", "validation", "--reference", "gal2016"], "test-set figures")):
        assert main(["table", "--results", str(db), *args]) == 2
        assert expected in capsys.readouterr().err


def test_bench_holdout_option(tmp_path, capsys):
    db = tmp_path / "r.sqlite"
    rc = main(["bench", "--datasets", "diabetes", "--splits", "0-1", "--inference", "mc-dropout", "--noise",
               "bernoulli", "--epochs", "2", "--eval-samples", "10", "--holdout", "0.2", "--results", str(db),
               "--quiet", "--split", "validation"])
    out = capsys.readouterr().out
    assert rc == 0 and "Validation RMSE" in out and "| diabetes" in out
    df = read_results(db)
    assert (df["holdout"] == 0.2).all() and np.isfinite(df["val_rmse"]).all()
    assert main(["bench", "--datasets", "diabetes", "--holdout", "1.5", "--results", str(db)]) == 2
    assert "holdout must be a fraction" in capsys.readouterr().err
