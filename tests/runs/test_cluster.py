"""The batched launcher's units on a cluster (``hydra.launcher.cluster``, runs/cluster.py),
through submitit's local executor: each unit one job of a job array, results in order, a
unit whose process dies loses only its own jobs, and a batched sweep written as on local
workers."""

import json
import os
from pathlib import Path

import pytest
from helpers import FAST, cli

from gradinv_exp.runs import cluster


def double(unit: int) -> int:
    if unit == 2:
        os._exit(3)  # the unit's process dies, as under the out-of-memory killer
    return 2 * unit


@pytest.mark.slow
def test_units_run_as_cluster_jobs_and_a_dead_one_is_lost_alone(tmp_path, monkeypatch):
    here = Path(__file__).parent  # the jobs import ``double`` from here (and its helpers)
    monkeypatch.setenv("PYTHONPATH", f"{here}:{here.parent}")
    results = cluster.run_all(
        [1, 2, 3], double, cluster="local", folder=tmp_path / "logs",
        settings={"timeout_min": 5}, lost=lambda unit: -unit,
    )  # fmt: skip
    assert results == [2, -2, 6]
    assert any((tmp_path / "logs").iterdir())  # submitit's logs, one per job


@pytest.mark.slow
def test_a_batched_sweep_on_a_cluster_writes_every_job(tmp_path):
    sweep = tmp_path / "sweep"
    args = [
        "-m", *FAST, "defense=none,prune,quantize,noise", "hydra/launcher=batched",
        "hydra.launcher.cluster=local", "+hydra.launcher.submitit.timeout_min=10",
        f"hydra.sweep.dir={sweep}",
    ]  # fmt: skip
    proc = cli(args, tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout + proc.stderr
    assert "2 unit(s) submitted to local" in out, out
    for job in range(4):
        metrics = json.loads((sweep / str(job) / "metrics.json").read_text())
        assert metrics["status"] == "ok" and metrics["batched_jobs"] == 2
    assert (sweep / "summary.csv").exists()
    again = cli(args, tmp_path)  # finished jobs are skipped: no unit has work left
    assert again.returncode == 0, again.stderr
    assert "0 in 0 batch(es), 4 alone" in again.stdout + again.stderr
