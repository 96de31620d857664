"""End to end, one run at a time: the command line writes every file and the files agree
with each other (metrics.json scores the reconstruction in images.npz, history.csv's last
row is that reconstruction, a batch is saved matched to the truth), trials aggregate,
batches and restarts, the user's own images; the same seed gives the same result."""

import json
import os
import stat

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import FAST, typed_config
from PIL import Image

from gradinv_exp import experiment
from gradinv_exp.analysis import figures, metric_table, metrics
from gradinv_exp.runs import artifacts

RUN_FILES = ("metrics.json", "history.csv", "progress.png", "reconstruction.png", "loss.png")
METRIC_KEYS = (
    "mse", "psnr", "ssim", "label_acc", "grad_loss", "defense_rel_error", "defense_cosine",
    "steps", "wall_s", "status",
)  # fmt: skip


def check_files(out, truth: torch.Tensor) -> dict:
    """The files of a finished run in ``out`` agree with each other and with ``truth``
    (T, B, C, H, W): images.npz holds the truth and the reconstruction, matched to it,
    that metrics.json scores image by image; history.csv's last row is that
    reconstruction; reconstruction.png shows it. Returns metrics.json."""
    m = json.loads((out / "metrics.json").read_text())
    saved = np.load(out / "images.npz")
    assert saved["truth"].shape == saved["recon"].shape == tuple(truth.shape)
    assert np.array_equal(saved["truth"], truth.numpy())
    recon = torch.from_numpy(saved["recon"])
    assert recon.min() >= 0 and recon.max() <= 1
    per_image = m["per_image"]
    for t in range(len(truth)):  # image i of the file is the one scored against truth i
        assert metrics.mse(truth[t], recon[t]).tolist() == pytest.approx(per_image["mse"][t])
        assert metrics.psnr(truth[t], recon[t]).tolist() == pytest.approx(per_image["psnr"][t])
    assert 0 <= m["mse"] <= 1 and 0 < m["psnr"] <= metric_table.PSNR_CAP_DB and -1 <= m["ssim"] <= 1
    assert m["mse"] == pytest.approx(np.mean(m["per_image"]["mse"]))
    assert 0 <= m["label_acc"] <= 1 and m["grad_loss"] >= 0
    last = pd.read_csv(out / "history.csv").iloc[-1]
    # the loop's last step; ``steps`` counts those that moved the trials (a trial that
    # L-BFGS no longer moves leaves before the loop ends)
    assert 1 <= m["steps"] <= last["step"]
    assert last["mse"] == pytest.approx(m["mse"]) and last["psnr"] == pytest.approx(m["psnr"])
    assert last["grad_loss"] == pytest.approx(m["grad_loss"])
    title = f"{m['status']}  PSNR {m['psnr']:.2f} dB  SSIM {m['ssim']:.3f}"
    artifacts.save_figure(out / "expected.png", figures.reconstruction(truth, recon, title))
    shown = np.asarray(Image.open(out / "reconstruction.png"))
    assert np.array_equal(shown, np.asarray(Image.open(out / "expected.png")))
    return m


def test_single_run_writes_every_artifact(run_cli, tmp_path):
    out = tmp_path / "run"
    umask = os.umask(0o022)  # the command inherits it
    try:
        proc = run_cli(*FAST, "defense=noise", "defense.sigma=0.01", f"hydra.run.dir={out}")
    finally:
        os.umask(umask)
    assert proc.returncode == 0, proc.stderr
    for name in RUN_FILES:
        assert (out / name).stat().st_size > 0, name
    modes = {p.relative_to(out): stat.S_IMODE(p.stat().st_mode) for p in out.rglob("*")}
    assert modes == {p: 0o755 if (out / p).is_dir() else 0o644 for p in modes}  # readable
    truth, _, _ = experiment.load_data(typed_config(*FAST))
    metrics = check_files(out, truth)
    assert set(METRIC_KEYS) <= set(metrics)
    # L-BFGS stops moving a trial it cannot improve: the loop may end before step 6
    assert metrics["status"] == "ok" and 1 <= metrics["steps"] <= 6
    assert metrics["config"]["defense.sigma"] == 0.01
    assert 0 < metrics["defense_cosine"] < 1 and metrics["defense_rel_error"] > 0
    history = pd.read_csv(out / "history.csv")
    assert list(history.columns) == ["step", "grad_loss", "mse", "psnr"]
    assert history["step"].tolist() in ([0, 3], [0, 3, 6])  # the initial dummy is step 0
    assert "step    3/6" in proc.stdout  # progress is logged while the attack runs


