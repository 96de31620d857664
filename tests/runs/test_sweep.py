"""Sweeps end to end: presets, one folder per job, the summary the command line writes
when a sweep ends, parallel and cluster launchers.

Each command line costs seconds of imports, so one sequential seed_defenses sweep (the
``seed_sweep`` fixture, tests/runs/conftest.py) is the reference that the other tests
re-run, resume and compare against.
"""

import json
import subprocess
import sys

import pandas as pd
import pytest
from helpers import FAST, REPO, cli, compose_config, preflight_check, typed_config
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from gradinv_exp import defenses
from gradinv_exp.runs import preflight

COMPARED = ("status", "psnr", "ssim", "mse", "label_acc", "grad_loss", "defense_rel_error")


def by_defense(sweep):
    frame = pd.read_csv(sweep / "summary.csv")
    return frame.set_index("defense")


def test_seed_defenses_preset_writes_summary_and_figures(seed_sweep):
    frame = by_defense(seed_sweep)
    assert sorted(frame.index) == ["noise", "none", "prune", "quantize"]
    assert (frame["status"] == "ok").all() and frame["psnr"].notna().all()
    assert frame.loc["prune", "strength"] == 0.2 and frame.loc["quantize", "strength"] == 4
    assert frame.loc["noise", "strength"] == 1e-3 and pd.isna(frame.loc["none", "strength"])
    assert frame.loc["none", "defense_rel_error"] == 0 < frame.loc["prune", "defense_rel_error"]
    for name in ("comparison.png", "curves.png"):
        assert (seed_sweep / name).stat().st_size > 1000, name


def test_multirun_gives_each_job_its_folder(run_cli, tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_cli("-m", *FAST, "defense=none,prune,quantize,noise", f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 0, proc.stderr
    names = [json.loads((sweep / str(i) / "metrics.json").read_text())["config"]["defense.name"]
             for i in range(4)]  # fmt: skip
    assert names == ["none", "prune", "quantize", "noise"]


def test_an_override_that_narrows_a_preset_runs_and_lists_only_its_jobs(run_cli, tmp_path):
    """``+experiment=dp_sweep defense.noise_multiplier=0.5``: the value replaces the preset's
    sweep of it (Hydra's basic sweeper), so one job runs, and the summary and the printed
    table have one row; the command exits 0."""
    sweep = tmp_path / "sweep"
    args = ["+experiment=dp_sweep", "hydra/launcher=basic", "defense.noise_multiplier=0.5"]
    proc = run_cli(*args, *FAST, "dataset.image_size=16", f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    frame = pd.read_csv(sweep / "summary.csv")
    assert frame["status"].tolist() == ["ok"] and frame["strength"].tolist() == [0.5]
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0"]
    rows = [line.split()[:3] for line in proc.stdout.splitlines() if line.split()[:1] == ["dp"]]
    assert rows == [["dp", "noise_multiplier=0.5", "ok"]]


@pytest.mark.slow
def test_joblib_gives_the_sequential_metrics(seed_sweep, joblib_sweep):
    parallel, sequential = by_defense(joblib_sweep), by_defense(seed_sweep)
    assert sorted(parallel.index) == ["noise", "none"]
    for defense in parallel.index:
        for key in COMPARED:
            assert parallel.loc[defense, key] == sequential.loc[defense, key], (defense, key)


def test_compare_over_two_sweep_folders(seed_sweep, joblib_sweep, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "gradinv_exp.compare", str(seed_sweep), str(joblib_sweep),
         "--out", str(tmp_path / "cmp")],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines()[1:] if "sweep/" in line]
    assert len(rows) == 6
    assert [r[1] for r in rows] == ["none", "none", "noise", "noise", "prune", "quantize"]
    assert len(pd.read_csv(tmp_path / "cmp" / "compare.csv")) == 6


@pytest.mark.slow
def test_submitit_local_launcher_end_to_end(tmp_path):
    """The submitit plugin (as on SLURM) launching real jobs, here on this machine."""
    sweep = tmp_path / "sweep"
    args = ["-m", *FAST, "defense=prune", "hydra/launcher=submitit_local"]  # one job: slow
    proc = cli([*args, f"hydra.sweep.dir={sweep}"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    frame = pd.read_csv(sweep / "summary.csv")
    assert frame["defense"].tolist() == ["prune"] and frame["status"].tolist() == ["ok"]
    assert (sweep / ".submitit").is_dir()  # really went through submitit


@pytest.mark.parametrize(
    ("preset", "expected"),
    [
        ("seed_defenses", [("none", None), ("prune", 0.2), ("quantize", 4), ("noise", 1e-3)]),
        ("prune_sweep", [("prune", r / 10) for r in range(1, 10)]),
        ("quantize_sweep", [("quantize", b) for b in range(1, 17)]),
        ("noise_sweep", [("noise", s) for s in (1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2,
                                                 5e-2, 1e-1)]),
        ("all_defenses", [("prune", r) for r in (0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9)]
         + [("quantize", b) for b in (16, 8, 6, 4, 3, 2, 1)]
         + [("noise", s) for s in (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)]),
    ],
)  # fmt: skip
def test_preset_jobs_have_the_documented_strengths(preset, expected):
    """Each preset's jobs, expanded as Hydra's basic sweeper does, in order."""
    command = OverridesParser.create().parse_overrides([f"+experiment={preset}"])
    first = compose_config(f"+experiment={preset}", hydra=True)
    assert str(first.hydra.mode) == "RunMode.MULTIRUN"  # sweeps without -m
    params = OmegaConf.to_container(first.hydra.sweeper.params)
    found = [typed_config(*job).defense for job in preflight.jobs(command, params)]
    keys = [defenses.DEFENSES[d.name].strength for d in found]
    assert [(d.name, getattr(d, k) if k else None) for d, k in zip(found, keys)] == expected


def test_topk_sweep_preset_sweeps_keep():
    cfg = compose_config("+experiment=topk_sweep", hydra=True)
    assert cfg.defense.name == "topk" and str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    assert cfg.hydra.sweeper.params["defense.keep"] == "0.01,0.03,0.1,0.3,1.0"
    plan = preflight_check(["+experiment=topk_sweep"])  # every job's config is valid
    assert plan is not None and plan.multirun
    assert [c.defense.keep for c in plan.configs] == [0.01, 0.03, 0.1, 0.3, 1.0]
