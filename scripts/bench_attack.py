"""Framework overhead: gradinv_exp's DLG vs a plain DLG loop written the way the seed writes it.

Both run in this process on the same photo, model, seed, dummy start and step count:
(a) the reference: torch.optim.LBFGS on [dummy image, dummy label], a closure with
    autograd.grad(create_graph=True), a snapshot clone every 10 steps;
(b) gradinv_exp: ``attacks.attack`` with the dlg preset, through its public API, with
    snapshots every 10 steps and the run's per-snapshot metrics (matching, MSE, PSNR).
Repetitions alternate (a) and (b) so machine load hits both alike; medians are reported.
Also prints ms per closure, the final losses, the effect of 2 torch threads on one closure,
and the process's peak RSS.

    python scripts/bench_attack.py [--steps 50] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time

import torch

from gradinv_exp import attacks, client, data, models
from gradinv_exp.analysis import metrics
from gradinv_exp.attacks.optimizers import LBFGSConfig
from gradinv_exp.config import DatasetConfig
from gradinv_exp.experiment import generator

SNAPSHOT_EVERY = 10


def setup(seed: int):
    images, labels, _ = data.load(DatasetConfig(name="photos", index=5, size=10), 1)
    model = models.build(
        "lenet", channels=3, num_classes=100, image_size=32, activation="sigmoid",
        init_range=0.5, generator=generator(seed, "model"),
    )  # fmt: skip
    onehot = torch.nn.functional.one_hot(labels, 100).float()
    return model, images, client.gradient(client.Client(model, images, onehot))


class Counter:
    """Counts model forward passes (one per closure, plus loss evaluations at snapshots)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.calls = 0
        model.register_forward_hook(lambda *_: setattr(self, "calls", self.calls + 1))


def reference(model, true_grad, seed: int, steps: int) -> float:
    """The seed's loop, verbatim in spirit; returns the final gradient-matching loss."""
    gen = generator(seed, "attack")
    dummy_data = torch.randn((1, 3, 32, 32), generator=gen).requires_grad_(True)
    dummy_label = torch.randn((1, 100), generator=gen).requires_grad_(True)
    optimizer = torch.optim.LBFGS([dummy_data, dummy_label])
    history = []

    def closure():
        optimizer.zero_grad()
        pred = model(dummy_data)
        onehot = torch.softmax(dummy_label, dim=-1)
        loss = torch.mean(torch.sum(-onehot * torch.log_softmax(pred, dim=-1), 1))
        dy_dx = torch.autograd.grad(loss, model.parameters(), create_graph=True)
        grad_diff = sum(((gx - gy) ** 2).sum() for gx, gy in zip(dy_dx, true_grad))
        grad_diff.backward()
        return grad_diff

    for step in range(steps):
        optimizer.step(closure)
        if step % SNAPSHOT_EVERY == 0:
            history.append(dummy_data[0].detach().clone())
    return float(closure().detach())


def ours(model, images, true_grad, seed: int, steps: int) -> float:
    """gradinv_exp's DLG with snapshots and the run's snapshot metrics."""
    rows = []

    def on_snapshot(step, grad_loss, recon):
        recon = recon.detach().cpu().clone()
        pair = (images, metrics.matched(images, recon[0]))
        rows.append((step, float(grad_loss.mean()), metrics.mse(*pair), metrics.psnr(*pair)))

    dlg = attacks.AttackConfig(
        name="dlg", objective="l2", labels="joint", iterations=steps, snapshot_every=SNAPSHOT_EVERY
    )
    result = attacks.attack(
        client.Simulator(model, client.FedSGDConfig()), [g[None] for g in true_grad],
        shape=(1, *images.shape), num_classes=100, cfg=dlg, optimizer=LBFGSConfig(),
        generator=generator(seed, "attack"), on_snapshot=on_snapshot,
    )  # fmt: skip
    return float(result.grad_loss[0])


def timed(fn, counter: Counter):
    before = counter.calls
    start = time.perf_counter()
    loss = fn()
    return time.perf_counter() - start, counter.calls - before, loss


def closure_ms(model, true_grad, threads: int, repeats: int = 30) -> float:
    """Median time of one DLG closure (forward, grad with create_graph, backward)."""
    torch.set_num_threads(threads)
    x = torch.randn((1, 3, 32, 32), requires_grad=True)
    y = torch.randn((1, 100), requires_grad=True)
    times = []
    for _ in range(repeats + 3):
        start = time.perf_counter()
        loss = client.soft_cross_entropy(model(x), torch.softmax(y, -1))
        grads = torch.autograd.grad(loss, list(model.parameters()), create_graph=True)
        sum(((g - t) ** 2).sum() for g, t in zip(grads, true_grad)).backward()
        times.append(time.perf_counter() - start)
    torch.set_num_threads(1)
    return 1e3 * statistics.median(times[3:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50, help="L-BFGS steps (seed: 300)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model, images, true_grad = setup(args.seed)
    counter = Counter(model)
    load = os.getloadavg()[0]
    print(f"load average {load:.2f} on {os.cpu_count()} cores; torch threads 1; LeNet 32x32, "
          f"{args.steps} L-BFGS steps, {args.repeats} alternating repeats")  # fmt: skip
    runs = {"reference": [], "gradinv_exp": []}
    for _ in range(args.repeats):
        runs["reference"].append(
            timed(lambda: reference(model, true_grad, args.seed, args.steps), counter)
        )
        runs["gradinv_exp"].append(
            timed(lambda: ours(model, images, true_grad, args.seed, args.steps), counter)
        )
    wall = {}
    for name, results in runs.items():
        wall[name] = statistics.median(r[0] for r in results)
        calls, loss = results[0][1], results[0][2]
        each = [round(r[0], 2) for r in results]
        print(f"{name:12s} wall {wall[name]:7.2f} s (median of {each})"
              f"  {1e3 * wall[name] / calls:5.2f} ms/closure ({calls} model evaluations)"
              f"  final loss {loss:.3e}")  # fmt: skip
    print(f"ratio gradinv_exp / reference: {wall['gradinv_exp'] / wall['reference']:.3f}")
    one, two = closure_ms(model, true_grad, 1), closure_ms(model, true_grad, 2)
    print(f"one closure: 1 thread {one:.2f} ms, 2 threads {two:.2f} ms")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak:.0f} MB")


if __name__ == "__main__":
    main()
