"""Tests of the ``bnn-priors`` command line, run as a subprocess as a user would.

Covers the one-line errors, bench then table, kill-and-resume of a suite, and the
Ray executor against a local Ray instance the test starts and stops itself.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from bnn_priors.cli.main import main
from bnn_priors.noise_models import NOISE_MODELS
from bnn_priors.suite.store import ResultsStore


def run(cli, *args, env=None, timeout=300, check_rc=None, cwd=None):
    proc = subprocess.run([*cli, *map(str, args)], capture_output=True, text=True, env=env, timeout=timeout, cwd=cwd)
    if check_rc is not None:
        assert proc.returncode == check_rc, f"rc={proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


def rows(db: Path) -> list[tuple]:
    """(id, config_hash, status, rmse, timestamp) of every stored run."""
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return conn.execute("SELECT id, config_hash, status, rmse, timestamp FROM runs ORDER BY id").fetchall()
    finally:
        conn.close()


def test_priors_lists_the_five_noise_models(cli):
    out = run(cli, "priors", check_rc=0).stdout
    assert len(NOISE_MODELS) == 5
    for name in NOISE_MODELS:
        assert f"| {name}" in out


def test_datasets_lists_the_registry(capsys):
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    for name in ("boston", "protein", "yacht", "diabetes"):
        assert name in out


def test_unknown_noise_is_one_line_with_exit_2(cli, offline_env, tmp_path):
    proc = run(cli, "bench", "--datasets", "diabetes", "--noise", "half-cauchy,cauchy", env=offline_env,
               check_rc=2, cwd=tmp_path)
    assert proc.stderr.splitlines() == [
        "bnn-priors: error: unknown prior 'cauchy'; valid choices are: bernoulli, gaussian, half-cauchy, "
        "inverse-nakagami, log-uniform, normal, rayleigh"
    ]
    assert proc.stdout == "" and not (tmp_path / "results.sqlite").exists()


@pytest.mark.parametrize(
    "args, expected",
    [
        (["bench", "--datasets", "diabetes", "--inference", "hmc"], "unknown inference method 'hmc'"),
        (["bench", "--datasets", "diabetes", "--structure", "rows"], "unknown structure 'rows'"),
        (["bench", "--datasets", "mnist"], "unknown data set 'mnist'"),
        (["bench", "--datasets", "diabetes", "--splits", "0-99"], "has splits 0-19; asked for 20-99"),
        (["bench", "--datasets", "diabetes", "--splits", "zero"], "cannot parse splits"),
        (["bench", "--datasets", "diabetes", "--arch", "mlp-50"], "{mlp|resnet}-{depth}x{width}"),
        (["bench", "--datasets", "diabetes", "--splits", "0", "--inference", "nuts", "--noise", "bernoulli"],
         "NUTS cannot fit"),
        (["bench", "--datasets", "diabetes", "--option", "learning_rate=1"], "unknown option 'learning_rate'"),
        (["bench", "--datasets", "yacht", "--data-dir", "/nonexistent"], "yacht"),
        (["bench"], "bench needs --datasets"),
        (["bench", "--preset", "huge"], "unknown preset 'huge'"),
        (["table", "--results", "/nonexistent/r.sqlite"], "no results database"),
        (["table", "--results", "__DB__", "--reference", "nalisnick2019", "--metric", "ll"], "no test log-likelihood"),
        (["plot", "--results", "__DB__"], "plot needs --out"),
        (["bench", "--datasets", "diabetes", "--executor", "spark"], "invalid choice"),
        (["bench", "--datasets", "diabetes", "--device", "tpu"], "device"),
    ],
)
def test_user_errors_are_one_line_with_exit_2(capsys, monkeypatch, isolated_data, args, expected):
    tmp_path = isolated_data
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "existing.sqlite"
    ResultsStore(db).close()
    try:
        rc = main([str(db) if a == "__DB__" else a for a in args])
    except SystemExit as exc:  # argparse's own errors
        rc = exc.code
    captured = capsys.readouterr()
    assert rc == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("bnn-priors: error: ") and expected in lines[0]
    assert not (tmp_path / "results.sqlite").exists()  # refused before any work


def _help(capsys, *command) -> str:
    with pytest.raises(SystemExit) as info:
        main([*command, "--help"])
    assert info.value.code == 0
    return " ".join(capsys.readouterr().out.split())


def test_choices_and_help_come_from_the_registries(capsys, monkeypatch):
    from bnn_priors.suite.methods import METHODS, Method
    from bnn_priors.suite.presets import PRESETS
    from bnn_priors.suite.references import REFERENCES
    from bnn_priors.suite.render import FORMATS

    monkeypatch.setitem(FORMATS, "rows", lambda table: f"{len(table.rows)} rows\n")
    monkeypatch.setitem(METHODS, "laplace", Method("laplace", "Laplace", "svi", 500))
    monkeypatch.setitem(PRESETS, "tiny", PRESETS["quick"])
    monkeypatch.setitem(REFERENCES, "hinton2012", REFERENCES["gal2016"])
    references = ", ".join(REFERENCES)  # every registered reference, the added one last
    assert references.startswith("nalisnick2019, gal2016") and references.endswith(", hinton2012")
    table = _help(capsys, "table")
    assert "{markdown,latex,csv,html,rows}" in table and references in table
    assert "--metric {rmse,ll,sample-mae} test RMSE or test log-likelihood or test sample-MAE" in table
    plot = _help(capsys, "plot")
    assert "--metric {rmse,ll,sample-mae}" in plot and references in plot
    bench = _help(capsys, "bench")
    assert "methods: svi, svi-em, map-em, vd, nuts, mc-dropout, laplace" in bench
    assert "steps of svi, svi-em, map-em, vd, laplace" in bench and "samples of nuts; also warmup of nuts" in bench
    listed = " ".join(bench.split())  # help text may wrap
    assert "a named suite: " + ", ".join(PRESETS) in listed and ", tiny" in listed
    assert "{local,ray}" in bench and "protein, wine, yacht, diabetes" in bench
    # a registered format is a format of the command, in any spelling
    committed = Path(__file__).resolve().parents[1] / "results" / "nalisnick2019.sqlite"
    small = "yacht,boston,energy,concrete,wine"  # the committed database grows by the large sets' cells
    assert main(["table", "--results", str(committed), "--format", "Rows", "--datasets", small]) == 0
    assert capsys.readouterr().out == "6 rows\n"  # five data sets and the average rank
    assert main(["table", "--results", str(committed), "--format", "LaTeX", "--datasets", "yacht"]) == 0
    assert capsys.readouterr().out.startswith("% Test RMSE")


def test_bench_then_table(cli, offline_env, uci_dir, tmp_path, capsys):
    db = tmp_path / "results.sqlite"
    proc = run(cli, "bench", "--datasets", "yacht", "--splits", "0-1", "--data-dir", uci_dir, "--noise",
               "half-cauchy,rayleigh", "--inference", "svi", "--steps", "20", "--results", db, "--quiet",
               env=offline_env, check_rc=0)
    assert "| yacht" in proc.stdout and "SVI (rayleigh/ard, mlp-1x50)" in proc.stdout
    assert len(rows(db)) == 4
    table = run(cli, "table", "--results", db, env=offline_env, check_rc=0).stdout
    header, rule = table.splitlines()[:2]
    assert header.startswith("| dataset") and "SVI (half-cauchy/ard, mlp-1x50)" in header
    assert set(rule) <= set("|-: ")
    assert "| yacht" in table and " ± " in table and "**" in table and "| average rank" in table
    assert main(["table", "--results", str(db), "--reference", "nalisnick2019"]) == 0
    ref = capsys.readouterr().out  # RMSE: the paper's RMSE columns; its ARD/ADD/ARD-ADD are a sample-MAE
    assert "Dropout [Nalisnick et al. 2019] (published)" in ref and "0.604" not in ref
    assert main(["table", "--results", str(db), "--metric", "sample_MAE", "--reference", "nalisnick2019"]) == 0
    mae = capsys.readouterr().out  # fresh runs have a sample-MAE: measured, ranked and bolded beside theirs
    assert 'ARD-ADD [Nalisnick et al. 2019] (published; sample-MAE, printed as "RMSE", own splits, ±SD)' in mae
    assert "0.604 ± 0.16" in mae and "Test sample-MAE" in mae and "**" in mae and "not measured" not in mae
    assert main(["table", "--results", str(db), "--metric", "ll", "--format", "latex"]) == 0
    assert "\\begin{tabular}" in capsys.readouterr().out
    assert main(["table", "--results", str(db), "--format", "csv", "--out", str(tmp_path / "t.csv")]) == 0
    assert (tmp_path / "t.csv").read_text().startswith("dataset,method,source,mean,se,n,rank,best")
    assert main(["plot", "--results", str(db), "--out", str(tmp_path / "rmse.png"),
                 "--heatmaps", str(tmp_path / "heat.png")]) == 0
    assert (tmp_path / "rmse.png").stat().st_size > 1000 and (tmp_path / "heat.png").stat().st_size > 1000


def test_bench_with_failures_exits_1_and_lists_them(capsys, tmp_path):
    db = tmp_path / "r.sqlite"
    rc = main(["bench", "--datasets", "diabetes", "--splits", "0", "--steps", "5", "--option", "lr=1e8",
               "--results", str(db), "--quiet"])
    captured = capsys.readouterr()
    assert rc == 1
    assert "bnn-priors: failed: diabetes/0 half-cauchy/ard mlp-1x50 svi (seed 0): FitDivergedError" in captured.err
    assert rows(db)[0][2] == "failed"


def _start_and_wait_for_a_row(cli, args, env, db: Path) -> subprocess.Popen:
    """Start ``bnn-priors`` and return once the results file holds its first row."""
    # A shell that starts tests in the background may leave SIGINT ignored; the child restores the default.
    proc = subprocess.Popen([*cli, *map(str, args)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        if db.exists():
            try:
                if rows(db):
                    break
            except sqlite3.OperationalError:
                pass
        time.sleep(0.05)
    if proc.poll() is not None:
        pytest.fail(f"the suite ended before it could be stopped: {proc.communicate()[1]}")
    return proc


def _grid_args(db: Path) -> list:
    """Six jobs (noise x structure) of two splits each."""
    return ["bench", "--datasets", "diabetes", "--splits", "0-1", "--noise", "half-cauchy,inverse-nakagami,rayleigh",
            "--structure", "ard,add", "--inference", "svi", "--steps", "200", "--results", db]


def test_kill_and_resume(cli, offline_env, tmp_path):
    db = tmp_path / "results.sqlite"
    args = _grid_args(db)
    total = 3 * 2 * 2
    proc = _start_and_wait_for_a_row(cli, [*args, "--quiet"], offline_env, db)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    before = rows(db)  # readable after SIGKILL, complete rows only, whole jobs only
    assert 0 < len(before) < total and len(before) % 2 == 0
    assert all(status == "ok" and rmse is not None for _, _, status, rmse, _ in before)
    again = run(cli, *args, env=offline_env, check_rc=0)
    assert f"{len(before)} already done" in again.stderr
    after = rows(db)
    assert len(after) == total and len({h for _, h, _, _, _ in after}) == total
    assert all(status == "ok" for _, _, status, _, _ in after)
    unchanged = {h: (i, t) for i, h, _, _, t in after}
    for i, h, _, _, t in before:  # the finished runs were not redone
        assert unchanged[h] == (i, t)


def test_ctrl_c_exits_130_after_saving_the_finished_runs(cli, offline_env, tmp_path):
    db = tmp_path / "results.sqlite"
    proc = _start_and_wait_for_a_row(cli, [*_grid_args(db), "--quiet"], offline_env, db)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1].startswith("bnn-priors: interrupted; the runs that finished are saved in")
    saved = rows(db)
    assert 0 < len(saved) < 12 and all(status == "ok" for _, _, status, _, _ in saved)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_cluster(offline_env):
    """A local Ray head on 127.0.0.1, started with ``ray start --block`` and stopped by its own pid.

    Yields its address and the environment to reach it: token authentication with a token of
    this test's own, so that neither a ``~/.ray/auth_token`` nor its absence changes the outcome.
    """
    pytest.importorskip("ray")
    ray_cli = Path(sys.executable).with_name("ray")
    if not ray_cli.is_file():
        pytest.skip("the ray command is not installed beside this Python")
    env = {**offline_env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    env.pop("RAY_AUTH_TOKEN_PATH", None)
    env.pop("RAY_ADDRESS", None)
    port = _free_port()
    temp = tempfile.mkdtemp(prefix="bnnray", dir="/tmp")  # short: Ray's socket paths are length-limited
    log = open(Path(temp) / "start.log", "w")
    head = subprocess.Popen(
        [str(ray_cli), "start", "--head", "--port", str(port), "--num-cpus", "2", "--include-dashboard=false",
         "--node-ip-address", "127.0.0.1", "--temp-dir", temp, "--disable-usage-stats", "--block"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert head.poll() is None, (Path(temp) / "start.log").read_text()
            if "Ray runtime started" in (Path(temp) / "start.log").read_text():
                break
            time.sleep(0.25)
        else:
            pytest.fail("Ray did not start in 120 s")
        yield f"127.0.0.1:{port}", env
    finally:
        # `ray stop` would stop every Ray instance on the machine; end only the one started here:
        # SIGTERM makes `ray start --block` stop the processes it started.
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(timeout=30)
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


def test_ray_executor(cli, tmp_path, ray_cluster):
    address, env = ray_cluster
    db = tmp_path / "results.sqlite"
    proc = run(cli, "bench", "--datasets", "diabetes", "--splits", "0-1", "--noise", "half-cauchy,rayleigh",
               "--inference", "svi", "--steps", "20", "--executor", "ray", "--ray-address", address,
               "--results", db, env=env, check_rc=0)
    assert "4 ok" in proc.stderr and "| diabetes" in proc.stdout
    stored = rows(db)
    assert len(stored) == 4 and all(status == "ok" for _, _, status, _, _ in stored)
    # the same runs in-process give the same numbers
    local = tmp_path / "local.sqlite"
    assert main(["bench", "--datasets", "diabetes", "--splits", "0-1", "--noise", "half-cauchy,rayleigh",
                 "--inference", "svi", "--steps", "20", "--results", str(local), "--quiet"]) == 0
    assert sorted((h, r) for _, h, _, r, _ in stored) == sorted((h, r) for _, h, _, r, _ in rows(local))
