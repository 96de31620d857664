"""The wheel: built from a copy of the checkout, it holds every module and every config
file (``conf/`` mapped to ``gradinv_exp/conf``), so an installed package finds its
configs without the source tree. Installing it and running from another folder is
``.ci/run``'s job (it needs a fresh virtual environment: scripts/check_wheel.sh). The
editable install of ``make install`` runs a preset from another folder here."""

import os
import shutil
import subprocess
import sys
import zipfile

import pandas as pd
import pytest
from helpers import FAST, REPO


def test_wheel_holds_every_module_and_config_file(tmp_path):
    src = tmp_path / "src"  # a copy: the build writes build/ and *.egg-info beside the sources
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for folder in ("gradinv_exp", "conf", "hydra_plugins"):
        shutil.copytree(REPO / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation",
         "--quiet", "-w", str(tmp_path / "dist")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (wheel,) = (tmp_path / "dist").glob("gradinv_exp-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    modules = {
        str(p.relative_to(src))
        for package in ("gradinv_exp", "hydra_plugins")  # hydra_plugins: the batched launcher
        for p in (src / package).rglob("*.py")
    }
    configs = {"gradinv_exp/" + str(p.relative_to(src)) for p in (src / "conf").rglob("*.yaml")}
    assert modules - shipped == set()
    assert configs - shipped == set()
    assert "gradinv_exp/conf/config.yaml" in shipped


@pytest.mark.slow
def test_a_preset_runs_from_a_folder_outside_the_repo_with_the_editable_install(tmp_path):
    """``make install``'s editable install (``pip install -e .``): from any folder, its
    ``gradinv-exp`` finds the repo's Hydra plugin (the batched launcher of every preset),
    without this checkout on the path. The summary lists the 4 jobs, all ok."""
    entry = REPO / ".venv" / "bin" / "gradinv-exp"
    if not entry.exists():
        pytest.skip("no .venv in this checkout: `make install` builds it")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"HYDRA_FULL_ERROR": "0"}
    where = subprocess.run(
        [str(entry.with_name("python")), "-c", "import gradinv_exp; print(gradinv_exp.__file__)"],
        cwd=tmp_path, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert where.stdout.strip() == str(REPO / "gradinv_exp" / "__init__.py"), where.stderr
    sweep = tmp_path / "sweep"
    proc = subprocess.run(
        [str(entry), "+experiment=seed_defenses", *FAST, "dataset.image_size=16",
         f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "n_jobs" not in proc.stderr and "Unknown plugin" not in proc.stderr
    table = pd.read_csv(sweep / "summary.csv")
    assert table["status"].tolist() == ["ok"] * 4
    assert table["defense"].tolist() == ["none", "noise", "prune", "quantize"]
