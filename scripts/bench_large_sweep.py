#!/usr/bin/env python
"""A sweep of many jobs at a tiny budget on the batched launcher, then the same command
again: planning time, wall time, peak memory, and the rerun that skips every job.

    python scripts/bench_large_sweep.py [--jobs 1000] [--workers 2] [--keep DIR]
    python scripts/bench_large_sweep.py --planning-only [--jobs 200] [--rounds 2]

The sweep is ``-m seed=range(0,JOBS)`` (one job per seed: every job its own model,
start and defense noise) of an 8x8 one-image DLG of 2 L-BFGS steps on the offline data,
``hydra/launcher=batched``: a whole command line in a child process, timed by the wall
clock. "Planning" is the time from the command's start until the launcher has planned
every job and logs its plan (imports, the preflight of every job, the launcher's plan):
no job has run before it. Peak RSS is the largest resident size of any one process of the
command (the command line or one worker), read by ``getrusage(RUSAGE_CHILDREN)`` in a
wrapper process. Then the same command again: every job is finished, so it is skipped.

``--planning-only``: the seconds until the plan line under Hydra's own sweeper
(``hydra/sweeper=basic``, which composes every job whole to check it) and under the
default (``hydra/sweeper=composed``), interleaved over ``--rounds``; each command is
stopped at its plan line, so no job runs.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parent.parent
TINY = ["dataset=crops", "dataset.image_size=8", "attack.iterations=2", "attack.snapshot_every=1",
        "optimizer.max_iter=2", "compile=off"]  # fmt: skip
# the wrapper: run the command line, print each output line with the seconds since its
# start, then the peak RSS (KiB) of its processes
WRAPPER = (
    "import resource, subprocess, sys, time\n"
    "start = time.perf_counter()\n"
    "proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,"
    " text=True)\n"
    "for line in proc.stdout:\n"
    "    print(f'{time.perf_counter() - start:.2f} {line}', end='', flush=True)\n"
    "code = proc.wait()\n"
    "print('RSS', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    "sys.exit(code)\n"
)
PLANNED = "batched launcher: "  # the launcher's plan line: every job planned


def sweep(args: list[str]) -> dict[str, float]:
    """Wall seconds, seconds until the plan line, and peak RSS (MiB) of the command."""
    env = os.environ | {"PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "gradinv_exp", *args]
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", WRAPPER, *command], env=env, cwd=REPO,
                          capture_output=True, text=True)  # fmt: skip
    wall = time.perf_counter() - start
    lines = done.stdout.splitlines()
    if done.returncode:
        raise SystemExit("\n".join(lines[-30:]))
    planned = next(float(line.split()[0]) for line in lines if PLANNED in line)
    rss = int(lines[-1].split()[-1]) / 1024
    return {"wall_s": wall, "planning_s": planned, "peak_rss_mib": rss}


def planning(args: list[str]) -> float:
    """Seconds from the command's start until its plan line; the command is then killed."""
    env = os.environ | {"PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "gradinv_exp", *args], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # fmt: skip
    assert proc.stdout is not None
    seconds = math.nan
    for line in proc.stdout:
        if PLANNED in line:
            seconds = time.perf_counter() - start
            break
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return seconds


def compare_sweepers(jobs: int, rounds: int) -> None:
    """The planning seconds of ``jobs`` jobs under the basic and the composed sweeper."""
    times: dict[str, list[float]] = {"basic": [], "composed": []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(rounds):
            for name, seconds in times.items():
                argv = ["-m", f"seed=range(0,{jobs})", *TINY, "hydra/launcher=batched",
                        f"hydra/sweeper={name}", f"hydra.sweep.dir={tmp}/{name}"]  # fmt: skip
                seconds.append(planning(argv))
    print(f"{jobs} jobs ({' '.join(TINY)}): seconds until the plan line, {rounds} rounds")
    for name, seconds in times.items():
        print(f"hydra/sweeper={name}: {' / '.join(f'{s:.1f}' for s in seconds)}")
    print(f"{datetime.date.today()}, {platform.machine()}, {os.cpu_count()} cores")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--keep", type=Path, help="sweep folder to keep (default: a temp one)")
    parser.add_argument(
        "--planning-only",
        action="store_true",
        help="time the plan of --jobs jobs under the basic and composed sweeper",
    )
    parser.add_argument("--rounds", type=int, default=2, help="with --planning-only")
    args = parser.parse_args()
    if args.planning_only:
        compare_sweepers(args.jobs, args.rounds)
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp) / "sweep"
        argv = ["-m", f"seed=range(0,{args.jobs})", *TINY, "hydra/launcher=batched",
                f"hydra.launcher.workers={args.workers}", f"hydra.sweep.dir={folder}"]  # fmt: skip
        rows = {"first run": sweep(argv), "rerun (all finished)": sweep(argv)}
        summary = pd.read_csv(folder / "summary.csv")
        statuses = summary["status"].value_counts().to_dict()
    print(f"{args.jobs} jobs ({' '.join(TINY)}), batched launcher on {args.workers} workers")
    print(f"summary.csv: {len(summary)} rows, status {statuses}")
    print(
        f"{datetime.date.today()}, {platform.machine()}, {os.cpu_count()} cores, "
        f"load average at the end {os.getloadavg()[0]:.2f}"
    )
    print(pd.DataFrame(rows).T.to_string(float_format=lambda v: f"{v:.1f}"))


if __name__ == "__main__":
    main()
