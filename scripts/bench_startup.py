"""How fast a bad command line is refused: wall time of ``python -m gradinv_exp ARGS``
for the one-line errors the README shows (and a few more), median of ``--repeats`` runs.

Every config check that needs no tensor (option names, types, ranges, rules across
groups, data set sizes) runs before torch is imported; goal: under 1.5 s each.

    python scripts/bench_startup.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
COMMANDS = [
    ["defense=bogus"],
    ["defense=prune", "defense.ratio=1.5"],
    ["dataset=fashion_mnist", "dataset.index=99999"],
    ["dataset.batch_size=100000"],
    ["attack=ig", "optimizer=lbfgs"],
    ["client=fedavg", "client.local_lr=0"],
    ["-m", "defense=prune", "defense.ratio=0.1,2.0"],
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    env = os.environ | {"PYTHONPATH": str(REPO)}
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as scratch:
        for command in COMMANDS:
            times, codes = [], set()
            for _ in range(args.repeats):
                start = time.perf_counter()
                done = subprocess.run(
                    [sys.executable, "-m", "gradinv_exp", *command],
                    cwd=scratch, env=env, capture_output=True, text=True,
                )  # fmt: skip
                times.append(time.perf_counter() - start)
                codes.add(done.returncode)
            print(f"{statistics.median(times):5.2f} s (max {max(times):.2f})  exit {codes}  "
                  f"{' '.join(command)}")  # fmt: skip


if __name__ == "__main__":
    main()
