"""Adding an option is its module, its YAML and its test, nothing else: a sample defense
(``extension_sample/blur.py``) and a sample attack family (``extension_sample/midgrey.py``)
dropped into a copy of the package, with one YAML file each, run from the command line.
(docs/development.md, "To add one to the package itself".)"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from helpers import REPO

SAMPLE = Path(__file__).resolve().parent / "extension_sample"


def test_a_new_defense_and_attack_family_need_only_their_module_and_yaml(tmp_path):
    shutil.copytree(REPO / "gradinv_exp", tmp_path / "gradinv_exp",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    shutil.copytree(REPO / "conf", tmp_path / "conf")
    shutil.copy(SAMPLE / "blur.py", tmp_path / "gradinv_exp" / "defenses" / "blur.py")
    shutil.copy(SAMPLE / "midgrey.py", tmp_path / "gradinv_exp" / "attacks" / "midgrey.py")
    (tmp_path / "conf" / "defense" / "blur.yaml").write_text(
        "defaults:\n  - /schema/defense/blur@_here_\n"
    )
    (tmp_path / "conf" / "attack" / "midgrey.yaml").write_text(
        "defaults:\n  - /schema/attack/midgrey@_here_\nname: midgrey\n"
    )
    out = tmp_path / "run"
    command = [sys.executable, "-m", "gradinv_exp", "defense=blur", "defense.sigma=0.01",
               "attack=midgrey", "attack.level=0.25", "dataset=crops", "trials=2",
               "metrics.lpips=off", f"hydra.run.dir={out}"]  # fmt: skip
    env = os.environ | {"PYTHONPATH": str(tmp_path)}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "ok"
    assert metrics["config"]["defense.name"] == "blur"
    assert metrics["config"]["attack.family"] == "midgrey"
    assert metrics["assumed.level"] == 0.25  # the family's own result
    assert metrics["defense_rel_error"] > 0  # the defense changed the update
    assert (out / "progress.png").stat().st_size > 0  # a read-out's result is its snapshot
    bad = subprocess.run([*command[:-1], "defense.sigma=-1", f"hydra.run.dir={out}2"],
                         cwd=tmp_path, env=env, capture_output=True, text=True)  # fmt: skip
    assert bad.returncode != 0 and "defense.sigma=-1" in bad.stderr
