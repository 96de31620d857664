"""Vectorised trials: T attacks as one batched computation vs the same T run one after another.

For T = 1, 4, 16 (bundled photos, one per trial, the original notebook's LeNet, DLG with L-BFGS) it
prints, per T:

- time: the attack engine (dlg preset) on all T trials at once and, alternating with it, the T
  trials run one after another (trial t alone starts from the same dummy as trial t of the
  batch). "One trial" is the mean time of a trial alone.
- where the time goes, per L-BFGS iteration (Adam step) at T vs at 1: the closure
  (forward, per-trial gradients, one double-backward), timed inside the optimiser's step,
  and the rest (the optimiser's update, snapshots); and, as a reference for how well these
  layers batch on this CPU at all, a plain no-grad forward of the model at batch T vs 1.
- equality: max |image difference| between each trial in the batch and its run alone, next
  to the chaos floor: the same trial alone vs alone from a start changed by one float32 step
  (x0 * (1 + 1e-7), which rounds to a relative change of ~1.2e-7).
  Float32 DLG under L-BFGS is chaotic, so after many iterations any change of rounding
  (another conv kernel, another order of sums) moves the result by the floor's amount; a
  batched trial that differs from its run alone by that amount is as equal as float32
  allows. ``--optimizer adam`` shows digit-level agreement on a non-chaotic path.
- quality: mean PSNR against the true photos, batched vs alone.

``--backend auto`` runs every T with the backend a run would choose for it
(``attacks.backend.choose``: a compiled closure with oneDNN convolutions; compile time
outside the timings), ``eager`` (default) as before.
``--models`` gives every trial its own model init (``trials_vary=models``: trial t
attacks the model of seed t), batched as per-trial weights under vmap; alone, each trial
attacks its own model. ``--device cuda`` times the batched attack alone for
T = 1, 16, 64, 256 (time per step and peak GPU memory) and says so when there is no GPU.

    python scripts/bench_trials.py [--steps 10] [--sizes 1 4 16] [--optimizer lbfgs]
        [--repeats 2] [--backend eager|auto] [--models] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time
from typing import NamedTuple

import torch

from gradinv_exp import client, data, models
from gradinv_exp.analysis import metrics
from gradinv_exp.attacks import choose_backend
from gradinv_exp.attacks.backend import Backend, convolution
from gradinv_exp.attacks.engine import AttackConfig, AttackResult, build_problem, optimise
from gradinv_exp.attacks.optimizers import AdamConfig, LBFGSConfig
from gradinv_exp.base.streams import generator
from gradinv_exp.data import DatasetConfig

FLOOR_TRIALS = 4  # trials per T whose chaos floor is measured (one more run alone each)


def lenet(seed: int, device: str) -> torch.nn.Module:
    return models.build(
        "lenet", channels=3, num_classes=100, image_size=32, activation="sigmoid",
        init_range=0.5, generator=generator(seed, "model"),
    ).to(device)  # fmt: skip


def setup(trials: int, per_trial: bool, device: str):
    """The trials' models (one, or one per trial: seed t), true images (T, 1, C, H, W) and
    true gradients; the 10 bundled photos repeat from trial 10 on (each trial still has
    its own dummy start)."""
    images, labels, _ = data.load(DatasetConfig(name="photos", size=10), 10)
    images, labels = images[torch.arange(trials) % 10], labels[torch.arange(trials) % 10]
    nets = [lenet(t, device) for t in range(trials if per_trial else 1)]
    onehot = torch.nn.functional.one_hot(labels, 100).float().to(device)
    images = images.to(device)
    grads = [
        client.gradient(client.Client(nets[t % len(nets)], images[t : t + 1], onehot[t : t + 1]))
        for t in range(trials)
    ]
    return nets, images[:, None], [torch.stack(p) for p in zip(*grads)]


def simulator(nets: list[torch.nn.Module], trials: slice) -> client.Simulator:
    """The attacker's simulation of ``trials``: one shared model, or their own models."""
    if len(nets) == 1:
        return client.Simulator(nets[0], client.FedSGDConfig())
    chosen = nets[trials]
    params = {
        k: torch.stack([dict(n.named_parameters())[k].detach() for n in chosen])
        for k, _ in chosen[0].named_parameters()
    }
    return client.Simulator(chosen[0], client.FedSGDConfig(), params)


