"""FedAvg clients: what attacking an update costs, and how well iDLG's label rule reads it.

1. Cost: one objective-and-gradient evaluation (the attack's closure, eager) on the
   original notebook's LeNet for a client with B = 4 images that shares its FedSGD
   gradient or its
   FedAvg update after E = 1, 2, 5, 10 local steps (local batch 1 and 4), relative to the
   FedSGD closure; alternating repetitions, medians. The attacker unrolls E local
   steps, so the cost should grow about E-fold.
2. Labels: accuracy of iDLG's rule (``attacks.labels.idlg_labels``) on the update with
   its sign flipped, over ``--pairs`` (image, model) pairs (the ten bundled photos x
   model seeds, labels = the photo's index, so a batch's labels are distinct), for
   B = 1 and 4 and the same E and local batches, with 95% Wilson intervals.

    python scripts/bench_client.py [--repeats 20] [--pairs 40]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch

from gradinv_exp import client, data, models
from gradinv_exp.analysis import uncertainty
from gradinv_exp.attacks import AttackConfig
from gradinv_exp.attacks.engine import build_problem
from gradinv_exp.attacks.labels import idlg_labels, last_linear_weight
from gradinv_exp.attacks.optimizers import AdamConfig
from gradinv_exp.base.streams import generator
from gradinv_exp.data import DatasetConfig

STEPS = (1, 2, 5, 10)
CLASSES = 100


def lenet(seed: int) -> torch.nn.Module:
    return models.build(
        "lenet", channels=3, num_classes=CLASSES, image_size=32, activation="sigmoid",
        generator=generator(seed, "model"),
    )  # fmt: skip


def protocols(batch: int) -> dict[str, client.ClientConfig]:
    out: dict[str, client.ClientConfig] = {"fedsgd": client.FedSGDConfig()}
    for steps in STEPS:
        for local in sorted({1, batch}):
            out[f"fedavg E={steps:2d} local_batch={local}"] = client.FedAvgConfig(
                local_steps=steps, local_batch=local
            )
    return out


def closure_ms(repeats: int) -> None:
    images, labels, _ = data.load(DatasetConfig(name="photos", size=10), 4)
    onehot = torch.nn.functional.one_hot(labels, CLASSES).float()
    net = lenet(0)
    gen = torch.Generator().manual_seed(0)
    x0, y0 = torch.randn((1, 4, 3, 32, 32), generator=gen), torch.randn((1, 4, CLASSES))
    problems = {}
    for name, protocol in protocols(4).items():
        shared = [s[None] for s in client.share(client.Client(net, images, onehot), protocol)]
        problems[name] = build_problem(
            client.Simulator(net, protocol), shared, x0, y0, AttackConfig(name="dlg"),
            AdamConfig(), optimised=True,
        )  # fmt: skip
    times: dict[str, list[float]] = {name: [] for name in problems}
    for _ in range(repeats + 2):  # alternate, so machine load hits every protocol alike
        for name, problem in problems.items():
            start = time.perf_counter()
            problem.closure()
            times[name].append(time.perf_counter() - start)
    base = statistics.median(times["fedsgd"][2:])
    print("closure cost (B = 4 images, eager, one problem):")
    for name, t in times.items():
        ms = statistics.median(t[2:])
        print(f"  {name:28s} {1e3 * ms:7.2f} ms = {ms / base:5.2f}x FedSGD")


def label_accuracy(pairs: int) -> None:
    print(f"iDLG's rule on the update (sign flipped), {pairs} (image, model) pairs:")
    for batch in (1, 4):
        for name, protocol in protocols(batch).items():
            hits = []
            for n in range(pairs):
                first = n % (11 - batch)  # a batch of consecutive photos
                images, labels, _ = data.load(DatasetConfig(name="photos", index=first), batch)
                onehot = torch.nn.functional.one_hot(labels, CLASSES).float()
                net = lenet(n)
                shared = client.share(client.Client(net, images, onehot), protocol)
                gradient = client.Simulator(net, protocol).as_gradient([s[None] for s in shared])
                found = idlg_labels(gradient[last_linear_weight(net)], batch)[0]
                hits += [int(k) in set(found.tolist()) for k in labels]  # per true label
            rate = uncertainty.success(np.array(hits))
            print(f"  B={batch} {name:28s} {rate['success_rate']:.3f} "
                  f"[{rate['success_rate_ci_low']:.3f}, {rate['success_rate_ci_high']:.3f}] "
                  f"({len(hits)} labels)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--pairs", type=int, default=40)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; torch threads 1")
    closure_ms(args.repeats)
    label_accuracy(args.pairs)


if __name__ == "__main__":
    main()
