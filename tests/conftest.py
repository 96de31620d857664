"""Shared helpers: run the command line in a subprocess, offline, in a scratch folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from gradinv_exp import config, preflight, run

REPO = Path(__file__).resolve().parent.parent
torch.set_num_threads(1)  # the project default; two threads per test process oversubscribe
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


def compose_config(*overrides: str, name: str = "config", hydra: bool = False) -> DictConfig:
    """Compose ``conf/<name>.yaml`` with overrides in-process (no CLI start-up cost)."""
    config.register()
    with initialize_config_dir(config_dir=str(preflight.CONF_DIR), version_base="1.3"):
        return compose(name, overrides=list(overrides), return_hydra_config=hydra)


def typed_config(*overrides: str) -> config.Config:
    """The typed, validated run config for ``overrides``, as a CLI job would get it."""
    return run.to_config(compose_config(*overrides))
