"""Faults a user meets: bad seeds, a corrupt cached data file offline, a killed driver.

Each test reproduces one item of the reliability report (issue 14) and checks the
behaviour that replaced it: one clear error naming what was given, a message that
says what is wrong and what to do, worker processes that die with their driver.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

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


# ------------------------------------------------------------- a killed driver
def _children(pid: int) -> dict[int, str]:
    """``{pid: command line}`` of the live processes whose parent is ``pid`` (Linux /proc)."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # ended while we looked
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == pid and state != "Z":
            out[int(entry.name)] = cmdline
    return out


def _alive(pid: int) -> bool:
    """Running, as opposed to gone or a zombie waiting for whoever inherited it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _spawned_workers(pid: int) -> dict[int, str]:
    """The ``multiprocessing`` spawn workers among the children of ``pid``."""
    return {p: c for p, c in _children(pid).items() if "multiprocessing" in c and "spawn" in c}


def _kill_and_watch(driver: subprocess.Popen, workers: dict[int, str], seconds: float) -> list[str]:
    """SIGKILL ``driver``; the command lines of its workers and other children still running
    ``seconds`` later."""
    left = {**workers, **_children(driver.pid)}  # the workers and whatever else it started
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=30)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(_alive(p) for p in left):
        time.sleep(0.05)
    return [c for p, c in left.items() if _alive(p)]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the process table from /proc")
def test_workers_die_with_a_killed_driver(cli, offline_env, tmp_path):
    """SIGKILL of ``bench --workers 2`` in the middle of its jobs: no worker outlives it.

    Two jobs far too long to finish. The driver is killed once both workers are in their
    jobs: each has used more CPU time than the driver had when it started them (its own
    imports, the data and the plan), which is more than a worker's start-up (the same
    imports). Before, the workers went on with their jobs and then waited for more for ever.
    """
    args = ["bench", "--datasets", "diabetes", "--splits", "0", "--noise", "half-cauchy,rayleigh",
            "--inference", "svi", "--steps", "1000000", "--workers", "2", "--quiet",
            "--results", str(tmp_path / "r.sqlite")]
    driver = subprocess.Popen([*cli, *args], env=offline_env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        workers: dict[int, str] = {}
        start_up = None
        while time.monotonic() < deadline and driver.poll() is None:
            workers = _spawned_workers(driver.pid)
            if workers and start_up is None:
                start_up = _cpu_seconds(driver.pid)
            if len(workers) == 2 and all(_cpu_seconds(p) > start_up + 0.5 for p in workers):
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"no two busy workers: {workers}, driver exit code {driver.poll()}, "
                        f"{driver.stderr.read().decode() if driver.poll() is not None else ''}")
        assert not _kill_and_watch(driver, workers, 5.0), "processes outlived their driver by 5 s"
    finally:
        os.killpg(driver.pid, signal.SIGKILL)  # the session started above: only its own processes
        driver.wait(timeout=30)


DRIVER_IN_A_THREAD = """
import sys, threading, time
from pathlib import Path

from bnn_priors.suite.executors import ProcessExecutor


def job(marker):
    Path(marker).touch()  # the worker is past its initializer and in a job
    time.sleep(600)


def drive():
    for _ in ProcessExecutor(2).imap_unordered(job, [f"{sys.argv[1]}/{k}" for k in range(3)]):
        pass


if __name__ == "__main__":
    threading.Thread(target=drive, daemon=True).start()
    time.sleep(600)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the process table from /proc")
def test_workers_started_from_another_thread_die_with_their_driver(offline_env, tmp_path):
    """Workers started by a thread other than the main one get no parent-death signal (it would
    come when that thread ends); their watchdog ends them when the driver is killed."""
    script = tmp_path / "driver.py"
    script.write_text(DRIVER_IN_A_THREAD)
    markers = tmp_path / "markers"
    markers.mkdir()
    driver = subprocess.Popen([sys.executable, str(script), str(markers)], env=offline_env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and driver.poll() is None and len(list(markers.iterdir())) < 2:
            time.sleep(0.1)
        workers = _spawned_workers(driver.pid)
        if len(workers) != 2 or len(list(markers.iterdir())) < 2:
            pytest.fail(f"no two workers in their jobs: {workers}, driver exit code {driver.poll()}")
        assert not _kill_and_watch(driver, workers, 5.0), "processes outlived their driver by 5 s"
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
