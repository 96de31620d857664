"""Vectorised trials: T attacks as one batched computation vs the same T run one after another.

For T = 1, 4, 16 (bundled photos, one per trial, the seed's LeNet, DLG with L-BFGS) it
times ``attacks.dlg`` on all T trials at once and, alternating with it, the T trials run
one after another (trial t alone starts from the same dummy as trial t of the batch).
"One trial" is the mean time of a trial alone: trials differ in cost, since L-BFGS stops a
trial's step early when it stalls, while the batch steps until its last trial stops. It
compares every trial's result with its run alone: max |image difference| and final
losses. Float32 DLG under L-BFGS is chaotic (torch's own L-BFGS turns a 1e-7 change of the
start into 7e-3 after 8 iterations), so results over many steps agree in quality, not
digits; ``--optimizer adam`` shows the per-trial agreement on a non-chaotic path.

    python scripts/bench_trials.py [--steps 10] [--sizes 1 4 16] [--optimizer lbfgs] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time

import torch

from gradinv_exp import attacks, data, models
from gradinv_exp.config import AdamConfig, DatasetConfig, DLGConfig, LBFGSConfig
from gradinv_exp.run import generator


def setup(trials: int):
    """Model and true gradients; the 10 bundled photos repeat from trial 10 on (each trial
    still has its own dummy start)."""
    images, labels, _ = data.load(DatasetConfig(name="photos"), 10)
    images, labels = images[torch.arange(trials) % 10], labels[torch.arange(trials) % 10]
    model = models.build(
        "lenet", channels=3, num_classes=100, image_size=32, activation="sigmoid",
        init_range=0.5, generator=generator(0, "model"),
    )  # fmt: skip
    onehot = torch.nn.functional.one_hot(labels, 100).float()
    grads = [attacks.gradient(model, images[t : t + 1], onehot[t : t + 1]) for t in range(trials)]
    return model, [torch.stack(p) for p in zip(*grads)]


def advanced(trials_before: int) -> torch.Generator:
    """The attack generator after the draws of ``trials_before`` trials (image + label)."""
    gen = generator(0, "attack")
    for _ in range(trials_before):
        torch.randn((1, 3, 32, 32), generator=gen), torch.randn((1, 100), generator=gen)
    return gen


def attack(model, target, optimizer, gen, steps):
    start = time.perf_counter()
    result = attacks.dlg(
        model, target, shape=(len(target[0]), 1, 3, 32, 32), num_classes=100,
        attack=DLGConfig(iterations=steps, snapshot_every=10), optimizer=optimizer,
        generator=gen, on_snapshot=lambda *a: None,
    )  # fmt: skip
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--optimizer", choices=["lbfgs", "adam"], default="lbfgs")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    optimizer = LBFGSConfig() if args.optimizer == "lbfgs" else AdamConfig()
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; torch threads 1; "
          f"DLG/{args.optimizer}, {args.steps} steps, LeNet 32x32")  # fmt: skip
    model, target = setup(max(args.sizes))
    for size in args.sizes:
        goal = [g[:size] for g in target]
        batches, sequentials = [], []
        for _ in range(args.repeats):  # alternate so that machine load hits both alike
            seconds, together = attack(model, goal, optimizer, advanced(0), args.steps)
            batches.append(seconds)
            sequential, diffs, losses = 0.0, [], []
            for t in range(size):
                seconds, alone = attack(model, [g[t : t + 1] for g in goal], optimizer,
                                        advanced(t), args.steps)  # fmt: skip
                sequential += seconds
                diffs.append(float((together.images[t] - alone.images[0]).abs().max()))
                losses.append((float(together.grad_loss[t]), float(alone.grad_loss[0])))
            sequentials.append(sequential)
        batched, sequential = statistics.median(batches), statistics.median(sequentials)
        print(f"T={size:3d}  batched {batched:7.2f} s = {batched * size / sequential:5.2f}x one "
              f"trial (mean alone {sequential / size:.2f} s)  one after another "
              f"{sequential:7.2f} s = {sequential / batched:5.2f}x batched  "
              f"(medians of {args.repeats})")  # fmt: skip
        print(f"        per trial: max |image diff| vs alone {max(diffs):.2e}; final loss "
              "batched/alone " + ", ".join(f"{a:.2e}/{b:.2e}" for a, b in losses[:4])
              + (" ..." if size > 4 else ""))  # fmt: skip
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak:.0f} MB")


if __name__ == "__main__":
    main()
