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
from gradinv_exp.objectives import l2_distance
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


def starts(trials: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Dummy images (T, 1, 3, 32, 32) and label logits (T, 1, 100), seeded."""
    gen = generator(0, "attack")
    x0 = torch.randn((trials, 1, 3, 32, 32), generator=gen)
    return x0, torch.randn((trials, 1, 100), generator=gen)


def attack(model, target, x0, y0, optimizer, steps):
    """DLG from the given starts through the engine every attack uses; (seconds, result)."""
    start = time.perf_counter()
    problem = attacks.problems(
        model, target, x0, y0, joint=True, objective=l2_distance, optimizer=optimizer
    )
    result = attacks.optimise(
        problem, DLGConfig(iterations=steps, snapshot_every=10), lambda *a: None
    )
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
    x0, y0 = starts(max(args.sizes))
    for size in args.sizes:
        goal = [g[:size] for g in target]
        batches, sequentials = [], []
        for _ in range(args.repeats):  # alternate so that machine load hits both alike
            seconds, together = attack(model, goal, x0[:size], y0[:size], optimizer, args.steps)
            batches.append(seconds)
            sequential, diffs, losses = 0.0, [], []
            for t in range(size):
                one = slice(t, t + 1)
                seconds, alone = attack(model, [g[one] for g in goal], x0[one], y0[one],
                                        optimizer, args.steps)  # fmt: skip
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
