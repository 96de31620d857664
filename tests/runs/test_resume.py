"""Resume: a command re-run into the same sweep folder skips the finished jobs, redoes the
others, and refuses a folder whose finished runs have other overrides."""

import json
import shutil

import pandas as pd
from helpers import SEED_DEFENSES, cli

from gradinv_exp.runs import resume


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
