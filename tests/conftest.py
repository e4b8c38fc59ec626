"""Fixtures shared by the test modules."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from inference.training import Checkpoint


def pytest_configure(config: pytest.Config) -> None:
    """Each pytest-xdist worker runs one torch thread: ``-n auto`` starts a worker per core, and
    torch's default of one thread per core in each of them put two threads on every core, which
    spin while they wait (a NUTS fit of the backend matrix took 40-100 s instead of 14-15 s)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)


def shared_uci_dir() -> Path:
    """``shared/data/uci`` beside the checkout, or ``$BNN_PRIORS_SHARED_UCI``."""
    default = Path(__file__).resolve().parents[2] / "shared" / "data" / "uci"
    return Path(os.environ.get("BNN_PRIORS_SHARED_UCI") or default)


@pytest.fixture(scope="session")
def uci_dir() -> Path:
    """A local copy of the UCI files (one folder per data set); skips the test without one."""
    path = shared_uci_dir()
    if not (path / "yacht" / "data.txt").is_file():
        pytest.skip(f"no local copy of the UCI files at {path} (set BNN_PRIORS_SHARED_UCI)")
    return path


@pytest.fixture(scope="session")
def cli() -> list[str]:
    """The command that runs ``bnn-priors``: the installed console script, else ``python -m``."""
    script = Path(sys.executable).with_name("bnn-priors")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-m", "bnn_priors.cli.main"]


#: A download address that refuses connections at once.
UNREACHABLE_URL = "http://127.0.0.1:9/unreachable"


@pytest.fixture
def isolated_data(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Keep the data look-up of this process (and what it starts) inside ``tmp_path``: no user data
    folder, a private cache ``tmp_path/cache``, an unreachable download address. Returns ``tmp_path``."""
    monkeypatch.delenv("BNN_PRIORS_DATA", raising=False)
    monkeypatch.setenv("BNN_PRIORS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("BNN_PRIORS_DATA_URL", UNREACHABLE_URL)
    return tmp_path


@pytest.fixture
def offline_env(isolated_data: Path) -> dict[str, str]:
    """Environment for subprocesses: :func:`isolated_data`'s, with unbuffered output."""
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


class _KilledAfter(Checkpoint):
    """A checkpoint whose process is 'killed' (``KeyboardInterrupt``) right after its ``n``-th save;
    it saves at every occasion (``every=0``)."""

    def __init__(self, path, key, n):
        super().__init__(path, key, every=0.0)
        object.__setattr__(self, "n", n)
        object.__setattr__(self, "saves", [0])

    def save(self, state):
        super().save(state)
        self.saves[0] += 1
        if self.saves[0] == self.n:
            raise KeyboardInterrupt


@pytest.fixture
def killed_after():
    """``killed_after(path, key, n)``: a checkpoint that stops the fit right after its ``n``-th save."""
    return _KilledAfter
