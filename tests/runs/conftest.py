"""Real sweeps that several tests in this folder read (each costs seconds of imports)."""

import pytest
from helpers import SEED_DEFENSES, cli


@pytest.fixture(scope="session")
def seed_sweep(tmp_path_factory):
    """The original notebook's comparison, sequential:
    `python -m gradinv_exp +experiment=seed_defenses
    hydra/launcher=basic` (every job alone, one after another)."""
    sweep = tmp_path_factory.mktemp("sequential") / "sweep"
    proc = cli([*SEED_DEFENSES, "hydra/launcher=basic", f"hydra.sweep.dir={sweep}"], sweep.parent)
    assert proc.returncode == 0, proc.stderr
    return sweep


@pytest.fixture(scope="session")
def joblib_sweep(tmp_path_factory):
    """Two jobs of the same sweep, in two parallel processes (hydra-joblib-launcher)."""
    sweep = tmp_path_factory.mktemp("joblib") / "sweep"
    args = [*SEED_DEFENSES, "defense=none,noise", "hydra/launcher=joblib"]
    proc = cli([*args, "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={sweep}"], sweep.parent)
    assert proc.returncode == 0, proc.stderr
    assert "n_jobs=2" in proc.stdout + proc.stderr
    return sweep
