"""The default run's attack: gradinv_exp's engine against a plain DLG loop, eager against
the backend the default run chooses (compiled closure, oneDNN convolution), and the other
compiled choice (native convolution).

All run in this process on the same photo, model, seed, dummy start and step count:
(a) the reference: torch.optim.LBFGS on [dummy image, dummy label], a closure with
    autograd.grad(create_graph=True), a snapshot clone every 10 steps (the original
    notebook's loop);
(b) gradinv_exp eager with oneDNN convolutions (how every run ran before the backend
    choice), snapshots every 10 steps with the run's per-snapshot metrics;
(c) gradinv_exp with the backend ``compile=auto conv_backend=auto`` picks for the default
    run (printed), same snapshots.
Repetitions alternate (a), (b), (c) so machine load hits all alike; medians are reported,
with ms per closure and the final losses. For the timings L-BFGS's tolerances are 0, so
every variant evaluates exactly steps x 20 closures (float32 DLG is chaotic: with the
default tolerances one variant may stall and stop early and so do less work).
Compile time is reported separately, cold (an empty inductor cache) and warm (the cache
the cold run filled), each measured in a fresh process. ``--pairs N`` adds the quality
check: the full 300-step default attack on N (image, model) pairs (the ten bundled
photos x model seeds), eager vs the default backend vs compiled with native convolution:
success rate (PSNR >= 20 dB) and mean PSNR with 95% intervals. Also: one closure with 1
vs 2 torch threads, peak RSS.

    python scripts/bench_attack.py [--steps 50] [--repeats 3] [--pairs 20]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from gradinv_exp import attacks, client, data, models
from gradinv_exp.analysis import metrics, uncertainty
from gradinv_exp.attacks.backend import Backend, convolution
from gradinv_exp.attacks.engine import build_problem, optimise
from gradinv_exp.attacks.optimizers import LBFGSConfig
from gradinv_exp.base.streams import generator
from gradinv_exp.data import DatasetConfig

SNAPSHOT_EVERY = 10
REPO = Path(__file__).resolve().parent.parent
EAGER = Backend(compile=False, conv="onednn")
DEFAULT = attacks.choose_backend(  # what `python -m gradinv_exp` picks (experiment.py)
    "auto", "auto", model="lenet", device="cpu", problems=1, closures=300 * 20
)


def setup(image: int, seed: int):
    images, labels, _ = data.load(DatasetConfig(name="photos", index=image, size=10), 1)
    model = models.build(
        "lenet", channels=3, num_classes=100, image_size=32, activation="sigmoid",
        init_range=0.5, generator=generator(seed, "model"),
    )  # fmt: skip
    onehot = torch.nn.functional.one_hot(labels, 100).float()
    return model, images, client.gradient(client.Client(model, images, onehot))


FIXED_WORK = LBFGSConfig(tolerance_grad=0.0, tolerance_change=0.0)  # 20 closures per step


def reference(model, true_grad, seed: int, steps: int) -> tuple[float, int]:
    """The original notebook's loop, verbatim in spirit (tolerances 0, as FIXED_WORK); (final
    gradient-matching loss, closure calls)."""
    gen = generator(seed, "attack")
    dummy_data = torch.randn((1, 3, 32, 32), generator=gen).requires_grad_(True)
    dummy_label = torch.randn((1, 100), generator=gen).requires_grad_(True)
    optimizer = torch.optim.LBFGS([dummy_data, dummy_label], tolerance_grad=0, tolerance_change=0)
    history, calls = [], [0]

    def closure():
        calls[0] += 1
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
    return float(closure().detach()), calls[0]


def ours(model, images, true_grad, seed: int, steps: int, backend: Backend, lbfgs=FIXED_WORK):
    """gradinv_exp's DLG through its engine with the run's snapshot metrics; returns
    (final loss, closure calls, the result)."""
    rows = []

    def on_snapshot(step, grad_loss, recon):
        recon = recon.detach().cpu().clone()
        pair = (images, metrics.matched(images, recon[0]))
        rows.append((step, float(grad_loss.mean()), metrics.mse(*pair), metrics.psnr(*pair)))

    dlg = attacks.AttackConfig(
        name="dlg", objective="l2", labels="joint", iterations=steps, snapshot_every=SNAPSHOT_EVERY
    )
    gen = generator(seed, "attack")
    x0, y0 = torch.randn((1, 1, 3, 32, 32), generator=gen), torch.randn((1, 1, 100), generator=gen)
    simulator = client.Simulator(model, client.FedSGDConfig())
    problem = build_problem(
        simulator, [g[None] for g in true_grad], x0, y0, dlg, lbfgs, optimised=True,
        compiled=backend.compile, timings={},
    )  # fmt: skip
    calls, evaluate = [0], problem.value_and_grad

    def counted(v, rows):
        calls[0] += 1
        return evaluate(v, rows)

    problem.value_and_grad = counted  # a field: kept when rows leave the problem
    with convolution(backend.conv):
        result = optimise(problem, dlg, on_snapshot)
    return float(result.grad_loss[0]), calls[0], result


def timed(fn):
    start = time.perf_counter()
    loss, calls, *_ = fn()
    return time.perf_counter() - start, calls, loss


def closure_ms(model, true_grad, threads: int, repeats: int = 30) -> float:
    """Median time of one eager DLG closure (forward, grad with create_graph, backward)."""
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


COMPILE_ONCE = """
import time, torch
torch.set_num_threads(1)
import bench_attack as b
model, images, true_grad = b.setup(5, 0)
start = time.perf_counter()
b.ours(model, images, true_grad, 0, 1, b.DEFAULT)
print(time.perf_counter() - start)
"""


def compile_seconds() -> tuple[float, float]:
    """(cold, warm) seconds of a 1-step compiled attack in a fresh process: the first with
    an empty inductor cache, the second reusing what the first wrote."""
    with tempfile.TemporaryDirectory() as cache:
        env = os.environ | {
            "TORCHINDUCTOR_CACHE_DIR": cache,
            "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'scripts'}",
        }
        runs = [
            subprocess.run(
                [sys.executable, "-c", COMPILE_ONCE],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )  # fmt: skip
            for _ in range(2)
        ]
    cold, warm = (float(r.stdout.strip().splitlines()[-1]) for r in runs)
    return cold, warm


def quality(pairs: int) -> None:
    """The default 300-step attack on ``pairs`` (image, model) pairs, eager vs DEFAULT vs
    compiled with native convolution."""
    variants = {"eager": EAGER, "default": DEFAULT, "native": Backend(True, "native")}
    psnrs: dict[str, list[float]] = {name: [] for name in variants}
    for n in range(pairs):
        image, seed = n % 10, n // 10
        model, images, true_grad = setup(image, seed)
        for name, backend in variants.items():
            *_, result = ours(model, images, true_grad, seed, 300, backend, LBFGSConfig())
            psnrs[name].append(float(metrics.psnr(images, result.images[0, 0][None])[0]))
    for name, values in psnrs.items():
        print(f"quality {name:8s} over {pairs} pairs: {uncertainty.describe(np.array(values))}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50, help="L-BFGS steps (default run: 300)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pairs", type=int, default=0, help="quality check on N pairs")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model, images, true_grad = setup(5, args.seed)
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; torch threads 1;"
          f" LeNet 32x32, {args.steps} L-BFGS steps, {args.repeats} alternating repeats; "
          f"default run's backend: compile={DEFAULT.compile}, "
          f"conv_backend={DEFAULT.conv}")  # fmt: skip
    ours(model, images, true_grad, args.seed, 1, DEFAULT)  # compile outside the timings
    runs = {
        "reference": lambda: reference(model, true_grad, args.seed, args.steps),
        "eager (oneDNN)": lambda: ours(model, images, true_grad, args.seed, args.steps, EAGER),
        "default backend": lambda: ours(model, images, true_grad, args.seed, args.steps, DEFAULT),
    }
    for other in (Backend(True, "onednn"), Backend(True, "native")):
        if other != DEFAULT:  # the other compiled choice, for the record
            ours(model, images, true_grad, args.seed, 1, other)
            runs[f"compiled {other.conv}"] = lambda b=other: ours(
                model, images, true_grad, args.seed, args.steps, b
            )
    results: dict[str, list] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, fn in runs.items():
            results[name].append(timed(fn))
    per = {}  # ms per closure: a run that stops early (diverged) did fewer closures
    for name, res in results.items():
        wall = statistics.median(r[0] for r in res)
        calls, loss = res[0][1], res[0][2]
        per[name] = 1e3 * wall / calls
        each = [round(r[0], 2) for r in res]
        print(f"{name:16s} wall {wall:6.2f} s (median of {each})  "
              f"{per[name]:5.2f} ms/closure ({calls} closures)  "
              f"final loss {loss:.3e}")  # fmt: skip
    print(f"ratio eager / reference (per closure): {per['eager (oneDNN)'] / per['reference']:.3f}")
    print(f"speed-up of the default run's attack (per closure): "
          f"{per['eager (oneDNN)'] / per['default backend']:.2f}x over eager (oneDNN), "
          f"{per['reference'] / per['default backend']:.2f}x over the reference")  # fmt: skip
    for name in runs:
        if name.startswith("compiled"):
            print(f"speed-up of {name} (per closure): {per['eager (oneDNN)'] / per[name]:.2f}x "
                  f"over eager")  # fmt: skip
    cold, warm = compile_seconds()
    print(f"compile time (1-step attack in a fresh process): cold {cold:.1f} s, warm {warm:.1f} s")
    one, two = closure_ms(model, true_grad, 1), closure_ms(model, true_grad, 2)
    print(f"one eager closure: 1 thread {one:.2f} ms, 2 threads {two:.2f} ms")
    if args.pairs:
        quality(args.pairs)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak:.0f} MB")


if __name__ == "__main__":
    main()
