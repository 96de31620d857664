#!/usr/bin/env python
"""Time one small sweep run sequentially and with the joblib launcher; print the speedup.

    python scripts/bench_sweep.py [--jobs-parallel 2] [--iterations 40]

Both are whole command lines (imports, the 4 jobs, the sweep summary), timed by the wall
clock, each into a fresh temporary sweep folder; the script also checks that both gave
the same PSNR per job. The machine's other load changes the figures: report it with them.
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
SWEEP = ["-m", "defense=none,prune,quantize,noise", "dataset=photos"]


def timed_sweep(args: list[str], sweep_dir: Path) -> tuple[float, pd.Series]:
    """Wall seconds of ``python -m gradinv_exp ARGS`` and its PSNR per defense."""
    env = os.environ | {"PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "gradinv_exp", *args, f"hydra.sweep.dir={sweep_dir}"],
        check=True, env=env, cwd=REPO, capture_output=True,
    )  # fmt: skip
    wall = time.perf_counter() - start
    return wall, pd.read_csv(sweep_dir / "summary.csv").set_index("defense")["psnr"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=40, help="attack steps per job")
    parser.add_argument("--jobs-parallel", type=int, default=2, help="joblib n_jobs")
    args = parser.parse_args()
    common = [*SWEEP, f"attack.iterations={args.iterations}"]
    parallel = ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={args.jobs_parallel}"]
    with tempfile.TemporaryDirectory() as tmp:
        seq_s, seq_psnr = timed_sweep(common, Path(tmp) / "sequential")
        par_s, par_psnr = timed_sweep([*common, *parallel], Path(tmp) / "joblib")
    print(f"sweep: 4 jobs, attack.iterations={args.iterations}, dataset=photos, threads=1")
    print(f"cpu cores: {os.cpu_count()}, load average at the end: {os.getloadavg()[0]:.2f}")
    print(f"sequential (basic launcher):    {seq_s:7.1f} s")
    print(f"joblib, n_jobs={args.jobs_parallel}:               {par_s:7.1f} s")
    print(f"speedup:                        {seq_s / par_s:7.2f}x")
    print(f"same PSNR per job: {bool((seq_psnr.sort_index() == par_psnr.sort_index()).all())}")


if __name__ == "__main__":
    main()