def test_a_batch_is_scored_and_saved_matched_to_the_truth(tmp_path):
    """B = 3 images in 2 trials: the attack finds trial 1's images in another order, and
    every file shows and scores them matched to the truth."""
    cfg = typed_config(*FAST, "dataset.batch_size=3", "trials=2", "dataset.image_size=16")
    summary = experiment.run(cfg, tmp_path)
    assert summary["per_image"]["order"][1] != [0, 1, 2]  # not the identity: a real test
    truth, _, _ = experiment.load_data(cfg)
    saved = check_files(tmp_path, truth)
    assert np.array(saved["per_image"]["psnr"]).shape == (2, 3)


def test_same_seed_same_result_and_other_seed_differs(tmp_path):
    def result(seed: int, name: str) -> dict:  # in-process: the CLI adds only start-up time
        cfg = typed_config(*FAST, "defense=noise", f"seed={seed}")
        return experiment.run(cfg, tmp_path / name)

    a, b, c = result(3, "a"), result(3, "b"), result(4, "c")
    assert a["psnr"] == b["psnr"] and a["per_image"] == b["per_image"]
    assert a["psnr"] != c["psnr"]


def test_idlg_over_trials_reports_label_acc_and_statistics(run_cli, tmp_path):
    out = tmp_path / "run"
    proc = run_cli(*FAST, "attack=idlg", "trials=3", f"hydra.run.dir={out}")
    assert proc.returncode == 0, proc.stderr
    m = json.loads((out / "metrics.json").read_text())
    assert m["label_acc"] == 1.0 and m["recovered_labels"] == m["labels"]
    assert len({label for (label,) in m["labels"]}) == 3  # three photos drawn, none twice
    per_trial = np.array(m["per_image"]["psnr"]).mean(axis=1)
    assert len(per_trial) == 3 and m["psnr"] == pytest.approx(per_trial.mean())
    assert m["psnr_std"] == pytest.approx(per_trial.std()) and m["psnr_min"] == per_trial.min()


def test_ig_on_a_batch_with_restarts_writes_every_artifact(run_cli, tmp_path):
    out = tmp_path / "run"
    args = [*FAST, "attack=ig", "attack.restarts=2", "dataset.batch_size=4"]
    args.append("dataset.image_size=16")
    proc = run_cli(*args, f"hydra.run.dir={out}")
    assert proc.returncode == 0, proc.stderr
    for name in RUN_FILES:
        assert (out / name).stat().st_size > 0, name
    m = check_files(out, experiment.load_data(typed_config(*args))[0])
    assert m["config"]["optimizer.name"] == "adam" and m["steps"] == 6
    assert np.array(m["per_image"]["psnr"]).shape == (1, 4)
    assert sorted(m["per_image"]["order"][0]) == [0, 1, 2, 3]  # a one-to-one matching
    assert sorted(m["recovered_labels"][0]) == sorted(m["labels"][0])  # the batch label rule
    grid = Image.open(out / "reconstruction.png")
    assert grid.width > 2 * grid.height  # a row of 4 images per panel


def test_user_image_folder_runs(tmp_path):
    root = tmp_path / "mine" / "only_class"
    root.mkdir(parents=True)
    pixels = np.random.default_rng(0).integers(0, 256, (20, 20, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(root / "a.png")
    cfg = typed_config("dataset=folder", f"dataset.root={root.parent}", "attack.iterations=2")
    summary = experiment.run(cfg, tmp_path / "run")
    assert summary["data_source"] == "folder" and summary["labels"] == [[0]]
    attacked = np.load(tmp_path / "run" / "images.npz")["truth"][0, 0]  # (3, 32, 32)
    upscaled = np.asarray(Image.fromarray(pixels).resize((32, 32), Image.BILINEAR)) / 255
    assert np.abs(attacked.transpose(1, 2, 0) - upscaled).mean() < 0.01  # the user's image
