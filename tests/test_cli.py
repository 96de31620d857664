"""End to end through the command line: files written, sweeps, bad input rejected."""

import json

import pandas as pd
import pytest
from conftest import FAST, typed_config

from gradinv_exp import run

RUN_FILES = ("metrics.json", "history.csv", "progress.png", "reconstruction.png", "loss.png")
METRIC_KEYS = (
    "mse", "psnr", "ssim", "label_acc", "grad_loss", "defense_rel_error", "defense_cosine",
    "steps", "wall_s", "status",
)  # fmt: skip


def test_single_run_writes_every_artifact(run_cli, tmp_path):
    out = tmp_path / "run"
    proc = run_cli(*FAST, "defense=noise", "defense.sigma=0.01", f"hydra.run.dir={out}")
    assert proc.returncode == 0, proc.stderr
    for name in RUN_FILES:
        assert (out / name).stat().st_size > 0, name
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(METRIC_KEYS) <= set(metrics)
    assert metrics["status"] == "ok" and metrics["steps"] == 6
    assert metrics["config"]["defense.sigma"] == 0.01
    assert 0 < metrics["defense_cosine"] < 1 and metrics["defense_rel_error"] > 0
    history = pd.read_csv(out / "history.csv")
    assert list(history.columns) == ["step", "grad_loss", "mse", "psnr"]
    assert history["step"].tolist() == [0, 3, 6]  # the initial dummy is step 0
    assert "step    6/6" in proc.stdout  # progress is logged while the attack runs


def test_same_seed_same_result_and_other_seed_differs(tmp_path):
    def result(seed: int, name: str) -> dict:  # in-process: the CLI adds only start-up time
        return run.run(typed_config(*FAST, "defense=noise", f"seed={seed}"), tmp_path / name)

    a, b, c = result(3, "a"), result(3, "b"), result(4, "c")
    assert a["psnr"] == b["psnr"] and a["per_image"] == b["per_image"]
    assert a["psnr"] != c["psnr"]


def test_multirun_gives_each_job_its_folder(run_cli, tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_cli("-m", *FAST, "defense=none,prune,quantize,noise", f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 0, proc.stderr
    names = [json.loads((sweep / str(i) / "metrics.json").read_text())["config"]["defense.name"]
             for i in range(4)]  # fmt: skip
    assert names == ["none", "prune", "quantize", "noise"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["defense=bogus"], "defense=bogus is not an option of 'defense': choose one of chain"),
        (["defense=noise", "defense.sigma=-1"], "defense.sigma=-1.0 is not allowed: must be >= 0"),
        (["defense=prune", "defense.ratio=1.5"], "defense.ratio=1.5 is not allowed: must be in"),
        (["defense=quantize", "defense.bits=0"], "defense.bits=0 is not allowed"),
        (["defense=quantize", "defense.bits=four"], "could not be converted to Integer"),
        (["-m", "defense=prune", "defense.ratio=0.2,2.0"], "defense.ratio=2.0 is not allowed"),
        (["model=vgg"], "model=vgg is not an option of 'model': choose one of convnet, lenet"),
    ],
)  # fmt: skip
def test_bad_input_fails_fast_with_one_line(run_cli, tmp_path, args, expected):
    proc = run_cli(
        *args, f"hydra.run.dir={tmp_path / 'never'}", f"hydra.sweep.dir={tmp_path / 'never'}"
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("gradinv-exp: error: ") and expected in lines[0]
    assert not (tmp_path / "never").exists()  # nothing ran, nothing was written
