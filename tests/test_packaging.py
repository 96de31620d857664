"""The wheel: built from a copy of the checkout, it holds every module and every config
file (``conf/`` mapped to ``gradinv_exp/conf``), so an installed package finds its
configs without the source tree. Installing it and running from another folder is
``.ci/run``'s job (it needs a fresh virtual environment)."""

import shutil
import subprocess
import sys
import zipfile

from helpers import REPO


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
