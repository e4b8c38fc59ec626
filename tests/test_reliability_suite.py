"""Faults a user of the suite met: warnings that never reached the screen, a thread count of 0
taken for 1, a narrowed preset that silently ran other configurations, rows that did not say
on what floating-point path they were computed.

Each test reproduces one item of the reliability report (issue 14: items 3, 8, 10 and 11) and
checks the behaviour that replaced it.
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import warnings
from pathlib import Path

import pytest
import torch

from bnn_priors.errors import InvalidParameterError, UnknownNameError
from bnn_priors.suite import expand_grid, read_results, run_suite
from bnn_priors.suite.planning import Job
from bnn_priors.suite.presets import NALISNICK_MAP_OPTIONS, NALISNICK_MAP_STEPS, preset_configs
from bnn_priors.suite.provenance import failed_rows
from bnn_priors.suite.store import COLUMNS, ResultsStore

COMMITTED = Path(__file__).resolve().parents[1] / "results" / "nalisnick2019.sqlite"


def run(cli, *args, env=None, timeout=300):
    return subprocess.run([*cli, *map(str, args)], capture_output=True, text=True, env=env, timeout=timeout)


def lines(text: str, prefix: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(prefix)]


# ------------------------------------------------------- item 3: backend warnings
MC_DROPOUT_HALF_CAUCHY = ["--datasets", "diabetes", "--splits", "0-1", "--noise", "half-cauchy", "--inference",
                          "mc-dropout", "--epochs", "2", "--eval-samples", "5", "--quiet"]


def _expected_warnings(tmp_path) -> set[str]:
    """The lines the MC dropout half-Cauchy runs must print: the messages stored in their rows."""
    runs = read_results(tmp_path / "r.sqlite", status=None)  # ok, or failed as blown up: the rows keep the warnings
    assert len(runs) == 2
    messages = {m for info in runs["backend_info"] for m in json.loads(info)["warnings"]}
    assert messages and all("E[lambda^2] = inf" in m for m in messages)
    return {f"bnn-priors: warning: MC dropout (half-cauchy/ard, mlp-1x50) on diabetes: {m}" for m in messages}


@pytest.mark.parametrize("workers", [1, 2])
def test_bench_prints_each_backend_warning_once_naming_the_configuration(cli, offline_env, tmp_path, workers):
    """Two runs (two jobs with ``--max-replicas 1``, in worker processes with ``--workers 2``) give the
    same warnings: each is printed once, as one line. (Whether the runs then count as blown up is the
    blow-up check's business: exit code 0 or 1.)"""
    proc = run(cli, "bench", *MC_DROPOUT_HALF_CAUCHY, "--max-replicas", "1", "--workers", workers,
               "--results", tmp_path / "r.sqlite", env=offline_env)
    assert proc.returncode in (0, 1), proc.stderr
    printed = lines(proc.stderr, "bnn-priors: warning:")
    assert sorted(printed) == sorted(_expected_warnings(tmp_path)), proc.stderr
    assert len(printed) == len(set(printed))


def test_the_report_carries_the_distinct_warnings(tmp_path, offline_env):
    configs = expand_grid("diabetes", "0-1", noise="half-cauchy,bernoulli", inference="mc-dropout",
                          budget={"epochs": 2}, eval_samples=5)
    report = run_suite(configs, tmp_path / "r.sqlite", progress=False, max_replicas=1)
    assert report.ok + len(report.failed) == 4 and report.jobs == 4
    lines_ = report.warning_lines()
    assert lines_ and all(line.startswith("MC dropout (half-cauchy/ard, mlp-1x50) on diabetes: MCDropout: ")
                          for line in lines_)
    assert len(lines_) == len(set(lines_))  # two runs, one line per distinct message


# ------------------------------------------------------------ item 8: threads
@pytest.mark.parametrize("threads", ["0", "-3"])
def test_bench_refuses_a_thread_count_below_one(cli, offline_env, tmp_path, threads):
    proc = run(cli, "bench", "--datasets", "diabetes", "--splits", "0", "--steps", "2", "--threads", threads,
               "--results", tmp_path / "r.sqlite", "--quiet", env=offline_env)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"bnn-priors: error: --threads must be a positive integer, got {threads}"
    assert not (tmp_path / "r.sqlite").exists()


@pytest.mark.parametrize("threads", [0, -1, 1.5, True, "2"])
def test_run_suite_refuses_a_bad_thread_count(tmp_path, threads):
    configs = expand_grid("diabetes", "0", budget={"steps": 2})
    with pytest.raises(InvalidParameterError, match=f"threads must be a positive integer or None, got {re.escape(repr(threads))}$"):
        run_suite(configs, tmp_path / "r.sqlite", progress=False, threads=threads)
    assert not (tmp_path / "r.sqlite").exists()


# ---------------------------------------------------------- item 10: presets
def test_a_narrowed_preset_reruns_its_committed_rows():
    """``--preset nalisnick2019 --datasets yacht --inference map-em`` is the preset's three MAP-EM
    columns on yacht: the committed rows' configurations (hashes) and labels, lr 0.01, no warning."""
    conn = sqlite3.connect(f"file:{COMMITTED}?mode=ro", uri=True)
    try:
        committed = dict(conn.execute(
            "SELECT config_hash, label FROM runs WHERE dataset = 'yacht' AND inference = 'map-em'").fetchall())
    finally:
        conn.close()
    assert len(committed) == 60
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        configs = preset_configs("nalisnick2019", datasets="yacht", inference="map-em")
    assert {c.hash: c.label for c in configs} == committed
    assert {c.noise for c in configs} == {"inverse-nakagami"}
    assert {(c.budget, c.options["lr"]) for c in configs} == {(NALISNICK_MAP_STEPS, NALISNICK_MAP_OPTIONS["lr"])}
    # any spelling, and several axes at once: the intersection of the preset's configurations
    ard = preset_configs("nalisnick2019", datasets="yacht", inference="MAP_EM,svi-em", structure="ARD",
                         noise="inverse-nakagami")
    assert {(c.inference, c.noise, c.structure) for c in ard} == {("map-em", "inverse-nakagami", "ard"),
                                                                  ("svi-em", "inverse-nakagami", "ard")}
    assert all(c.hash in committed for c in ard if c.inference == "map-em")


@pytest.mark.parametrize(("axes", "message"), [
    ({"inference": "svi"},
     "preset nalisnick2019 has no run with inference svi; its inference values: mc-dropout, svi-em, map-em"),
    ({"noise": "rayleigh,half-cauchy"},
     "preset nalisnick2019 has no run with noise rayleigh; its noise values: bernoulli, inverse-nakagami, "
     "half-cauchy"),
    ({"arch": "mlp-2x50"}, "preset nalisnick2019 has no run with arch mlp-2x50; its arch values: mlp-1x50, "
     "resnet-2x50"),
    ({"inference": "map-em", "noise": "half-cauchy"},
     "preset nalisnick2019 has no run with noise half-cauchy and inference map-em; its runs: "
     "bernoulli/ard mlp-1x50 mc-dropout, inverse-nakagami/ard resnet-2x50 svi-em,"),
])
def test_narrowing_a_preset_to_what_it_does_not_have_is_an_error(axes, message):
    with pytest.raises(InvalidParameterError) as info:
        preset_configs("nalisnick2019", datasets="yacht", **axes)
    assert str(info.value).startswith(message), str(info.value)
    with pytest.raises(UnknownNameError, match="unknown prior 'cauchy'"):
        preset_configs("nalisnick2019", datasets="yacht", noise="cauchy")


def test_a_setting_that_changes_a_preset_run_says_so_in_one_line():
    with pytest.warns(UserWarning) as record:
        configs = preset_configs("nalisnick2019", datasets="yacht", splits="0", inference="map-em",
                                 budget={"steps": 500, "epochs": 7}, options={"lr": 0.1}, seeds="0,1")
    assert len(record) == 1
    message = str(record[0].message)
    assert "\n" not in message
    assert message == (
        "these settings change runs of preset nalisnick2019, which are then not the preset's: "
        "steps 500 (the preset's map-em: 3000); option lr=0.1 (the preset's map-em: lr=0.01); "
        "seed 1 (the preset's map-em: 0)"
    )
    assert len(configs) == 6 and {c.options["lr"] for c in configs} == {0.1}
    assert all(c.label.endswith("MAP-EM, resnet-2x50)") for c in configs)
    # the preset's own values are no change
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        preset_configs("nalisnick2019", datasets="yacht", inference="map-em", budget={"steps": 3000},
                       options={"lr": 0.01}, seeds="0")


def test_bench_with_a_narrowed_and_changed_preset(cli, offline_env, tmp_path):
    proc = run(cli, "bench", "--preset", "nalisnick2019", "--datasets", "yacht", "--inference", "svi",
               "--results", tmp_path / "r.sqlite", env=offline_env)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("bnn-priors: error: preset nalisnick2019 has no run with inference svi; "
                                   "its inference values: mc-dropout, svi-em, map-em")
    proc = run(cli, "bench", "--preset", "quick", "--inference", "mc-dropout", "--splits", "0", "--epochs", "2",
               "--eval-samples", "5", "--results", tmp_path / "r.sqlite", "--quiet", env=offline_env)
    assert proc.returncode == 0, proc.stderr
    assert lines(proc.stderr, "bnn-priors: warning:") == [
        "bnn-priors: warning: these settings change runs of preset quick, which are then not the preset's: "
        "epochs 2 (the preset's mc-dropout: 200); eval_samples 5 (the preset's mc-dropout: 100)"
    ]
    (row,) = read_results(tmp_path / "r.sqlite").itertuples()
    assert json.loads(row.config)["prior"] == {"p": 0.05}  # the preset's dropout rate kept


# ------------------------------------------------- item 11: the floating-point path
PATH_COLUMNS = ("cpu_model", "cpu_capability", "torch_threads", "blas")


def _cpu_model() -> str | None:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    names = [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")]
    return " ".join(names[0].split()) if names else None


@pytest.mark.parametrize("threads", [1, 2])
def test_every_row_records_its_floating_point_path(tmp_path, threads):
    configs = expand_grid("diabetes", "0", budget={"steps": 2}, eval_samples=5)
    run_suite(configs, tmp_path / "r.sqlite", progress=False, threads=threads)
    ok = read_results(tmp_path / "r.sqlite").iloc[0]
    failed = failed_rows(Job(tuple(configs), threads=threads + 2), RuntimeError("boom"))[0]
    for row, count in ((ok, threads), (failed, threads + 2)):
        assert row["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
        assert int(row["torch_threads"]) == count
        assert row["cpu_model"] and row["cpu_model"] == (_cpu_model() or row["cpu_model"])
        blas = torch.__config__.show().split("BLAS_INFO=", 1)[1].split(",", 1)[0]
        assert row["blas"].startswith(blas) and len(row["blas"]) < 40


def test_an_old_results_file_gets_the_new_columns_empty(tmp_path):
    old = [(name, kind) for name, kind in COLUMNS if name not in PATH_COLUMNS]
    db = tmp_path / "old.sqlite"
    conn = sqlite3.connect(db)
    with conn:
        conn.execute(f"CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT, "
                     f"{', '.join(f'{n} {k}' for n, k in old)})")
        conn.execute("INSERT INTO runs (config_hash, config, dataset, split, noise, structure, arch, inference, "
                     "budget, seed, status, timestamp) VALUES ('h', '{}', 'yacht', 0, 'half-cauchy', 'ard', "
                     "'mlp-1x50', 'svi', 1, 0, 'ok', 't')")
        conn.execute("PRAGMA user_version = 1")
    conn.close()
    assert read_results(db)[list(PATH_COLUMNS)].isna().all(axis=None)  # read: empty
    with ResultsStore(db) as store:  # opened for writing: the columns are added, NULL for the old row
        assert set(PATH_COLUMNS) <= store._columns()
    conn = sqlite3.connect(db)
    assert conn.execute(f"SELECT {', '.join(PATH_COLUMNS)} FROM runs").fetchall() == [(None,) * 4]
    conn.close()
