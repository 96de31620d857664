"""Run folders -> one table and figures (summary.collect/write), the sweep summary the
command line writes when a sweep ends, and the compare command."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers import REPO

from gradinv_exp import compare
from gradinv_exp.__main__ import summarise
from gradinv_exp.analysis import report, summary


def fake_run(path, overrides, metrics=None, cfg=None, image_seed=0):
    """A job folder as Hydra + experiment.write leave it (metrics None: the job died early)."""
    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (path / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg or {}))
    if metrics is not None:
        (path / "metrics.json").write_text(json.dumps(metrics))
        rng = np.random.default_rng(image_seed)
        truth = np.random.default_rng(0).random((1, 1, 3, 8, 8), dtype=np.float32)
        np.savez(path / "images.npz", truth=truth, recon=rng.random(truth.shape, dtype=np.float32))


def ok(psnr, defense, **strength):
    flat = {"defense.name": defense, **{f"defense.{k}": v for k, v in strength.items()}}
    scores = {"psnr": psnr, "ssim": psnr / 100, "mse": 1 / psnr, "label_acc": 1.0}
    return {"status": "ok", **scores, "per_image": {"psnr": [[psnr]]}, "config": flat | {"seed": 0}}


@pytest.fixture
def sweeps(tmp_path):
    """Two sweeps from different 'days': ok, failed, died-early and corrupt jobs."""
    a, b = tmp_path / "2026-01-01" / "a", tmp_path / "2026-02-02" / "b"
    fake_run(a / "0", ["defense=none"], ok(30.0, "none"))
    fake_run(a / "1", ["defense=prune", "defense.ratio=0.2"], ok(20.0, "prune", ratio=0.2), 1)
    failed = {"status": "failed", "error": "RuntimeError: boom", "config": {"defense.name": "prune",
              "defense.ratio": 0.5}}  # fmt: skip
    fake_run(a / "2", ["defense=prune", "defense.ratio=0.5"], failed)
    fake_run(a / "3", ["defense=noise"], None, {"defense": {"name": "noise", "sigma": 0.01}})
    fake_run(b / "0", ["defense=noise", "defense.sigma=1e-3"], ok(25.0, "noise", sigma=1e-3), 2)
    fake_run(b / "1", ["defense=noise", "defense.sigma=1e-2"], ok(22.0, "noise", sigma=1e-2), 3)
    (b / "1" / "metrics.json").write_text('{"status": "ok", "psnr": 2')  # half-written file
    return a, b


def test_collect_keeps_failed_and_missing_jobs_and_reports_unreadable(sweeps):
    frame, problems = summary.collect(sweeps)
    assert frame["defense"].tolist() == ["none", "noise", "noise", "prune", "prune"]
    assert frame["status"].tolist() == ["ok", "ok", "missing", "ok", "failed"]
    assert frame["strength"].tolist()[1:] == [1e-3, 1e-2, 0.2, 0.5]  # missing: from config.yaml
    assert frame.loc[4, "error"] == "RuntimeError: boom"
    assert len(problems) == 1 and "b/1/metrics.json" in problems[0]
    assert report.row_keys(frame) == []  # defense and strength tell every row apart


def test_summary_and_figures_written_for_a_sweep(sweeps):
    a, _ = sweeps
    frame, problems = summary.collect([a])
    summary.summarise_sweep(a, frame, problems)
    rows = (a / "summary.csv").read_text().splitlines()
    assert len(rows) == 1 + 4 and len(frame) == 4
    assert {"failed", "missing"} <= set(frame["status"])
    for name in ("comparison.png", "curves.png"):
        assert (a / name).stat().st_size > 1000


def test_failures_name_every_unfinished_job_in_job_order(sweeps):
    a, b = sweeps
    assert summary.failures(*summary.collect([a])) == [
        "job 2: RuntimeError: boom",
        "job 3: no metrics.json",
    ]
    unreadable = summary.failures(*summary.collect([b]))
    assert len(unreadable) == 1 and "b/1/metrics.json" in unreadable[0]


def test_end_of_sweep_writes_the_summary_and_returns_the_failures(sweeps):
    """What the command line does when a sweep ends, whichever launcher ran the jobs
    (it exits 1 with the first line when there is any)."""
    a, b = sweeps
    failures, unwritten, counts = summarise(a)
    assert (failures, unwritten) == (["job 2: RuntimeError: boom", "job 3: no metrics.json"], None)
    assert counts == {"finished": 2, "interrupted": 0, "failed": 1, "missing": 1}
    assert len(pd.read_csv(a / "summary.csv")) == 4
    assert (a / "comparison.png").exists() and (a / "curves.png").exists()
    unreadable, unwritten, _ = summarise(b)
    assert len(unreadable) == 1 and "b/1/metrics.json" in unreadable[0] and unwritten is None
    assert (b / "summary.csv").exists()


def test_a_summary_that_cannot_be_written_still_counts_the_failed_jobs(sweeps, monkeypatch):
    a, _ = sweeps

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(summary, "summarise_sweep", full_disk)
    failures, unwritten, _ = summarise(a)
    assert failures == ["job 2: RuntimeError: boom", "job 3: no metrics.json"]
    assert "No space left on device" in unwritten


def test_compare_prints_one_table_and_writes_files(sweeps, tmp_path, capsys):
    out = tmp_path / "out"
    assert compare.main([*map(str, sweeps), "--out", str(out), "--metric", "ssim"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0].split()[:2] == ["run", "defense"] and "ssim" in lines[0]
    assert len([line for line in lines[1:] if line.strip().startswith("2026-")]) == 5
    assert "skipped" in captured.err and captured.err.count("\n") == 1
    for name in ("compare.csv", "summary.md", "comparison.png", "curves.png"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "summary.md").read_text().startswith("| run")
    assert compare.main([str(sweeps[0]), "--group-by", "seed"]) == 0
    assert compare.main([str(sweeps[0]), "--group-by", "no.such.key"]) == 2


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--pool", "sed"], "compare: error: --pool sed: no such config key in these runs "
                            "(their keys: defense.name, defense.ratio, defense.sigma, seed); "
                            "did you mean 'seed'?"),
        (["--group-by", "defense.sigm"], "compare: error: --group-by defense.sigm: no such "
         "config key in these runs (their keys: defense.name, defense.ratio, defense.sigma, "
         "seed); did you mean 'defense.sigma'?"),
    ],
)  # fmt: skip
def test_compare_names_the_closest_key_and_every_key_of_a_typo(sweeps, capsys, args, expected):
    assert compare.main([*map(str, sweeps), *args]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == expected


def test_compare_on_a_folder_without_runs_names_it_and_exits_2(tmp_path, capsys):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    assert compare.main([str(tmp_path / "empty")]) == 2
    assert capsys.readouterr().err == (
        f"compare: error: no runs in {tmp_path / 'empty'} (a run folder holds metrics.json "
        "or .hydra/)\n"
    )


def test_compare_shows_the_keys_that_tell_runs_apart(tmp_path, capsys):
    """Two runs of one setting that differ in attack.adaptive and the seed: compare's
    table has both columns, with the values the runs used, not only what was overridden."""
    for num, (adaptive, seed) in enumerate([(False, 0), (True, 8)]):
        cfg = ok(20.0, "noise", sigma=1e-3)["config"] | {"attack.adaptive": adaptive, "seed": seed}
        overrides = ["defense=noise", f"attack.adaptive={adaptive}"] + (
            [f"seed={seed}"] if seed else []
        )
        fake_run(
            tmp_path / "s" / str(num), overrides, ok(20.0, "noise", sigma=1e-3) | {"config": cfg}
        )
    assert compare.main([str(tmp_path / "s")]) == 0
    head, *rows = capsys.readouterr().out.splitlines()
    assert head.split()[:3] == ["run", "attack.adaptive", "seed"]
    assert [r.split()[:3] for r in rows] == [["0", "False", "0"], ["1", "True", "8"]]


def test_compare_script_wrapper(sweeps):
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "compare_outputs.py"), str(sweeps[0])],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("prune") == 2 and "failed" in proc.stdout


def test_planned_jobs_without_a_folder_are_missing_rows(sweeps):
    """A sweep stopped early: jobs that never started have no folder, only the command
    line knows them."""
    a, _ = sweeps
    interrupted = {**ok(12.0, "prune", ratio=0.9), "status": "interrupted", "signal": "SIGINT"}
    fake_run(a / "4", ["defense=prune", "defense.ratio=0.9"], interrupted)
    never = (a / "5", ["defense=topk", "defense.keep=0.1", "hydra.sweep.dir=x"],
             {"defense.name": "topk", "defense.keep": 0.1})  # fmt: skip
    known = (a / "0", ["defense=none"], {"defense.name": "none"})
    failures, unwritten, counts = summarise(a, [known, never])
    assert counts == {"finished": 2, "interrupted": 1, "failed": 1, "missing": 2}
    assert failures[-2:] == ["job 4: interrupted by SIGINT", "job 5: never started"]
    frame = pd.read_csv(a / "summary.csv").set_index("defense")
    assert len(frame) == 6 and frame.loc["topk", "status"] == "missing"
    assert frame.loc["topk", "strength"] == 0.1 and frame.loc["topk", "defense.keep"] == 0.1
    assert "hydra.sweep.dir" not in frame  # not a job's setting


def test_curves_split_settings_that_differ_beyond_strength_and_seed():
    """A point of curves.png pools runs of one defense and strength; runs that differ in
    anything but the seed or a tag get their own line, one key per distinction."""
    import pandas as pd

    frame = pd.DataFrame(
        {
            "defense": ["noise"] * 4 + ["none", "none"],
            "strength_key": ["sigma"] * 4 + [None, None],
            "strength": [0.1] * 4 + [None, None],
            "config.defense.sigma": [0.1, 0.1, 0.1, 0.1, None, None],
            "config.defense.distribution": ["gaussian", "laplace"] * 2 + [None, None],
            "config.seed": [0, 0, 1, 1, 0, 1],
            "config.tags.level": [2, 6, 2, 6, None, None],
            "config.attack.name": ["dlg"] * 4 + ["dlg", "ig"],
            "config.optimizer.name": ["lbfgs"] * 4 + ["lbfgs", "adam"],  # follows attack.name
            "config.trials": [4] * 6,
        }
    )
    frame.attrs["override_keys"] = ["defense", "tags.level", "seed"]
    assert summary.line_keys(frame) == ["config.defense.distribution", "config.attack.name"]
    frame.attrs["override_keys"] = ["optimizer.name"]  # what the user swept names the line
    assert summary.line_keys(frame) == ["config.optimizer.name", "config.defense.distribution"]
