"""The Python API: ``gradinv_exp.run`` composes, checks, runs and writes the same folder as
the command line and returns the results; bad input raises the command line's one-line
error; a finished folder is read, not run again; ``load_runs`` is compare's table."""

import json
import os
import subprocess
import sys

import pytest
import torch
from helpers import FAST, REPO, cli

import gradinv_exp
from gradinv_exp.base.options import ConfigError

SCRIPT = """
import gradinv_exp
r = gradinv_exp.run("dataset=photos", "attack.iterations=3", "attack.snapshot_every=3",
                    "defense=noise", "defense.sigma=0.01", out="runs/n1")
print(r.metrics["status"], tuple(r.truth.shape), tuple(r.recon.shape), list(r.history["step"]))
table = gradinv_exp.load_runs(["runs"])
print(table.loc[0, "defense"], table.loc[0, "strength"], table.loc[0, "psnr"] == r.metrics["psnr"])
"""


RUNS = ("runs/n1", "cli")


def test_run_from_a_plain_python_script_writes_what_the_command_line_writes(tmp_path):
    env = os.environ | {"PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == [
        "ok (1, 1, 3, 32, 32) (1, 1, 3, 32, 32) [0, 3]",
        "noise 0.01 True",
    ]
    args = ["dataset=photos", "attack.iterations=3", "attack.snapshot_every=3", "defense=noise"]
    assert cli([*args, "defense.sigma=0.01", "hydra.run.dir=cli"], tmp_path).returncode == 0

    def files(folder):
        return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.suffix != ".log"}

    assert files(tmp_path / "runs" / "n1") == files(tmp_path / "cli")
    assert (tmp_path / "runs" / "n1" / "gradinv_exp.log").stat().st_size > 0
    api, line = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in RUNS)
    assert api["psnr"] == line["psnr"] and api["config"] == line["config"]


def test_bad_input_raises_the_one_line_error_before_anything_runs(tmp_path):
    with pytest.raises(ConfigError, match=r"^defense.sigma=-1.0 is not allowed: must be >= 0"):
        gradinv_exp.run("defense=noise", "defense.sigma=-1", out=tmp_path / "never")
    for sweep in (["defense=none,noise"], ["+experiment=prune_sweep"], ["-m", "seed=1"]):
        with pytest.raises(ConfigError, match="gradinv_exp.run runs one experiment"):
            gradinv_exp.run(*sweep, out=tmp_path / "never")
    assert not (tmp_path / "never").exists()


def test_a_finished_folder_is_read_not_run_again(tmp_path):
    out = tmp_path / "run"
    first = gradinv_exp.run(*FAST, "defense=prune", out=out)
    stamp = (out / "metrics.json").stat().st_mtime_ns
    again = gradinv_exp.run(*FAST, "defense=prune", out=out)
    assert (out / "metrics.json").stat().st_mtime_ns == stamp
    assert again.metrics == first.metrics and torch.equal(again.recon, first.recon)
    assert gradinv_exp.Run.load(out).metrics == first.metrics
    with pytest.raises(ConfigError, match="holds a finished run"):
        gradinv_exp.run(*FAST, "defense=noise", out=out)


def test_load_runs_reads_runs_and_warns_about_unreadable_folders(tmp_path):
    gradinv_exp.run(*FAST, out=tmp_path / "a")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "metrics.json").write_text("{not json")
    with pytest.warns(UserWarning, match="broken"):
        table = gradinv_exp.load_runs(tmp_path)
    assert list(table["run"]) == [str(tmp_path / "a")] and table.loc[0, "status"] == "ok"
