"""What a run and a sweep print when they end: the run's folder and one result line; the
sweep's table (defense, strength, PSNR [interval], success) and its figures' paths."""

import pandas as pd
from helpers import cli

from gradinv_exp.analysis import report

METRICS = {
    "status": "ok",
    "data_source": "photos",
    "psnr": 23.456,
    "psnr_ci_low": 20.0,
    "psnr_ci_high": 26.9,
    "ssim": 0.81234,
    "label_acc": 1.0,
    "label_acc_ci_low": 0.7,
    "label_acc_ci_high": 1.0,
    "success_rate": 0.75,
    "success_rate_ci_low": 0.3,
    "success_rate_ci_high": 0.95,
    "success_criterion": "psnr >= 20",
    "config": {"dataset.name": "cifar100"},
}


def test_the_result_line_gives_each_metric_its_interval_and_says_offline():
    line = report.result_line(METRICS)
    assert line == (
        "result: ok: PSNR 23.5 dB [20.0, 26.9], SSIM 0.812, label acc 1.00 [0.70, 1.00], "
        "success 0.75 [0.30, 0.95] (psnr >= 20) (offline: bundled photos stand in for cifar100)"
    )
    same_data = {**METRICS, "config": {"dataset.name": "photos"}, "ssim": None}
    assert "offline" not in report.result_line(same_data)
    assert "SSIM n/a," in report.result_line(same_data)


def test_the_sweep_table_has_one_row_per_job_sorted_by_defense_and_strength():
    frame = pd.DataFrame(
        [
            {**METRICS, "defense": "prune", "strength_key": "ratio", "strength": 0.9, "psnr": 5.0},
            {**METRICS, "defense": "prune", "strength_key": "ratio", "strength": 0.2},
            {"defense": "none", "status": "failed", "psnr": float("nan")},
        ]
    )
    lines = report.sweep_table(frame).splitlines()
    header = ["defense", "strength", "status", "PSNR", "[dB]", "success", "batch", "recovered"]
    assert lines[0].split() == [*header, "data"]
    assert lines[1].split()[:4] == ["none", "-", "failed", "n/a"]
    assert lines[2].split()[:6] == ["prune", "ratio=0.2", "ok", "23.5", "[20.0,", "26.9]"]
    assert lines[3].split()[:4] == ["prune", "ratio=0.9", "ok", "5.0"]


def test_a_run_prints_its_folder_and_a_sweep_its_table_and_figures(tmp_path):
    tiny = ["dataset=photos", "dataset.image_size=16", "attack.iterations=2"]
    proc = cli([*tiny, f"hydra.run.dir={tmp_path / 'one'}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert lines[-2] == f"run folder: {tmp_path / 'one'}"
    assert lines[-1].startswith("result: ok: PSNR ") and " dB" in lines[-1]
    sweep = tmp_path / "sweep"
    args = ["-m", "defense=prune", "defense.ratio=0.2,0.9", *tiny, f"hydra.sweep.dir={sweep}"]
    proc = cli(args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout.splitlines()
    assert "run folder:" not in proc.stdout  # jobs of a sweep: only the table
    rows = [line.split() for line in out if line.lstrip().startswith("prune")]
    assert [r[1] for r in rows] == ["ratio=0.2", "ratio=0.9"]
    assert out[-3:] == [
        f"summary: {sweep / 'summary.csv'}",
        f"figure: {sweep / 'comparison.png'}",
        f"figure: {sweep / 'curves.png'}",
    ]
