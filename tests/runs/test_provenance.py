"""metrics.json says what produced it (version, commit, libraries, device, host, times),
as flat keys that summary.csv carries and ``compare --group-by`` can use."""

import json
import subprocess
from datetime import datetime

import torch
from helpers import REPO, cli

from gradinv_exp import compare
from gradinv_exp.runs import provenance

KEYS = [
    "version", "git_commit", "git_dirty", "python", "torch", "torchvision", "device_name",
    "host", "started", "ended", "wall_s", "run_s",
]  # fmt: skip


def test_git_names_the_commit_and_whether_tracked_files_changed(tmp_path):
    assert provenance.git(tmp_path) == (None, None)  # not a checkout: an installed wheel

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    run("init", "-q")
    (tmp_path / "f").write_text("1")
    run("add", "f")
    run("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
    head = subprocess.run(
        ["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    assert provenance.git(tmp_path) == (head, False)
    (tmp_path / "untracked").write_text("x")  # not a change of the code
    assert provenance.git(tmp_path) == (head, False)
    (tmp_path / "f").write_text("2")
    assert provenance.git(tmp_path) == (head, True)


def test_metrics_json_records_what_produced_it_and_compare_groups_by_it(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", "defense=prune", "defense.ratio=0.2,0.9", "dataset=photos"]
    args += ["dataset.image_size=16", "attack.iterations=2", f"hydra.sweep.dir={sweep}"]
    proc = cli(args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((sweep / "0" / "metrics.json").read_text())
    assert all(k in metrics for k in KEYS), [k for k in KEYS if k not in metrics]
    assert metrics["torch"] == torch.__version__ and metrics["device_name"].startswith("cpu")
    assert metrics["git_commit"] == provenance.git(REPO)[0]  # run from this checkout
    start, end = (datetime.fromisoformat(metrics[k]) for k in ("started", "ended"))
    assert start <= end and metrics["run_s"] >= metrics["wall_s"] > 0
    out = tmp_path / "report"
    assert compare.main([str(sweep), "--group-by", "torch", "--out", str(out)]) == 0
    assert (out / "compare.csv").is_file()
