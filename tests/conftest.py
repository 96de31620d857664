"""Shared helpers: run the command line in a subprocess, offline, in a scratch folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# Small, fast settings for end-to-end runs: the bundled photos, few steps.
FAST = ["dataset=photos", "attack.iterations=6", "attack.snapshot_every=3"]


def cli(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m gradinv_exp ARGS`` in ``cwd`` with this checkout first on the path."""
    env = os.environ | {"PYTHONPATH": str(REPO), "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [sys.executable, "-m", "gradinv_exp", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def run_cli(tmp_path):
    def _run(*args: str) -> subprocess.CompletedProcess:
        return cli(list(args), tmp_path)

    return _run