def starts(trials: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Dummy images (T, 1, 3, 32, 32) and label logits (T, 1, 100), seeded."""
    gen = generator(0, "attack")
    x0 = torch.randn((trials, 1, 3, 32, 32), generator=gen)
    return x0.to(device), torch.randn((trials, 1, 100), generator=gen).to(device)


class Cost(NamedTuple):
    """Seconds per L-BFGS iteration (per Adam step): in the closure, and in the rest (the
    optimiser's update, snapshots, set-up)."""

    closure: float
    rest: float


def dlg(steps: int) -> AttackConfig:
    return AttackConfig(name="dlg", objective="l2", labels="joint", iterations=steps)


def backend_for(name: str, trials: int, device: str) -> Backend:
    """``eager`` (oneDNN), or what a run of ``trials`` trials would choose (``auto``)."""
    if name == "eager":
        return Backend(compile=False, conv="onednn")
    return choose_backend("auto", "auto", model="lenet", device=device, problems=trials,
                          closures=10**6)  # fmt: skip


def attack(sim, target, x0, y0, optimizer, steps, backend) -> tuple[float, AttackResult, Cost]:
    """DLG from the given starts through the engine every attack uses; (seconds, result,
    cost per iteration) with the closure timed from inside the optimiser's step. A
    compiled closure is compiled (and warmed) before the clock starts."""
    run = build_problem(sim, target, x0, y0, dlg(1), optimizer, optimised=True,
                        compiled=backend.compile, timings={})  # fmt: skip
    with convolution(backend.conv):
        run.closure()  # compiles, if compiled; the optimiser's first closure comes later
    start = time.perf_counter()
    spent, calls = [0.0], [0]
    evaluate = run.value_and_grad

    def timed(v: torch.Tensor, rows) -> tuple[torch.Tensor, torch.Tensor]:
        begin = time.perf_counter()
        out = evaluate(v, rows)
        spent[0] += time.perf_counter() - begin
        calls[0] += 1
        return out

    run.value_and_grad = timed  # a field: kept when rows leave the problem
    with convolution(backend.conv):
        result = optimise(run, dlg(steps), lambda *a: None)
    if x0.is_cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return seconds, result, Cost(spent[0] / calls[0], (seconds - spent[0]) / calls[0])


def forward_ms(model, x0, size: int, repeats: int = 15) -> float:
    """Best of ``repeats`` no-grad forwards of the model on a batch of ``size`` images, in ms
    (the best is the least disturbed by other processes)."""
    batch = x0[:size].flatten(0, 1)
    times = []
    with torch.no_grad():
        for _ in range(repeats + 1):
            start = time.perf_counter()
            model(batch)
            times.append(time.perf_counter() - start)
    return min(times[1:]) * 1e3


def psnr(truth: torch.Tensor, images: torch.Tensor) -> float:
    """Mean PSNR (dB) of reconstructions (T, 1, C, H, W) against the truth."""
    return float(metrics.psnr(truth[:, 0], images[:, 0]).mean())


def cuda(args: argparse.Namespace, optimizer) -> None:
    """Batched attacks on the GPU: time per step and peak memory for each T."""
    if not torch.cuda.is_available():
        print("--device cuda: no CUDA device on this machine; nothing measured")
        return
    sizes = [1, 16, 64, 256]
    nets, _, target = setup(max(sizes), args.models, "cuda")
    x0, y0 = starts(max(sizes), "cuda")
    print(f"{torch.cuda.get_device_name()}; DLG/{args.optimizer}, {args.steps} steps")
    for size in sizes:
        backend = backend_for(args.backend, size, "cuda")
        torch.cuda.reset_peak_memory_stats()
        seconds, _, cost = attack(simulator(nets, slice(0, size)), [g[:size] for g in target],
                                  x0[:size], y0[:size], optimizer, args.steps, backend)  # fmt: skip
        peak = torch.cuda.max_memory_allocated() / 2**20
        print(f"T={size:4d}  {1e3 * seconds / args.steps:8.2f} ms per step "
              f"({1e3 * cost.closure:.2f} ms per closure)  "
              f"peak GPU memory {peak:.0f} MB")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--optimizer", choices=["lbfgs", "adam"], default="lbfgs")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--backend", choices=["eager", "auto"], default="eager")
    parser.add_argument("--models", action="store_true", help="one model init per trial")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(1)
    optimizer = LBFGSConfig() if args.optimizer == "lbfgs" else AdamConfig()
    if args.device == "cuda":
        cuda(args, optimizer)
        return
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; torch threads 1; "
          f"DLG/{args.optimizer}, {args.steps} steps, LeNet 32x32, backend {args.backend}, "
          f"{'a model per trial' if args.models else 'one model'}")  # fmt: skip
    nets, truth, target = setup(max(args.sizes), args.models, "cpu")
    x0, y0 = starts(max(args.sizes), "cpu")
    forward_one, cost_one = forward_ms(nets[0], x0, 1), None
    for size in args.sizes:
        goal = [g[:size] for g in target]
        batch_backend, one_backend = (backend_for(args.backend, n, "cpu") for n in (size, 1))
        batches, sequentials, costs, singles = [], [], [], []
        for _ in range(args.repeats):  # alternate so that machine load hits both alike
            seconds, together, cost = attack(
                simulator(nets, slice(0, size)), goal, x0[:size], y0[:size], optimizer,
                args.steps, batch_backend,
            )  # fmt: skip
            batches.append(seconds)
            costs.append(cost)
            sequential, diffs, alone_images = 0.0, [], []
            for t in range(size):
                one = slice(t, t + 1)
                seconds, alone, cost = attack(simulator(nets, one), [g[one] for g in goal],
                                              x0[one], y0[one], optimizer, args.steps,
                                              one_backend)  # fmt: skip
                sequential += seconds
                singles.append(cost)
                diffs.append(float((together.images[t] - alone.images[0]).abs().max()))
                alone_images.append(alone.images)
            sequentials.append(sequential)
        floor = []
        for t in range(min(size, FLOOR_TRIALS)):
            one = slice(t, t + 1)
            _, nudged, _ = attack(simulator(nets, one), [g[one] for g in goal],
                                  x0[one] * (1 + 1e-7), y0[one], optimizer, args.steps,
                                  one_backend)  # fmt: skip
            floor.append(float((nudged.images[0] - alone_images[t][0]).abs().max()))
        batched, sequential = statistics.median(batches), statistics.median(sequentials)
        cost_one = cost_one or Cost(*map(statistics.median, zip(*singles)))
        cost = Cost(*map(statistics.median, zip(*costs)))
        forward = forward_ms(nets[0], x0, size)
        print(f"T={size:3d}  batched {batched:7.2f} s = {batched * size / sequential:5.2f}x one "
              f"trial (mean alone {sequential / size:.2f} s)  one after another "
              f"{sequential:7.2f} s = {sequential / batched:5.2f}x batched  "
              f"(medians of {args.repeats})")  # fmt: skip
        print(f"        per iteration at T vs 1: closure {cost.closure * 1e3:.1f} vs "
              f"{cost_one.closure * 1e3:.1f} ms = {cost.closure / cost_one.closure:.2f}x, rest "
              f"(optimiser, snapshots) {cost.rest * 1e3:.1f} vs {cost_one.rest * 1e3:.1f} ms; "
              f"plain forward {forward:.2f} vs {forward_one:.2f} ms = "
              f"{forward / forward_one:.2f}x")  # fmt: skip
        print(f"        equality: max |image diff| batched vs alone {max(diffs):.1e} (median "
              f"{statistics.median(diffs):.1e}); chaos floor, alone vs alone from a 1e-7 "
              f"nudged start: max {max(floor):.1e} (median {statistics.median(floor):.1e}, "
              f"{len(floor)} trials)")  # fmt: skip
        print(f"        quality: mean PSNR batched {psnr(truth[:size], together.images):.1f} dB, "
              f"alone {psnr(truth[:size], torch.cat(alone_images)):.1f} dB")  # fmt: skip
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak:.0f} MB")


if __name__ == "__main__":
    main()
