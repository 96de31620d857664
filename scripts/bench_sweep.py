#!/usr/bin/env python
"""Time two sweeps under four launchers (basic, joblib, batched in one process, batched on
workers): wall time and peak RSS.

    python scripts/bench_sweep.py [--iterations 40] [--jobs-parallel 2] [--trials 2] \
        [--device cpu|cuda]

The sweeps: ``+experiment=seed_defenses`` (4 jobs) and ``+experiment=dlg_defenses`` (16
jobs) at a small budget (``--iterations`` attack steps, ``--trials`` trials per job), on
the bundled photos. Each is a whole command line (imports, jobs, the sweep summary) in
its own child process, into a fresh temporary sweep folder, timed by the wall clock; the
launchers of one sweep run one after another in the same round, so the machine's other
load falls on all four alike. ``--jobs-parallel`` is both joblib's ``n_jobs`` and the
batched launcher's ``workers``. Peak RSS is the largest resident size of any one process
of the command (``getrusage(RUSAGE_CHILDREN)`` read by a wrapper process around it: a
joblib or batched worker counts on its own, not summed; the ``processes`` column says how
many run at once). Report the load average with the figures.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parent.parent
SWEEPS = {"seed_defenses": 4, "dlg_defenses": 16}  # preset -> jobs
# the wrapper: run the command line, then print the peak RSS (KiB) of its processes
WRAPPER = (
    "import resource, subprocess, sys\n"
    "done = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
    "sys.stderr.write(done.stderr[-3000:] if done.returncode else '')\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    "sys.exit(done.returncode)\n"
)


def launchers(jobs_parallel: int) -> dict[str, list[str]]:
    return {
        "basic": ["hydra/launcher=basic"],
        f"joblib ({jobs_parallel} workers)": [
            "hydra/launcher=joblib", f"hydra.launcher.n_jobs={jobs_parallel}",
        ],
        "batched": ["hydra/launcher=batched", "hydra.launcher.workers=1"],
        f"batched ({jobs_parallel} workers)": [
            "hydra/launcher=batched", f"hydra.launcher.workers={jobs_parallel}",
        ],
    }  # fmt: skip


def timed_sweep(args: list[str], sweep_dir: Path) -> tuple[float, float, float]:
    """Wall seconds, peak RSS (MiB) and mean PSNR of ``python -m gradinv_exp ARGS``."""
    env = os.environ | {"PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "gradinv_exp", *args, f"hydra.sweep.dir={sweep_dir}"]
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", WRAPPER, *command], env=env, cwd=REPO, capture_output=True,
        text=True,
    )  # fmt: skip
    wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stderr}")
    psnr = pd.read_csv(sweep_dir / "summary.csv")["psnr"].mean()
    return wall, int(done.stdout.split()[-1]) / 1024, psnr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=40, help="attack steps per job")
    parser.add_argument("--jobs-parallel", type=int, default=2, help="joblib n_jobs")
    parser.add_argument("--trials", type=int, default=2, help="trials per dlg_defenses job")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="device=")
    args = parser.parse_args()
    common = ["dataset=photos", f"attack.iterations={args.iterations}", f"device={args.device}"]
    extra = {"seed_defenses": [], "dlg_defenses": [f"trials={args.trials}"]}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for preset, jobs in SWEEPS.items():
            base = [f"+experiment={preset}", *common, *extra[preset]]
            for name, flags in launchers(args.jobs_parallel).items():
                folder = Path(tmp) / f"{preset}-{len(rows)}"
                wall, rss, psnr = timed_sweep([*base, *flags], folder)
                processes = args.jobs_parallel if "workers" in name else 1
                rows.append(
                    {"sweep": f"{preset} ({jobs} jobs)", "launcher": name, "wall_s": wall,
                     "peak_rss_mib": rss, "processes": processes, "mean_psnr": psnr}
                )  # fmt: skip
                print(
                    f"{rows[-1]['sweep']:<24} {name:<20} {wall:7.1f} s {rss:7.0f} MiB", flush=True
                )
    frame = pd.DataFrame(rows)
    for sweep, part in frame.groupby("sweep", sort=False):
        walls = dict(zip(part["launcher"], part["wall_s"]))
        joblib = next(v for k, v in walls.items() if k.startswith("joblib"))
        for name in (k for k in walls if k.startswith("batched")):
            print(
                f"{sweep}: {name} is {walls['basic'] / walls[name]:.2f}x as fast as basic, "
                f"{joblib / walls[name]:.2f}x as fast as joblib"
            )
    print(
        f"attack.iterations={args.iterations}, dlg_defenses trials={args.trials}, "
        f"dataset=photos, device={args.device}, threads=1"
    )
    print(f"cpu cores: {os.cpu_count()}, load average at the end: {os.getloadavg()[0]:.2f}")
    print(frame.to_string(index=False, float_format=lambda v: f"{v:.2f}"))


if __name__ == "__main__":
    main()
