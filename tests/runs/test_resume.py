"""Resume: a command re-run into the same folder skips the finished runs (status ok or
diverged), runs the others again (failed, interrupted, missing metrics.json), for sweeps,
custom sweep sub-folders and single runs, and refuses a folder whose finished run has
other overrides; a stopped run continues from its checkpoint and ends as if it had never
been stopped."""

import json
import logging
import shutil
import signal

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import FAST, SEED_DEFENSES, cli, typed_config

from gradinv_exp import config, experiment
from gradinv_exp.base.options import ConfigError
from gradinv_exp.runs import checkpoints, faults, preflight, provenance, resume

DEFENSES = ("none", "prune", "quantize", "noise")  # seed_defenses' jobs 0 .. 3


def by_defense(sweep):
    frame = pd.read_csv(sweep / "summary.csv")
    return frame.set_index("defense")


def set_status(run_dir, status):
    """Make ``run_dir``'s finished run look like one that ended with ``status``."""
    path = run_dir / "metrics.json"
    metrics = json.loads(path.read_text())
    if status == "failed":  # what faults.record_failure writes
        metrics = {"status": "failed", "error": "RuntimeError: boom", "config": metrics["config"]}
    path.write_text(json.dumps(metrics | {"status": status}))


def snapshot(run_dir):
    """Every file of a run folder -> (bytes, mtime), but Hydra's own (.hydra/, the log)
    and the lock files, which each command that visits the folder takes (their pid)."""
    return {
        p.relative_to(run_dir): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in run_dir.rglob("*")
        if p.is_file() and ".hydra" not in p.parts and p.suffix not in {".log", ".lock"}
    }


def test_only_ok_and_diverged_runs_count_as_finished(tmp_path):
    statuses = ("ok", "diverged", "failed", "interrupted")
    for status in statuses:
        (tmp_path / status).mkdir()
        (tmp_path / status / "metrics.json").write_text(json.dumps({"status": status}))
    found = [s for s in statuses if resume.finished(tmp_path / s)]
    assert found == ["ok", "diverged"]
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "metrics.json").write_text('{"status": "o')
    assert resume.finished(tmp_path / "half") is None and resume.finished(tmp_path) is None


def finished_run(run_dir, overrides, status="ok"):
    """A folder as a finished run leaves it: Hydra's overrides.yaml and metrics.json."""
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (run_dir / "metrics.json").write_text(json.dumps({"status": status}))


@pytest.mark.parametrize("status", ["ok", "diverged"])
def test_a_finished_single_run_with_other_overrides_is_refused_before_it_runs(tmp_path, status):
    config.register()
    finished_run(tmp_path / "run", ["defense=prune"], status)
    same = preflight.plan(["defense=prune", f"hydra.run.dir={tmp_path / 'run'}"])
    assert same is not None and not same.multirun  # the same run: allowed (it is skipped)
    with pytest.raises(ConfigError, match="holds a finished run of \\[defense=prune\\]"):
        preflight.plan(["defense=noise", f"hydra.run.dir={tmp_path / 'run'}"])


