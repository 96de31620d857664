"""Sweeps stopped for real, under the basic, the joblib and the batched launcher on worker
processes: by Ctrl-C (SIGINT to the process group), by SIGTERM to the command alone, by a
worker killed with SIGKILL.
Every job that was running saves as interrupted (no temporary file left), the others
are rows of the summary, the last line counts them; the same command then continues
the interrupted jobs from their checkpoints.

Each command runs in its own session, so that a signal to its process group reaches its
workers and nothing of pytest; every wait is bounded (a machine shared with other test
runs can be 5-10x slower than a quiet one).
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from helpers import REPO, typed_config

from gradinv_exp import experiment
from gradinv_exp.runs import checkpoints
from gradinv_exp.runs.faults import DIED

# cheap steps (two L-BFGS iterations on a 16x16 photo), a checkpoint every second step,
# the eager closure: no compile time in a long run, and only the eager closure continues
# bit for bit in another process (README, Failures)
STEPS = [
    "dataset=photos", "dataset.image_size=16", "optimizer.max_iter=2", "attack.snapshot_every=2",
    "attack.checkpoint_every=2", "compile=off",
]  # fmt: skip
JOBLIB = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
# batches of at most one problem: each job runs alone (with its checkpoints) on one of 2
# forked workers
WORKERS = ["hydra/launcher=batched", "hydra.launcher.workers=2", "hydra.launcher.max_problems=1"]
WAIT_S = 240


def start(args: list[str], cwd: Path) -> subprocess.Popen:
    """The command line in its own session (its process group holds it and its workers)."""
    env = os.environ | {"PYTHONPATH": str(REPO), "HYDRA_FULL_ERROR": "0"}
    return subprocess.Popen(
        [sys.executable, "-m", "gradinv_exp", *args], cwd=cwd, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip


def wait_for(proc: subprocess.Popen, text: str, count: int = 1) -> list[str]:
    """Read the command's output until ``text`` appeared ``count`` times."""
    lines, deadline = [], time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        assert line, "the command ended early:\n" + "".join(lines[-30:])
        lines.append(line)
        if sum(text in seen for seen in lines) >= count:
            return lines
    raise AssertionError(f"no {text!r} within {WAIT_S} s")


def finish(proc: subprocess.Popen) -> str:
    """The rest of the command's output once it ends (its group is killed on a timeout)."""
    try:
        return proc.communicate(timeout=WAIT_S)[0]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def status(sweep: Path) -> dict[str, str]:
    """Job folder name -> status in summary.csv."""
    frame = pd.read_csv(sweep / "summary.csv")
    return {Path(r).name: s for r, s in zip(frame["run"], frame["status"])}


def metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.mark.parametrize(
    ("launcher", "sig", "to_group"),
    [
        ([], signal.SIGINT, True),
        (JOBLIB, signal.SIGINT, True),
        (JOBLIB, signal.SIGTERM, False),
        (WORKERS, signal.SIGINT, True),
        (WORKERS, signal.SIGTERM, False),
    ],
    ids=[
        "basic-ctrl-c",
        "joblib-ctrl-c",
        "joblib-sigterm-to-the-command",
        "workers-ctrl-c",
        "workers-sigterm-to-the-command",
    ],  # fmt: skip
)
def test_stopped_sweep_saves_running_jobs_and_counts_the_rest(tmp_path, launcher, sig, to_group):
    sweep = tmp_path / "sweep"
    running = 2 if launcher else 1
    args = ["-m", *STEPS, "attack.iterations=100000", "seed=0,1,2", f"hydra.sweep.dir={sweep}"]
    proc = start([*args, *launcher], tmp_path)
    try:
        wait_for(proc, "step    4/", count=running)  # past the first checkpoint
        os.killpg(proc.pid, sig) if to_group else proc.send_signal(sig)
        out = finish(proc)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 128 + sig, out
    assert out.strip().splitlines()[-1] == (
        f"gradinv-exp: interrupted by {sig.name}: 0 job(s) finished, {running} interrupted "
        f"(saved with status: interrupted), {3 - running} never started; run the same "
        "command again to finish the sweep"
    )
    expected = {str(n): "interrupted" if n < running else "missing" for n in range(3)}
    assert status(sweep) == expected  # a row per planned job, started or not
    for n in range(running):
        job = sweep / str(n)
        assert metrics(job)["steps"] >= 4 and (job / "history.csv").exists()
        assert (job / checkpoints.NAME).exists()
    assert not list(sweep.rglob("*.tmp"))  # nothing half-written


