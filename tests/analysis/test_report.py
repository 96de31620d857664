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
    ignored = f"hydra.sweep.dir={tmp_path / 'ignored'}"  # a sweep's setting: warned
    proc = cli([*tiny, f"hydra.run.dir={tmp_path / 'one'}", ignored], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stderr.splitlines()[0] == (
        f"gradinv-exp: warning: {ignored} applies to sweeps (-m) only: this single run "
        f"writes to {tmp_path / 'one'} (set hydra.run.dir to choose its folder)"
    )
    assert not (tmp_path / "ignored").exists()
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


def test_offline_stand_in_reaches_summary_csv_and_every_figures_title(tmp_path):
    """A run whose configured data set was replaced by the bundled photos says so in its
    reconstruction's title, in summary.csv (``offline``) and in the sweep figures' titles."""
    import json

    from gradinv_exp.analysis import figures, summary

    offline = report.run_title(METRICS)
    assert (
        offline == "ok  PSNR 23.46 dB  SSIM 0.812 (offline: bundled photos stand in for cifar100)"
    )
    same = {**METRICS, "config": {"dataset.name": "photos"}}
    assert "offline" not in report.run_title(same)
    for name, metrics in (("a", METRICS), ("b", same)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(json.dumps(metrics))
    frame, _ = summary.collect([tmp_path])
    assert frame.set_index(frame["run"].map(lambda r: r[-1]))["offline"].to_dict() == {
        "a": True,
        "b": False,
    }
    note = report.stand_in(frame)
    assert note == "offline: bundled photos stand in for cifar100"
    assert report.stand_in(frame[frame["offline"] == False]) == ""  # noqa: E712
    written = summary.write(frame, tmp_path)
    assert pd.read_csv(written[0])["offline"].tolist() == frame["offline"].tolist()
    labels = [summary.label(row, []) for _, row in frame.iterrows()]
    assert figures.comparison(frame, labels, note=note).get_suptitle() == note
    assert figures.curves(frame, "psnr", note=note).get_suptitle() == note
    assert figures.curves(frame, "psnr").get_suptitle() == ""


def test_the_sweep_table_sorts_strengths_by_value_and_shows_what_else_varies():
    """bits 1, 2, 3, 4, 6, 8, 16 in that order (not as text: 1, 16, 2 ...); jobs of one
    defense and strength that differ in a swept key (seed, attack.adaptive) get its column,
    and a key that follows the others (optimizer.name beside attack.name) does not."""
    rows = [
        {**METRICS, "defense": "quantize", "strength_key": "bits", "strength": b,
         "config.seed": 0, "config.attack.adaptive": False}
        for b in (16, 1, 8, 2, 6, 3, 4)
    ]  # fmt: skip
    lines = report.sweep_table(pd.DataFrame(rows)).splitlines()
    assert [line.split()[1] for line in lines[1:]] == [f"bits={b}" for b in (1, 2, 3, 4, 6, 8, 16)]
    assert "seed" not in lines[0] and "adaptive" not in lines[0]  # the same in every job
    twice = [
        {**METRICS, "defense": "noise", "strength_key": "sigma", "strength": 1e-3,
         "config.seed": seed, "config.attack.adaptive": adaptive, "config.attack.name": attack,
         "config.optimizer.name": "lbfgs" if attack == "dlg" else "adam"}
        for seed in (0, 8) for adaptive in (False, True) for attack in ("dlg", "ig")
    ]  # fmt: skip
    lines = report.sweep_table(pd.DataFrame(twice)).splitlines()
    assert lines[0].split()[:5] == ["defense", "strength", "seed", "attack.adaptive", "attack.name"]
    cells = [tuple(line.split()[2:5]) for line in lines[1:]]
    assert len(set(cells)) == 8  # no two rows print alike
    assert "optimizer.name" not in lines[0]
