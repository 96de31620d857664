"""Faults during a run: real signals, a failing sweep job, crashes recorded as failed."""

import errno
import json
import logging
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
from helpers import FAST, REPO, typed_config

from gradinv_exp import experiment
from gradinv_exp.attacks import engine
from gradinv_exp.runs import artifacts, faults, workers

RUN_FILES = ("history.csv", "progress.png", "reconstruction.png", "loss.png", "metrics.json")


def start(args: list[str], cwd) -> subprocess.Popen:
    env = os.environ | {"PYTHONPATH": str(REPO), "HYDRA_FULL_ERROR": "0"}
    return subprocess.Popen(
        [sys.executable, "-m", "gradinv_exp", *args], cwd=cwd, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def wait_for_step(proc: subprocess.Popen, step: int, timeout: float = 120) -> list[str]:
    """Read the run's log until it reports ``step`` (the attack is then running)."""
    lines, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        assert line, "the run ended before reaching the step: " + proc.stderr.read()
        lines.append(line)
        if f"step {step:4d}/" in line:
            return lines
    raise AssertionError("no progress within the timeout")


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_real_signal_mid_attack_saves_everything_as_interrupted(tmp_path, sig, code):
    out = tmp_path / "run"
    args = ["dataset=photos", "attack.iterations=100000", "attack.snapshot_every=2", "compile=off"]
    proc = start([*args, f"hydra.run.dir={out}"], tmp_path)
    try:
        wait_for_step(proc, 2)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == code, err
    assert err.strip().splitlines()[-1].startswith(f"gradinv-exp: interrupted by {sig.name}")
    for name in RUN_FILES:
        assert (out / name).stat().st_size > 0, name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "interrupted" and metrics["signal"] == sig.name
    history = pd.read_csv(out / "history.csv")
    assert history["step"].iloc[0] == 0 and metrics["steps"] == history["step"].iloc[-1] >= 2
    assert metrics["steps"] < 100000
    assert metrics["psnr"] > 0 and metrics["label_acc"] is None  # labels were not reported
    assert not list(out.glob(".*.tmp"))  # no half-written file left behind


# The joblib launcher runs the jobs in worker processes: the command line learns of the
# failure from the job folders only (``__main__.summarise`` when the sweep ends), and must
# still exit 1 with the same line.
@pytest.mark.parametrize(
    "launcher", [[], ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]], ids=["basic", "joblib"]
)
def test_sweep_with_a_failing_job_finishes_the_others(run_cli, tmp_path, launcher):
    sweep = tmp_path / "sweep"
    proc = run_cli(
        "-m", *FAST, "dataset=photos,cifar10,photos", "seed=1", "dataset.download=false",
        "dataset.offline_fallback=false", f"dataset.root={tmp_path / 'nowhere'}",
        f"hydra.sweep.dir={sweep}", *launcher,
    )  # fmt: skip
    assert proc.returncode == 1
    status = [json.loads((sweep / str(i) / "metrics.json").read_text()) for i in range(3)]
    assert [s["status"] for s in status] == ["ok", "failed", "ok"]
    assert status[1]["error"].startswith("ConfigError: dataset cifar10 is not available")
    assert status[1]["config"]["dataset.name"] == "cifar10"
    assert "\n" not in status[1]["error"]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("gradinv-exp: error: 1 job(s) failed, the others finished; job 1:")
    summary = pd.read_csv(sweep / "summary.csv")  # the sweep summary lists every job
    assert summary["status"].tolist() == ["ok", "failed", "ok"]
    assert summary["error"].iloc[1].startswith("ConfigError: dataset cifar10")
    assert (sweep / "comparison.png").exists()


