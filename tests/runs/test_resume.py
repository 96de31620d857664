"""Resume: a command re-run into the same sweep folder skips the finished jobs, redoes the
others, and refuses a folder whose finished runs have other overrides; a stopped run
continues from its checkpoint and ends as if it had never been stopped."""

import json
import logging
import shutil
import signal

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import FAST, SEED_DEFENSES, cli, typed_config

from gradinv_exp import experiment
from gradinv_exp.runs import checkpoints, faults, resume


def by_defense(sweep):
    frame = pd.read_csv(sweep / "summary.csv")
    return frame.set_index("defense")


def test_rerun_skips_finished_jobs_and_refuses_other_overrides(seed_sweep, tmp_path):
    sweep = tmp_path / "sweep"
    shutil.copytree(seed_sweep, sweep)
    (sweep / "2" / "metrics.json").unlink()  # job 2 was interrupted
    (sweep / "summary.csv").unlink()
    kept = {n: (sweep / n / "metrics.json").read_bytes() for n in ("0", "1", "3")}
    stamps = {n: (sweep / n / "metrics.json").stat().st_mtime_ns for n in kept}
    proc = cli([*SEED_DEFENSES, f"hydra.sweep.dir={sweep}"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("already finished") == 3
    for n in kept:
        assert (sweep / n / "metrics.json").read_bytes() == kept[n]
        assert (sweep / n / "metrics.json").stat().st_mtime_ns == stamps[n]
    redone = json.loads((sweep / "2" / "metrics.json").read_text())
    assert redone["psnr"] == by_defense(seed_sweep).loc["quantize", "psnr"]  # same seed
    assert len(pd.read_csv(sweep / "summary.csv")) == 4

    other = cli([*SEED_DEFENSES, "attack.iterations=5", f"hydra.sweep.dir={sweep}"], tmp_path)
    assert other.returncode == 2
    assert other.stderr.count("\n") == 1 and "holds a finished run" in other.stderr
    assert (sweep / "0" / "metrics.json").read_bytes() == kept["0"]


def test_only_ok_and_diverged_runs_count_as_finished(tmp_path):
    for status in ("ok", "diverged", "failed", "interrupted"):
        (tmp_path / status).mkdir()
        (tmp_path / status / "metrics.json").write_text(json.dumps({"status": status}))
    assert [s for s in ("ok", "diverged", "failed", "interrupted")
            if resume.finished(tmp_path / s)] == list(resume.FINISHED)  # fmt: skip
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "metrics.json").write_text('{"status": "o')
    assert resume.finished(tmp_path / "half") is None and resume.finished(tmp_path) is None


def run_files(run_dir) -> dict:
    """What a finished run wrote, without the wall time (which an interruption changes)."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics.pop("wall_s")
    metrics["config"].pop("attack.checkpoint_every")
    images = np.load(run_dir / "images.npz")
    return {
        "metrics": metrics,
        "history": (run_dir / "history.csv").read_text(),
        "images": (images["truth"].tobytes(), images["recon"].tobytes()),
        "progress": (run_dir / "progress.png").read_bytes(),
    }


@pytest.mark.parametrize("attack", ["dlg", "ig"])  # L-BFGS and Adam with IG's schedule
def test_a_stopped_run_continues_from_its_checkpoint_and_equals_one_never_stopped(
    tmp_path, monkeypatch, caplog, attack
):
    args = [*FAST, f"attack={attack}", "attack.checkpoint_every=2", "dataset.image_size=16"]
    experiment.run(typed_config(*args), tmp_path / "whole")
    assert not (tmp_path / "whole" / checkpoints.NAME).exists()  # removed when finished
    real_save = checkpoints.save

    def stop_after_step_4(run_dir, config, state):
        real_save(run_dir, config, state)
        if state["attack"]["step"] == 4:
            raise faults.Interrupted(signal.SIGTERM)

    monkeypatch.setattr(checkpoints, "save", stop_after_step_4)
    stopped = tmp_path / "stopped"
    with pytest.raises(faults.Interrupted):
        experiment.run(typed_config(*args), stopped)
    assert json.loads((stopped / "metrics.json").read_text())["steps"] == 3  # last snapshot
    assert (stopped / checkpoints.NAME).exists()
    monkeypatch.undo()
    with caplog.at_level(logging.INFO):
        experiment.run(typed_config(*args, "attack.checkpoint_every=5"), stopped)  # free key
    assert "resuming from the checkpoint at step 4" in caplog.text
    assert run_files(stopped) == run_files(tmp_path / "whole")
    assert not (stopped / checkpoints.NAME).exists()


def test_a_checkpoint_of_other_settings_is_not_used(tmp_path, caplog):
    checkpoints.save(tmp_path, {"seed": 1, "threads": 1}, {"attack": {}})
    with caplog.at_level(logging.WARNING):
        assert checkpoints.load(tmp_path, {"seed": 2, "threads": 1}, torch.device("cpu")) is None
    assert "was made with other settings (seed=1, not 2): starting from step 0" in caplog.text
    assert checkpoints.load(tmp_path, {"seed": 1, "threads": 4}, torch.device("cpu")) is not None
    (tmp_path / checkpoints.NAME).write_bytes(b"half a file")
    assert checkpoints.load(tmp_path, {"seed": 1}, torch.device("cpu")) is None
    assert "cannot be read" in caplog.text
