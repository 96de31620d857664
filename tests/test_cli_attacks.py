"""The new attacks, batches and trials through the command line, and their config errors."""

import json
import re

import numpy as np
import pytest
from conftest import FAST, typed_config
from PIL import Image

from gradinv_exp import config, preflight, run
from gradinv_exp.checks import ConfigError

RUN_FILES = ("metrics.json", "history.csv", "progress.png", "reconstruction.png", "loss.png")


def test_idlg_over_trials_reports_label_acc_and_statistics(run_cli, tmp_path):
    out = tmp_path / "run"
    proc = run_cli(*FAST, "attack=idlg", "trials=3", f"hydra.run.dir={out}")
    assert proc.returncode == 0, proc.stderr
    m = json.loads((out / "metrics.json").read_text())
    assert m["label_acc"] == 1.0 and m["recovered_labels"] == m["labels"] == [[0], [1], [2]]
    per_trial = np.array(m["per_image"]["psnr"]).mean(axis=1)
    assert len(per_trial) == 3 and m["psnr"] == pytest.approx(per_trial.mean())
    assert m["psnr_std"] == pytest.approx(per_trial.std()) and m["psnr_min"] == per_trial.min()


def test_ig_on_a_batch_with_restarts_writes_every_artifact(run_cli, tmp_path):
    out = tmp_path / "run"
    proc = run_cli(
        *FAST, "attack=ig", "attack.restarts=2", "dataset.batch_size=4", "dataset.image_size=16",
        f"hydra.run.dir={out}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    for name in RUN_FILES:
        assert (out / name).stat().st_size > 0, name
    m = json.loads((out / "metrics.json").read_text())
    assert m["config"]["optimizer.name"] == "adam" and m["steps"] == 6
    assert np.array(m["per_image"]["psnr"]).shape == (1, 4)
    assert sorted(m["per_image"]["order"][0]) == [0, 1, 2, 3]  # a one-to-one matching
    assert sorted(m["recovered_labels"][0]) == [0, 1, 2, 3]  # the batch label rule
    grid = Image.open(out / "reconstruction.png")
    assert grid.width > 2 * grid.height  # a row of 4 images per panel


def test_user_image_folder_runs(tmp_path):
    root = tmp_path / "mine" / "only_class"
    root.mkdir(parents=True)
    pixels = np.random.default_rng(0).integers(0, 256, (20, 20, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(root / "a.png")
    cfg = typed_config("dataset=folder", f"dataset.root={root.parent}", "attack.iterations=2")
    summary = run.run(cfg, tmp_path / "run")
    assert summary["data_source"] == "folder" and summary["labels"] == [[0]]
    assert (tmp_path / "run" / "metrics.json").exists()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["attack=ig", "optimizer=lbfgs"], "optimizer='lbfgs' is not allowed: attack=ig needs"),
        (["attack=ig", "attack.labels=oracle"], "attack.labels='oracle' is not allowed"),
        (["dataset=folder", "dataset.root=/no/such/dir"], "dataset.root='/no/such/dir'"),
        (["model=resnet18", "model.init=zeros"], "model.init='zeros' is not allowed"),
    ],
)
def test_bad_combinations_fail_in_preflight_with_one_line(args, expected):
    config.register()  # as the command line does, then exactly its check before any job
    with pytest.raises(ConfigError, match=re.escape(expected)) as err:
        preflight.check(args)
    assert "\n" not in str(err.value)
