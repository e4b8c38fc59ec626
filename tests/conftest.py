"""Fixtures shared by the test modules."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest


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


@pytest.fixture
def offline_env(tmp_path: Path) -> dict[str, str]:
    """Environment for subprocesses: a private data cache, no user data folder, no reachable download."""
    env = dict(os.environ)
    env.pop("BNN_PRIORS_DATA", None)
    env["BNN_PRIORS_CACHE"] = str(tmp_path / "cache")
    env["BNN_PRIORS_DATA_URL"] = "http://127.0.0.1:9/unreachable"
    env["PYTHONUNBUFFERED"] = "1"
    return env
