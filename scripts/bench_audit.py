#!/usr/bin/env python
"""Time the defense audit at a small scale under the batched and the basic launcher, and
project the full audit.

    python scripts/bench_audit.py [--trials 4] [--workers 2] [--device cpu|cuda] \
        [--launchers batched,basic] [OVERRIDE ...]

Runs ``+experiment=defense_audit trials=T`` (its own attacks, budgets and strengths; any
extra overrides are passed on, e.g. ``attack.iterations=50`` to shrink it further) as a
whole command line in a child process per launcher, one after another in one run, so the
machine's other load falls on both alike: ``hydra/launcher=batched`` on ``--workers``
workers and ``hydra/launcher=basic`` (one job at a time in one process). It prints per
launcher the wall time, the jobs and (image, model) pairs, the cost per pair (wall time x
processes / pairs: core-seconds) and the projected wall time of the full audit at
``trials=80``: this run's wall time x 80 / T, linear in the pairs (imports, planning and
compiling do not grow with the trials, so it is an upper bound). ``--device cuda`` runs
the jobs on the GPU (batched: in the command line's process); without one it says so and
runs nothing.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parent.parent
FULL_TRIALS = 80  # the audit's pairs per cell: >= 73 make a "stops it" verdict possible


def run(args: list[str], sweep: Path) -> tuple[float, pd.DataFrame]:
    """Wall seconds and summary.csv of ``python -m gradinv_exp ARGS`` into ``sweep``."""
    env = os.environ | {"PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "gradinv_exp", *args, f"hydra.sweep.dir={sweep}"]
    start = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return wall, pd.read_csv(sweep / "summary.csv")


def commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                          text=True)  # fmt: skip
    return done.stdout.strip() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4, help="pairs per job (the audit: 80)")
    parser.add_argument("--workers", type=int, default=2, help="the batched launcher's workers")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--launchers", default="batched,basic", help="comma list")
    parser.add_argument("overrides", nargs="*", help="more overrides for every job")
    args = parser.parse_args()
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print("cuda: not run (no CUDA GPU on this machine: torch.cuda.is_available() is "
                  "False); the CUDA path is covered by the tests marked for a GPU")  # fmt: skip
            return
    base = ["+experiment=defense_audit", f"trials={args.trials}", f"device={args.device}",
            *args.overrides]  # fmt: skip
    flags = {
        "batched": ["hydra/launcher=batched", f"hydra.launcher.workers={args.workers}"],
        "basic": ["hydra/launcher=basic"],
    }
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.launchers.split(","):
            wall, summary = run([*base, *flags[name]], Path(tmp) / name)
            processes = args.workers if name == "batched" and args.device == "cpu" else 1
            pairs = int(summary["trials"].sum())
            rows.append({
                "launcher": name if name == "basic" else f"batched ({processes} workers)",
                "jobs": len(summary), "pairs": pairs, "wall_s": wall,
                "core_s_per_pair": wall * processes / pairs,
                "full_audit_h": wall * FULL_TRIALS / args.trials / 3600,
                "ok": int((summary["status"] == "ok").sum()),
            })  # fmt: skip
            print(f"{rows[-1]['launcher']:<22} {wall:8.1f} s for {pairs} pairs", flush=True)
    frame = pd.DataFrame(rows)
    if len(frame) == 2:
        ratio = frame["wall_s"].iloc[1] / frame["wall_s"].iloc[0]
        print(f"batched is {ratio:.2f}x as fast as basic")
    print(
        f"defense_audit at trials={args.trials} {' '.join(args.overrides)}; device={args.device}; "
        f"full audit projected at trials={FULL_TRIALS}, linear in the pairs"
    )
    print(
        f"{datetime.date.today()}, commit {commit()}, {platform.machine()}, "
        f"{os.cpu_count()} cores, load average at the end {os.getloadavg()[0]:.2f}"
    )
    print(frame.to_string(index=False, float_format=lambda v: f"{v:.2f}"))


if __name__ == "__main__":
    main()