def test_the_same_command_continues_an_interrupted_sweep_from_its_checkpoints(tmp_path):
    sweep = tmp_path / "sweep"
    job = [*STEPS, "attack.iterations=80", "seed=5"]
    args = ["-m", *job, "defense=none,noise", f"hydra.sweep.dir={sweep}"]
    proc = start(args, tmp_path)
    wait_for(proc, "step    6/")
    os.killpg(proc.pid, signal.SIGINT)
    finish(proc)
    assert proc.returncode == 130
    stopped_at = metrics(sweep / "0")["steps"]
    again = start(args, tmp_path)
    out = finish(again)
    assert again.returncode == 0, out
    assert "resuming from the checkpoint at step" in out
    assert status(sweep) == {"0": "ok", "1": "ok"}
    assert stopped_at < 80 and not (sweep / "0" / checkpoints.NAME).exists()
    alone = experiment.run(typed_config(*job, "defense=none"), tmp_path / "alone")  # not stopped
    resumed = metrics(sweep / "0")
    assert resumed["per_image"] == alone["per_image"] and resumed["grad_loss"] == alone["grad_loss"]


@pytest.mark.parametrize("launcher", [JOBLIB, WORKERS], ids=["joblib", "workers"])
def test_a_killed_worker_fails_its_job_and_the_others_finish(tmp_path, launcher):
    sweep = tmp_path / "sweep"
    args = ["-m", *STEPS, "attack.iterations=80", "seed=0,1,2", f"hydra.sweep.dir={sweep}"]
    proc = start([*args, *launcher], tmp_path)
    try:
        wait_for(proc, "step    4/", count=2)  # two jobs run, one waits
        locks = {n: (sweep / str(n) / ".job.lock").read_text().strip() for n in (0, 1)}
        victim = next(n for n, pid in locks.items() if pid)
        os.kill(int(locks[victim]), signal.SIGKILL)
        out = finish(proc)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 1, out
    last = out.strip().splitlines()[-1]
    assert last == f"gradinv-exp: error: 1 job(s) failed, the others finished; job {victim}: {DIED}"
    assert status(sweep) == {str(n): "failed" if n == victim else "ok" for n in range(3)}
    assert metrics(sweep / str(victim))["error"] == DIED
    assert not list(sweep.rglob("*.tmp"))


def test_a_second_command_into_the_same_folder_stops_with_one_line(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", *STEPS, "attack.iterations=100000", "seed=0,1", f"hydra.sweep.dir={sweep}"]
    first = start(args, tmp_path)
    try:
        wait_for(first, "step    2/")
        second = start(args, tmp_path)
        out = finish(second)
        assert second.returncode == 2
        assert out.strip().splitlines() == [
            f"gradinv-exp: error: hydra.sweep.dir={sweep} is in use by another gradinv-exp "
            f"command (pid {first.pid}): wait for it to end, or choose another hydra.sweep.dir"
        ]
        assert first.poll() is None  # untouched
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()


def read_log(run_dir: Path) -> str:
    logs = list(run_dir.glob("*.log"))
    return logs[0].read_text() if logs else ""


@pytest.mark.slow
def test_submitit_preemption_signal_requeues_the_job_and_it_continues(tmp_path):
    """submitit's own preemption/time-limit signal (SIGUSR2 on SLURM, here sent to the
    local task): submitit requeues the job, which continues from its checkpoint."""
    sweep = tmp_path / "sweep"
    job = [*STEPS, "attack.iterations=150", "seed=3"]
    args = ["-m", *job, "hydra/launcher=submitit_local", f"hydra.sweep.dir={sweep}"]
    proc = start(args, tmp_path)
    try:
        deadline = time.monotonic() + WAIT_S
        while "step   10/" not in read_log(sweep / "0"):
            assert time.monotonic() < deadline and proc.poll() is None, "no progress"
            time.sleep(0.2)
        os.kill(int((sweep / "0" / ".job.lock").read_text()), signal.SIGUSR2)
        out = finish(proc)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, out
    log = read_log(sweep / "0")
    assert "Requeued job" in log and "resuming from the checkpoint at step" in log
    alone = experiment.run(typed_config(*job), tmp_path / "alone")
    resumed = metrics(sweep / "0")
    assert resumed["per_image"] == alone["per_image"] and resumed["grad_loss"] == alone["grad_loss"]


@pytest.mark.slow
def test_submitit_local_job_saves_when_the_command_is_stopped(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", *STEPS, "attack.iterations=100000", "hydra/launcher=submitit_local"]
    proc = start([*args, f"hydra.sweep.dir={sweep}"], tmp_path)
    try:
        deadline = time.monotonic() + WAIT_S
        while "step    4/" not in read_log(sweep / "0"):
            assert time.monotonic() < deadline and proc.poll() is None, "no progress"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)  # the command alone: it asks its job processes
        out = finish(proc)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 143, out
    assert "1 interrupted (saved with status: interrupted), 0 never started" in out
    assert metrics(sweep / "0")["status"] == "interrupted" and not list(sweep.rglob("*.tmp"))