@pytest.mark.parametrize("status", ["failed", "interrupted"])
def test_an_unfinished_run_may_be_replaced_by_another(tmp_path, status):
    config.register()
    finished_run(tmp_path / "run", ["defense=prune"], status)
    assert preflight.plan(["defense=noise", f"hydra.run.dir={tmp_path / 'run'}"]) is not None
    finished_run(tmp_path / "sweep" / "1", ["defense=prune"], status)
    sweep = ["-m", "defense=none,noise", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    assert preflight.plan(sweep) is not None


def test_a_sweep_job_folder_with_another_finished_run_is_refused(tmp_path):
    config.register()
    finished_run(tmp_path / "sweep" / "1", ["defense=prune"])
    with pytest.raises(ConfigError, match=f"{tmp_path / 'sweep' / '1'} holds a finished run"):
        preflight.plan(["-m", "defense=none,noise", f"hydra.sweep.dir={tmp_path / 'sweep'}"])


def test_a_custom_job_folder_with_another_finished_run_is_refused(tmp_path):
    """Each job's folder is its ``hydra.sweep.subdir`` resolved with the job's config."""
    config.register()
    sweep = tmp_path / "sweep"
    finished_run(sweep / "prune", ["defense=prune", "seed=0"])
    args = ["-m", "defense=none,prune", f"hydra.sweep.dir={sweep}"]
    named = [*args, "hydra.sweep.subdir=${defense.name}"]
    assert preflight.plan([*named, "seed=0"]) is not None  # the same run: resumed
    with pytest.raises(ConfigError, match=f"{sweep / 'prune'} holds a finished run"):
        preflight.plan([*named, "seed=1"])
    # a folder Hydra alone can name (its own resolver) is not checked, and not an error
    assert preflight.plan([*args, "hydra.sweep.subdir=${hydra:job.num}", "seed=1"]) is not None


# --- through the command line (each costs seconds of imports) ---


def test_sweep_rerun_skips_ok_and_diverged_and_reruns_missing_and_failed(seed_sweep, tmp_path):
    sweep = tmp_path / "sweep"
    shutil.copytree(seed_sweep, sweep)
    set_status(sweep / "1", "diverged")
    (sweep / "2" / "metrics.json").unlink()  # job 2 was killed
    set_status(sweep / "3", "failed")
    (sweep / "summary.csv").unlink()
    kept = {n: snapshot(sweep / n) for n in ("0", "1")}
    # the launcher that wrote the sweep (a batch's rows round differently from a job alone)
    proc = cli([*SEED_DEFENSES, "hydra/launcher=basic", f"hydra.sweep.dir={sweep}"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("already finished") == 2
    assert "status ok" in proc.stdout and "status diverged" in proc.stdout
    for n in kept:
        assert snapshot(sweep / n) == kept[n]  # not one file rewritten
    reference = by_defense(seed_sweep)
    for n in ("2", "3"):
        redone = json.loads((sweep / n / "metrics.json").read_text())
        defense = DEFENSES[int(n)]
        assert redone["status"] == "ok" and redone["config"]["defense.name"] == defense
        assert redone["psnr"] == reference.loc[defense, "psnr"]  # same seed, same result
    assert by_defense(sweep)["status"].to_dict() == dict.fromkeys(DEFENSES, "ok") | {
        "prune": "diverged"
    }

    other = cli([*SEED_DEFENSES, "attack.iterations=5", f"hydra.sweep.dir={sweep}"], tmp_path)
    assert other.returncode == 2
    assert other.stderr.count("\n") == 1 and "holds a finished run" in other.stderr
    assert snapshot(sweep / "0") == kept["0"]


def test_custom_sweep_subfolders_resume_by_status(seed_sweep, tmp_path):
    """Job folders named by ``hydra.sweep.subdir`` (here the defense) resume the same way."""
    sweep = tmp_path / "named"
    for n, defense in enumerate(DEFENSES):
        shutil.copytree(seed_sweep / str(n), sweep / defense)
    set_status(sweep / "quantize", "interrupted")
    kept = {d: snapshot(sweep / d) for d in DEFENSES if d != "quantize"}
    args = [*SEED_DEFENSES, f"hydra.sweep.dir={sweep}", "hydra.sweep.subdir=${defense.name}"]
    proc = cli(args, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("already finished") == 3
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == sorted(DEFENSES)
    for d in kept:
        assert snapshot(sweep / d) == kept[d]
    redone = json.loads((sweep / "quantize" / "metrics.json").read_text())
    assert redone["status"] == "ok"
    assert redone["psnr"] == by_defense(seed_sweep).loc["quantize", "psnr"]
    assert by_defense(sweep)["status"].eq("ok").all()


def test_single_run_reruns_an_interrupted_run_and_skips_a_finished_one(seed_sweep, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(seed_sweep / "3", out)  # the noise job: the same config as below
    set_status(out, "interrupted")
    args = [*FAST, "defense=noise", f"hydra.run.dir={out}"]
    first = cli(args, tmp_path)
    assert first.returncode == 0, first.stderr
    assert "already finished" not in first.stdout
    redone = json.loads((out / "metrics.json").read_text())
    assert redone["status"] == "ok"
    assert redone["psnr"] == by_defense(seed_sweep).loc["noise", "psnr"]

    set_status(out, "diverged")
    kept = snapshot(out)
    second = cli(args, tmp_path)
    assert second.returncode == 0, second.stderr
    assert "already finished (status diverged)" in second.stdout
    assert snapshot(out) == kept


def run_files(run_dir) -> dict:
    """What a finished run wrote, without the clock's values (which an interruption changes)."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in provenance.CLOCK:
        metrics.pop(key)
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
