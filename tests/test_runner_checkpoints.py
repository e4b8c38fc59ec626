"""The suite's long jobs: checkpoints that survive a SIGKILL, and fits that blow up while staying finite."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bnn_priors.suite import expand_grid, read_results, run_suite
from bnn_priors.suite.runner import BLOWUP_TRAIN_RMSE, _verdict, checkpoint_dir, job_progress

#: A job of two replicas long enough to be killed after its first checkpoint (diabetes, 353 training
#: points: 3 steps an epoch).
GRID = dict(datasets="diabetes", splits="0-1", noise="bernoulli", structure="ard", arch="mlp-1x50",
            inference="mc-dropout", eval_samples=20)
EPOCHS = 600


def _metrics(path) -> dict[str, tuple[float, float]]:
    df = read_results(path)
    assert (df["status"] == "ok").all(), df[["status", "error"]]
    return {h: (r, ll) for h, r, ll in zip(df["config_hash"], df["rmse"], df["log_likelihood"])}


def test_a_killed_bench_continues_from_its_checkpoint_and_gets_the_uninterrupted_numbers(tmp_path, cli):
    configs = expand_grid(**GRID, budget={"epochs": EPOCHS})
    whole = tmp_path / "whole.sqlite"
    run_suite(configs, whole, progress=False, checkpoint_every=None)

    killed = tmp_path / "killed.sqlite"
    folder = checkpoint_dir(killed)
    cmd = [*cli, "bench", "--datasets", "diabetes", "--splits", "0-1", "--noise", "bernoulli", "--structure", "ard",
           "--arch", "mlp-1x50", "--inference", "mc-dropout", "--epochs", str(EPOCHS), "--eval-samples", "20",
           "--checkpoint-every", "0", "--results", str(killed), "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 120
        while not (folder.is_dir() and any(folder.glob("*.pt"))):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.05)
        time.sleep(0.5)  # a few more epochs: the checkpoint is rewritten after each
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    saved = list(folder.glob("*.pt"))
    assert len(saved) == 1
    assert read_results(killed, status=None).empty  # nothing finished: the job's work is only in its checkpoint
    # `bnn-priors jobs` reads how far the job got from its checkpoint
    (progress,) = job_progress(killed)
    assert progress.label.startswith("diabetes splits 0-1 | ") and progress.path == saved[0]
    steps = json.loads(read_results(whole)["backend_info"].iloc[0])["steps"]  # of the uninterrupted fit
    assert progress.unit == "steps" and progress.total == steps and 0 < progress.done < progress.total
    assert progress.seconds > 0
    assert progress.seconds_left == pytest.approx(progress.seconds * (progress.total / progress.done - 1), rel=1e-12)
    shown = subprocess.run([*cli, "jobs", "--results", str(killed)], capture_output=True, text=True, check=True).stdout
    assert progress.label in shown and f"step {progress.done:,} of {progress.total:,} (" in shown

    report = run_suite(configs, killed, progress=False, checkpoint_every=0.0)
    assert report.ok == 2
    assert _metrics(killed) == _metrics(whole)  # equal to the last bit
    info = [json.loads(text) for text in read_results(killed)["backend_info"]]
    assert all(0 < i["resumed_from_step"] < EPOCHS * 3 for i in info)
    before = np.array([i["seconds_before_resume"] for i in info])  # info["seconds"] includes it
    assert (before > 0).all()
    assert (read_results(killed)["train_seconds"].to_numpy() >= [i["seconds"] for i in info]).all()
    assert not folder.exists()  # removed once the rows were saved


def test_a_checkpoint_left_by_an_earlier_grouping_is_not_continued_by_another_job(tmp_path):
    configs = expand_grid(**GRID, budget={"epochs": 5})
    folder = checkpoint_dir(tmp_path / "r.sqlite")
    folder.mkdir()
    stray = folder / "stray.pt"
    stray.write_bytes(b"x")
    report = run_suite(configs, tmp_path / "r.sqlite", progress=False, checkpoint_every=0.0)
    assert report.ok == 2 and stray.exists()  # another job's file: left alone, not read


def test_a_fit_that_blows_up_while_staying_finite_is_recorded_as_failed(tmp_path, uci_dir):
    """Issue 14, item 1: SVI at lr 1.0 on yacht ran away to a test RMSE of about 1e10 and was stored as ok."""
    configs = expand_grid("yacht", splits="0", noise="half-cauchy", structure="ard-add", arch="resnet-2x50",
                          inference="svi", budget={"steps": 300}, options={"lr": 1.0})
    report = run_suite(configs, tmp_path / "r.sqlite", data_dir=uci_dir, progress=False)
    assert report.ok == 0 and len(report.failed) == 1
    df = read_results(tmp_path / "r.sqlite", status=None)
    assert df["status"].tolist() == ["failed"]
    assert "blew up" in df["error"].iloc[0] or "NaN or infinite" in df["error"].iloc[0]


def test_the_blow_up_verdict():
    assert _verdict(True, True, 0.4) is None
    assert _verdict(True, True, BLOWUP_TRAIN_RMSE) is None
    assert "blew up" in _verdict(True, True, 10.5)
    assert "blew up" in _verdict(True, True, math.nan)
    assert "test metrics" in _verdict(False, True, 0.4)
    assert "validation metrics" in _verdict(True, False, 0.4)


def test_sane_fits_are_far_from_the_blow_up_bound(tmp_path):
    configs = expand_grid("diabetes", splits="0-1", noise="half-cauchy,inverse-nakagami", structure="ard",
                          arch="mlp-1x20", inference="svi,map-em", budget={"steps": 200}, eval_samples=20)
    run_suite(configs, tmp_path / "r.sqlite", progress=False)
    df = read_results(tmp_path / "r.sqlite")
    assert (df["status"] == "ok").all()
    worst = max(json.loads(t)["train_rmse_standardized"] for t in df["backend_info"])
    assert worst < 1.0 < BLOWUP_TRAIN_RMSE


def test_checkpoint_dir_sits_beside_the_results_file():
    assert checkpoint_dir("a/b/results.sqlite") == Path("a/b/results.sqlite.checkpoints")


def test_a_killed_nuts_job_continues_from_its_checkpoint_and_gets_the_uninterrupted_numbers(tmp_path, monkeypatch):
    """The runner hands NUTS jobs their checkpoint as it does training jobs: a job stopped after
    a few iterations continues from its saved state, to the numbers of an uninterrupted run."""
    from inference.training import Checkpoint

    configs = expand_grid("diabetes", "0-1", noise="half-cauchy", inference="nuts", arch="mlp-1x4", budget={"samples": 15},
                          options={"num_chains": 2, "max_tree_depth": 3, "init_steps": 5}, eval_samples=20)
    whole = tmp_path / "whole.sqlite"
    run_suite(configs, whole, progress=False, checkpoint_every=None)

    killed = tmp_path / "killed.sqlite"
    save = Checkpoint.save

    def save_then_stop(self, state):
        save(self, state)
        if state["iteration"] == 12:  # in the warm-up of 15
            raise KeyboardInterrupt

    monkeypatch.setattr(Checkpoint, "save", save_then_stop)
    try:
        run_suite(configs, killed, progress=False, checkpoint_every=0.0)
        raise AssertionError("the job was not stopped")
    except KeyboardInterrupt:
        pass
    monkeypatch.setattr(Checkpoint, "save", save)
    assert read_results(killed, status=None).empty and len(list(checkpoint_dir(killed).glob("*.pt"))) == 1
    (progress,) = job_progress(killed)
    assert progress.unit == "iterations" and (progress.done, progress.total) == (12, 30)  # 15 warm-up + 15 draws
    assert progress.label.startswith("diabetes splits 0-1 | ")

    report = run_suite(configs, killed, progress=False, checkpoint_every=0.0)
    assert report.ok == 2
    assert _metrics(killed) == _metrics(whole)  # equal to the last bit
    info = [json.loads(text) for text in read_results(killed)["backend_info"]]
    assert all(i["resumed_from_iteration"] == 12 for i in info)
    # train_seconds counts the stopped process's sampling up to its checkpoint as well
    before = np.array([i["seconds_before_resume"] for i in info])  # info["seconds"] includes it
    assert (before > 0).all()
    assert (read_results(killed)["train_seconds"].to_numpy() >= [i["seconds"] for i in info]).all()
    assert not checkpoint_dir(killed).exists()


def test_a_batch_whose_backend_names_the_diverged_replica_trains_the_others_again_as_one_job(tmp_path, monkeypatch):
    """The first fit of the three-split job diverges in replica 1 (as MC dropout names it): that run
    fails, and splits 0 and 2 train again as one job of two replicas, not one at a time."""
    from bnn_priors.errors import FitDivergedError
    from bnn_priors.suite import runner

    configs = expand_grid(**{**GRID, "splits": "0-2"}, budget={"epochs": 3})
    seen = []
    original = runner.fit_job

    def fit_job(job):
        seen.append([c.split for c in job.configs])
        if len(seen) == 1:
            raise FitDivergedError("MCDropout: the loss became NaN or infinite at step 5 (replica 1); hint", (1,))
        return original(job)

    monkeypatch.setattr(runner, "fit_job", fit_job)
    report = run_suite(configs, tmp_path / "r.sqlite", progress=False)
    assert seen == [[0, 1, 2], [0, 2]]
    assert report.ok == 2 and len(report.failed) == 1
    df = read_results(tmp_path / "r.sqlite", status=None).set_index("split")
    assert df.loc[1, "status"] == "failed" and "(replica 1)" in df.loc[1, "error"]
    assert (df.loc[[0, 2], "status"] == "ok").all() and (df.loc[[0, 2], "replicas"] == 2).all()

    # Without named replicas the batch is retried one run at a time, as before.
    seen.clear()

    def unnamed(job):
        seen.append([c.split for c in job.configs])
        if len(seen) == 1:
            raise FitDivergedError("SVI: the loss became NaN or infinite at step 5; hint")
        return original(job)

    monkeypatch.setattr(runner, "fit_job", unnamed)
    assert run_suite(configs, tmp_path / "s.sqlite", progress=False).ok == 3
    assert seen == [[0, 1, 2], [0], [1], [2]]

    # Every replica named: all fail at once, none is retried.
    seen.clear()

    def all_named(job):
        seen.append([c.split for c in job.configs])
        raise FitDivergedError("MCDropout: the loss became NaN or infinite at step 5 (replicas 0, 1, 2); hint", (0, 1, 2))

    monkeypatch.setattr(runner, "fit_job", all_named)
    assert len(run_suite(configs, tmp_path / "t.sqlite", progress=False).failed) == 3
    assert seen == [[0, 1, 2]]


def test_jobs_reports_old_foreign_and_fresh_checkpoint_files(tmp_path, cli):
    """`bnn-priors jobs` on files it must cope with: one saved before checkpoints named their job and
    total (the step only), one just started (step 0: no pace yet), and a file that is no checkpoint
    (named, with the rest still shown); no folder at all is "no unfinished jobs"."""
    import torch

    from inference.training import Checkpoint

    results = tmp_path / "r.sqlite"
    shown = subprocess.run([*cli, "jobs", "--results", str(results)], capture_output=True, text=True, check=True).stdout
    assert shown.startswith("no unfinished jobs") and "nor does the file exist" in shown
    folder = checkpoint_dir(results)
    folder.mkdir()
    torch.save({"version": 1, "key": "k" * 64, "step": 1234, "round": 5, "seconds": 60.0}, folder / "old.pt")
    Checkpoint(folder / "new.pt", "n" * 64, label="yacht splits 0-19 | MC dropout | 40 epochs").save(
        {"step": 0, "total_steps": 800, "seconds": 0.5})
    (folder / "junk.pt").write_bytes(b"not a checkpoint")
    (folder / ".new.pt.123.tmp").write_bytes(b"half")  # a save cut short: not a job
    by_name = {p.path.name: p for p in job_progress(results)}
    assert set(by_name) == {"old.pt", "new.pt", "junk.pt"}
    old, new, junk = by_name["old.pt"], by_name["new.pt"], by_name["junk.pt"]
    assert (old.label, old.done, old.total, old.seconds, old.seconds_left) == ("", 1234, None, 60.0, None)
    assert (new.label, new.done, new.total, new.seconds_left) == ("yacht splits 0-19 | MC dropout | 40 epochs", 0, 800, None)
    assert junk.error and not old.error and not new.error
    shown = subprocess.run([*cli, "jobs", "--results", str(results)], capture_output=True, text=True, check=True).stdout
    assert "step 1,234 (its total is not recorded); trained 1 min 00 s;" in shown
    assert "saved before checkpoints named their job" in shown
    assert "yacht splits 0-19 | MC dropout | 40 epochs\n  step 0 of 800 (0.0%); trained 0 s;" in shown
    assert "junk.pt: not readable as a checkpoint" in shown
    assert shown.count("; not running (the same bench command continues it)") == 2
    with Checkpoint(folder / "new.pt", "n" * 64).claim():  # a live process training the job
        shown = subprocess.run([*cli, "jobs", "--results", str(results)], capture_output=True, text=True,
                               check=True).stdout
    assert "(0.0%); trained 0 s; saved" in shown and f"; running now (pid {os.getpid()} on " in shown
    assert shown.count("; not running") == 1


def test_a_claimed_checkpoint_refuses_a_second_claim_until_released(tmp_path):
    from bnn_priors import CheckpointInUseError
    from inference.training import Checkpoint

    checkpoint = Checkpoint(tmp_path / "c" / "job.pt", "k")
    assert checkpoint.holder() is None
    with checkpoint.claim():
        assert checkpoint.lock_path.exists()
        assert checkpoint.holder() == f"pid {os.getpid()} on {socket.gethostname()}"
        with pytest.raises(CheckpointInUseError, match=f"held by another process \\(pid {os.getpid()} ") as caught:
            with Checkpoint(tmp_path / "c" / "job.pt", "other key").claim():
                pass  # pragma: no cover - never entered
        assert caught.value.holder.startswith(f"pid {os.getpid()} ")
        assert checkpoint.holder() is not None  # the refused claim left the holder's lock alone
    assert not checkpoint.lock_path.exists() and checkpoint.holder() is None
    with checkpoint.claim():  # free again
        pass


def test_a_claim_dies_with_its_process(tmp_path):
    """A job killed with SIGKILL cannot release its claim itself: the kernel does, so the next
    bench continues its checkpoint (the lock file it left behind is taken over)."""
    from bnn_priors import CheckpointInUseError
    from inference.training import Checkpoint

    path = tmp_path / "job.pt"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom inference.training import Checkpoint\n"
         f"with Checkpoint({str(path)!r}, 'k').claim():\n    print('held', flush=True)\n    time.sleep(120)"],
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1])
    try:
        assert holder.stdout.readline().strip() == "held"
        assert Checkpoint(path, "k").holder().startswith(f"pid {holder.pid} ")
        with pytest.raises(CheckpointInUseError):
            with Checkpoint(path, "k").claim():
                pass  # pragma: no cover - never entered
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert Checkpoint(path, "k").lock_path.exists()  # left behind, but no one holds it
    assert Checkpoint(path, "k").holder() is None
    with Checkpoint(path, "k").claim():
        assert Checkpoint(path, "k").holder().startswith(f"pid {os.getpid()} ")
    assert not Checkpoint(path, "k").lock_path.exists()


def test_a_job_that_another_process_holds_is_left_to_it_and_nothing_is_stored(tmp_path, cli):
    """Two bench processes on one grid (a rerun while the first still runs): the second leaves the
    first's job alone (no rows, no removed checkpoint) and says so; a job the other finished
    meanwhile is not trained again."""
    from bnn_priors.suite.planning import plan_jobs
    from bnn_priors.suite.runner import JobSkipped, run_job

    results = tmp_path / "r.sqlite"
    configs = expand_grid(**GRID, budget={"epochs": 5})
    (job,) = plan_jobs(configs)
    job = dataclasses.replace(job, checkpoint_dir=str(checkpoint_dir(results)), results=str(results))
    job.checkpoint().save({"step": 3, "total_steps": 15, "seconds": 1.0})  # the holder's progress so far
    with job.checkpoint().claim():
        report = run_suite(configs, results, progress=False, checkpoint_every=0.0)
        assert (report.ok, report.failed, len(report.held)) == (0, [], 1)
        assert report.held[0][0] == job.describe() and report.held[0][1].startswith(f"pid {os.getpid()} ")
        assert report.held[0][2] == 2 and "2 being trained by another process" in report.summary()
        assert read_results(results, status=None).empty
        shown = subprocess.run([*cli, "bench", *_grid_args(), "--epochs", "5", "--checkpoint-every", "0",
                                "--results", str(results)], capture_output=True, text=True)
        assert shown.returncode == 0, shown.stderr
        assert "left to another process: " + job.describe() in shown.stderr
        assert read_results(results, status=None).empty
        assert job.checkpoint().load()["step"] == 3  # neither run touched the holder's file
        assert not job.checkpoint().remove_unless_held() and Path(job.checkpoint().path).exists()
    Path(job.checkpoint().path).unlink()  # (this test's stand-in holder never trained)
    report = run_suite(configs, results, progress=False, checkpoint_every=0.0)
    assert report.ok == 2 and not report.held
    # The same job planned before the other process stored it: skipped once claimed, nothing retrained.
    assert run_job(job) == JobSkipped("done")


def _grid_args() -> list[str]:
    return ["--datasets", GRID["datasets"], "--splits", GRID["splits"], "--noise", GRID["noise"], "--structure",
            GRID["structure"], "--arch", GRID["arch"], "--inference", GRID["inference"], "--eval-samples",
            str(GRID["eval_samples"])]


def test_a_claim_waits_out_a_reader(tmp_path):
    """`bnn-priors jobs` locks a job's lock file shared for an instant to see whether it is held; a
    claim made in that instant tries again (:data:`~inference.training.CLAIM_TRIES`) instead of
    reporting the job held."""
    import fcntl
    import threading

    from inference.training import CLAIM_TRIES, Checkpoint

    checkpoint = Checkpoint(tmp_path / "job.pt", "k")
    checkpoint.lock_path.write_text("")
    fd = os.open(checkpoint.lock_path, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    timer = threading.Timer(0.08, lambda: os.close(fd))  # the reader lets go 80 ms later
    timer.start()
    assert CLAIM_TRIES * 0.05 > 0.08
    start = time.perf_counter()
    with checkpoint.claim():
        waited = time.perf_counter() - start
    timer.join()
    assert waited >= 0.05  # it did meet the reader's lock


def test_a_file_system_without_flock_runs_unclaimed_and_says_so(tmp_path, monkeypatch):
    import errno

    import inference.training as training

    def no_flock(fd, op):
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(training.fcntl, "flock", no_flock)
    checkpoint = training.Checkpoint(tmp_path / "job.pt", "k")
    with pytest.warns(RuntimeWarning, match="cannot claim checkpoint .*Function not implemented"):
        with checkpoint.claim():
            entered = True
    assert entered and checkpoint.holder() is None  # not "held by unknown"
