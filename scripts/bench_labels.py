"""Batch label restoration: how often each gradient-reading label mode gets the labels.

For every (model, seed) pair and B = 4, 8, 16 it builds a client batch of B bundled
photos (32x32; beyond the ten photos, their mirror images), gives it labels, computes the
client's share and lets each label mode of ``attacks.labels.LABELS`` that reads the
gradient (``idlg``, ``yin``, ``llg``) restore the labels. Two label cases:

- distinct: B different classes drawn at random from 100 (a CIFAR-100-sized head);
- repeated: B labels drawn with replacement from 10 classes (a CIFAR-10-sized head), so
  labels repeat (at B = 16 always).

Models: the original notebook's LeNet (sigmoid, U(-0.5, 0.5) init), the ConvNet and ResNet-18 (ReLU,
their default inits), each with its seeded init per seed: pair (model, seed) has its own
weights, its own batch (photos taken from offset ``seed``) and its own labels.
Label accuracy is the multiset match, |true labels and restored labels in common| / B
(the order of restored labels is not the batch's order). The table gives the mean over
pairs with the 95% t interval (``analysis.uncertainty.mean_interval``) and the number of
pairs n.

``--client fedavg`` shares the update after ``--local-steps`` full-batch SGD steps at lr
0.1 (one step is exactly -0.1 x the gradient; more steps move the model in between).

    python scripts/bench_labels.py [--seeds 5] [--client fedsgd|fedavg] [--local-steps 1]
        [--models lenet convnet resnet18]
"""

from __future__ import annotations

import argparse
import platform
import subprocess
from collections import Counter
from datetime import UTC, datetime

import numpy as np
import torch

from gradinv_exp import client, data, models
from gradinv_exp.analysis.uncertainty import mean_interval
from gradinv_exp.attacks.labels import LABELS, Evidence
from gradinv_exp.base.streams import generator
from gradinv_exp.data import DatasetConfig

MODES = ("idlg", "yin", "llg")
SIZES = (4, 8, 16)
CASES = {"distinct": 100, "repeated": 10}  # case -> num_classes
SETTINGS = {  # model -> (activation, init)
    "lenet": ("sigmoid", "uniform"),
    "convnet": ("relu", "default"),
    "resnet18": ("relu", "default"),
    "mlp": ("relu", "default"),
}


def photos() -> torch.Tensor:
    """The ten bundled photos and their mirror images ``(20, 3, 32, 32)``."""
    images, _, _ = data.load(DatasetConfig(name="photos"), len(data.PHOTOS))
    return torch.cat([images, images.flip(-1)])


def batch_labels(case: str, size: int, g: torch.Generator) -> torch.Tensor:
    if case == "distinct":
        return torch.randperm(CASES[case], generator=g)[:size]
    return torch.randint(CASES[case], (size,), generator=g)


def overlap(truth: torch.Tensor, restored: torch.Tensor) -> float:
    """Multiset match: labels the two share (with multiplicity) / B."""
    common = Counter(truth.tolist()) & Counter(restored.tolist())
    return sum(common.values()) / len(truth)


def one_pair(
    name: str, seed: int, case: str, size: int, pool: torch.Tensor, protocol: client.ClientConfig
) -> dict[str, float]:
    """Label accuracy of every mode on one (batch, model) pair."""
    activation, init = SETTINGS[name]
    classes = CASES[case]
    net = models.build(
        name, channels=3, num_classes=classes, image_size=32, activation=activation,
        init=init, generator=generator(seed, "model"),
    )  # fmt: skip
    g = generator(seed, f"labels:{case}:{size}")
    images = pool[(seed + torch.arange(size)) % len(pool)]
    labels = batch_labels(case, size, g)
    onehot = torch.nn.functional.one_hot(labels, classes).float()
    shared = [s[None] for s in client.share(client.Client(net, images, onehot), protocol)]
    gradient = client.Simulator(net, protocol).as_gradient(shared)
    evidence = Evidence(net, gradient, size, classes, None, g, tuple(images.shape[1:]))
    return {m: overlap(labels, LABELS[m].start(evidence, 1)[0].argmax(-1)) for m in MODES}


def commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        )
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="pairs per model")
    parser.add_argument("--client", choices=("fedsgd", "fedavg"), default="fedsgd")
    parser.add_argument("--local-steps", type=int, default=1, help="fedavg: local SGD steps")
    parser.add_argument("--models", nargs="+", default=["lenet", "convnet", "resnet18"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    fedavg = client.FedAvgConfig(local_steps=args.local_steps)
    protocol = client.FedSGDConfig() if args.client == "fedsgd" else fedavg
    pool = photos()
    steps = f" ({args.local_steps} local steps, lr 0.1)" if args.client == "fedavg" else ""
    print(
        f"# bench_labels: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, commit {commit()}, "
        f"{platform.machine()} {platform.processor() or platform.system()}, torch "
        f"{torch.__version__}; client {args.client}{steps}; models {' '.join(args.models)}; "
        f"{args.seeds} seed(s) each"
    )
    print()
    print("| labels | B | " + " | ".join(MODES) + " | n |")
    print("|---|---|" + "---|" * len(MODES) + "---|")
    for case in CASES:
        for size in SIZES:
            scores: dict[str, list[float]] = {m: [] for m in MODES}
            for name in args.models:
                for seed in range(args.seeds):
                    for m, v in one_pair(name, seed, case, size, pool, protocol).items():
                        scores[m].append(v)
            cells = []
            for m in MODES:
                values = np.array(scores[m])
                low, high = mean_interval(values)
                cells.append(f"{values.mean():.3f} [{max(low, 0):.3f}, {min(high, 1):.3f}]")
            n = len(scores[MODES[0]])
            print(f"| {case} | {size} | " + " | ".join(cells) + f" | {n} |", flush=True)


if __name__ == "__main__":
    main()