def test_sweep_where_every_job_fails_exits_1_with_a_summary(run_cli, tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_cli(
        "-m", *FAST, "dataset=cifar10", "dataset.download=false", "dataset.offline_fallback=false",
        f"dataset.root={tmp_path / 'nowhere'}", f"hydra.sweep.dir={sweep}",
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("gradinv-exp: error: 1 job(s) failed, the others finished; job 0:")
    assert pd.read_csv(sweep / "summary.csv")["status"].tolist() == ["failed"]
    assert (sweep / "curves.png").exists()


def test_single_run_crash_is_recorded_as_failed(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("CUDA out of memory\nwhile allocating")

    monkeypatch.setattr(engine, "attack", broken)
    cfg = typed_config(*FAST)
    with pytest.raises(RuntimeError):
        experiment.run(cfg, tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] == "failed"
    assert metrics["error"] == "RuntimeError: CUDA out of memory while allocating"
    assert metrics["config"]["attack.iterations"] == 6


def test_interrupt_before_any_snapshot_still_writes_metrics(tmp_path, monkeypatch):
    def stopped(*args, **kwargs):
        raise faults.Interrupted(signal.SIGTERM)

    monkeypatch.setattr(engine, "attack", stopped)
    with pytest.raises(faults.Interrupted) as info:
        experiment.run(typed_config(*FAST), tmp_path)
    assert info.value.exit_code == 143
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] == "interrupted" and metrics["steps"] == 0
    assert metrics["data_source"] == "photos" and "defense_cosine" in metrics


def test_interruptible_turns_a_signal_into_interrupted_once():
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN when started in the background
    with pytest.raises(faults.Interrupted) as info, faults.interruptible():
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)  # the handler raises before this ends
        finally:
            os.kill(os.getpid(), signal.SIGINT)  # a second signal while saving is ignored
    assert info.value.exit_code == 130 and info.value.signal_name == "SIGINT"
    assert signal.getsignal(signal.SIGINT) is before  # restored


def test_error_line_is_type_and_message_on_one_line():
    assert faults.error_line(ValueError("a\n  b")) == "ValueError: a b"
    assert faults.error_line(KeyError()) == "KeyError"


def test_a_full_disk_while_writing_fails_the_run_and_keeps_what_was_written(tmp_path, monkeypatch):
    real = artifacts.atomic_write

    def full_at_loss_png(path, write):
        if path.name != "loss.png":
            return real(path, write)

        def half_then_full(tmp):
            tmp.write_bytes(b"\x89PNG half")
            raise OSError(errno.ENOSPC, "No space left on device")

        return real(path, half_then_full)

    monkeypatch.setattr(artifacts, "atomic_write", full_at_loss_png)
    with pytest.raises(OSError, match="No space left"):
        experiment.run(typed_config(*FAST), tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] == "failed"
    assert metrics["error"] == (
        f"DiskFull: [Errno 28] No space left on device: {tmp_path / 'loss.png'} was not "
        "written; free space, then run the command again into the same folder "
        "(hydra.run.dir or hydra.sweep.dir) to finish it"
    )
    assert pd.read_csv(tmp_path / "history.csv")["step"].tolist() == [0, 3, 6]  # intact
    assert (tmp_path / "progress.png").read_bytes().startswith(b"\x89PNG")
    assert not (tmp_path / "loss.png").exists() and not list(tmp_path.glob(".*.tmp"))


def test_a_disk_too_full_for_metrics_json_still_raises_the_first_error(
    tmp_path, monkeypatch, caplog
):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(artifacts, "write_csv", full)  # the first file a run writes
    monkeypatch.setattr(artifacts, "write_json", full)
    with pytest.raises(OSError, match="No space left"), caplog.at_level(logging.ERROR):
        experiment.run(typed_config(*FAST), tmp_path)
    assert "the failure could not be recorded in metrics.json: OSError" in caplog.text


# The command line with a disk that fills up while the file named FULL_AT is written: the
# write gets half the file on disk, then ENOSPC (artifacts.atomic_write does the rest).
FULL_DISK = """
import errno, os, sys
from gradinv_exp.runs import artifacts
real = artifacts.atomic_write
def atomic_write(path, write):
    if path.name != os.environ["FULL_AT"]:
        return real(path, write)
    def half_then_full(tmp):
        tmp.write_bytes(b'{"status": "ok", "psnr": 1')
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return real(path, half_then_full)
artifacts.atomic_write = atomic_write
from gradinv_exp.__main__ import main
sys.argv[0] = "gradinv-exp"
main()
"""


def full_disk(args: list[str], cwd, file: str) -> subprocess.CompletedProcess:
    env = os.environ | {"PYTHONPATH": str(REPO), "HYDRA_FULL_ERROR": "0", "FULL_AT": file}
    return subprocess.run([sys.executable, "-c", FULL_DISK, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def test_a_run_whose_disk_fills_says_so_in_one_line_and_a_rerun_finishes_it(run_cli, tmp_path):
    out = tmp_path / "run"
    args = [*FAST, "dataset.image_size=16", f"hydra.run.dir={out}"]
    proc = full_disk(args, tmp_path, "metrics.json")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"gradinv-exp: error: DiskFull: [Errno 28] No space left on device: "
        f"{out / 'metrics.json'} was not written; free space, then run the command again into "
        "the same folder (hydra.run.dir or hydra.sweep.dir) to finish it"
    ]
    assert not (out / "metrics.json").exists() and not list(out.glob(".*.tmp"))
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    assert json.loads((out / "metrics.json").read_text())["status"] == "ok"


def test_a_sweep_whose_disk_fills_writes_no_summary_and_a_rerun_writes_it(run_cli, tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", *FAST, "dataset.image_size=16", "defense=none,prune", f"hydra.sweep.dir={sweep}"]
    proc = full_disk(args, tmp_path, "curves.png")  # summary.csv, written last, never is
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "gradinv-exp: error: the sweep summary could not be written: DiskFull: [Errno 28] No "
        f"space left on device: {sweep / 'curves.png'} was not written; free space, then run "
        "the command again into the same folder (hydra.run.dir or hydra.sweep.dir) to finish it"
    ]
    assert not (sweep / "summary.csv").exists() and not list(sweep.glob(".*.tmp"))
    assert all(json.loads((sweep / j / "metrics.json").read_text())["status"] == "ok"
               for j in ("0", "1"))  # fmt: skip
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    assert pd.read_csv(sweep / "summary.csv")["status"].tolist() == ["ok", "ok"]
    assert (sweep / "curves.png").stat().st_size > 1000


def test_a_killed_single_run_continues_from_its_checkpoint(tmp_path):
    """SIGKILL (nothing is saved then, not even as interrupted): the same command with the
    same hydra.run.dir continues from the last checkpoint; Inverting Gradients (Adam, lr
    schedule) ends exactly as a run never stopped (eager closure: README)."""
    out = tmp_path / "run"
    job = ["attack=ig", "dataset=photos", "dataset.image_size=16", "attack.iterations=300",
           "attack.snapshot_every=10", "attack.checkpoint_every=10", "compile=off"]  # fmt: skip
    proc = start([*job, f"hydra.run.dir={out}"], tmp_path)
    try:
        wait_for_step(proc, 30)
        proc.kill()
        proc.wait(timeout=60)
    finally:
        proc.kill()
    assert (out / "attack_checkpoint.pt").exists() and not (out / "metrics.json").exists()
    again = subprocess.run(
        [sys.executable, "-m", "gradinv_exp", *job, f"hydra.run.dir={out}"], cwd=tmp_path,
        env=os.environ | {"PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "resuming from the checkpoint at step" in again.stdout
    resumed = json.loads((out / "metrics.json").read_text())
    alone = experiment.run(typed_config(*job), tmp_path / "alone")
    assert resumed["per_image"] == alone["per_image"] and resumed["grad_loss"] == alone["grad_loss"]
    assert pd.read_csv(out / "history.csv").equals(pd.read_csv(tmp_path / "alone" / "history.csv"))
    assert not list(out.glob(".*.tmp")) and not (out / "attack_checkpoint.pt").exists()


def test_forward_sends_sigterm_to_the_child_processes_instead_of_raising(monkeypatch):
    """The command line while a launcher's processes run the jobs (faults.Action.FORWARD)."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert child.pid in workers.children()
        stop = faults.Stop(faults.Action.FORWARD)
        stop(signal.SIGINT, None)  # returns: the command waits for its jobs
        assert child.wait(timeout=60) == -signal.SIGTERM
        assert stop.signum == signal.SIGINT and stop.forwarded >= 1
        stop(signal.SIGINT, None)  # a second Ctrl-C is ignored
    finally:
        child.kill()
    monkeypatch.setattr(workers, "children", lambda: [])
    with pytest.raises(faults.Interrupted):  # no process started yet: stop here
        faults.Stop(faults.Action.FORWARD)(signal.SIGTERM, None)


def test_a_dead_jobs_half_written_file_is_removed_and_its_checkpoint_kept(tmp_path):
    """A worker killed while writing a checkpoint leaves ``.<name>.<random>.tmp``."""
    (tmp_path / ".attack_checkpoint.pt.0123456789abcdef.tmp").write_bytes(b"half")
    (tmp_path / "attack_checkpoint.pt").write_bytes(b"whole")
    faults.record_death(tmp_path, {"seed": 0})
    assert not list(tmp_path.glob("*.tmp"))
    assert (tmp_path / "attack_checkpoint.pt").read_bytes() == b"whole"
    assert json.loads((tmp_path / "metrics.json").read_text())["error"] == faults.DIED
