"""Fidelity to the authors' code: gradinv_exp's attacks next to faithful re-implementations
of the published loops, on the same images, model initialisations and dummy starts.

The references, written from the authors' repositories (mit-han-lab/dlg,
PatrickZH/Improved-Deep-Leakage-from-Gradients, JonasGeiping/invertinggradients):
- DLG: torch.optim.LBFGS (lr 1) on the dummy image and dummy label logits; the loss is
  the one-hot cross-entropy on softmax(dummy label); the objective is the sum over
  parameters of ||grad(dummy) - grad||^2; 300 steps.
- iDLG: the label is argmin over classes of the row sums of the last layer's weight
  gradient; then torch.optim.LBFGS (lr 1) on the dummy image only, cross-entropy with that
  label, the same objective; 300 steps.
- Inverting Gradients: 1 - cosine similarity of all gradients as one vector
  (``reconstruction_costs`` 'sim' with equal weights) + 1e-4 x total variation (mean
  |dx| + mean |dy|); Adam (lr 0.1) on the sign of the image gradient, lr x0.1 at
  iterations // 2.667, // 1.6, // 1.142, image boxed to [0, 1] after each step; label by
  the same iDLG rule; cross-entropy with hard labels.
Both sides attack the DLG LeNet (3 sigmoid convs, U(-0.5, 0.5) init) on one bundled photo
per run; pair n is photo n % 10 with the model of seed n // 10, and both start from the
same dummy (drawn from the pair's seed). gradinv_exp runs its presets (conf/attack) with
the backend a default run chooses (``attacks.choose_backend``). Printed per attack:
success rate (PSNR >= 20 dB) with its Wilson interval and mean PSNR with its t interval,
reference | gradinv_exp.

    python scripts/fidelity.py [--pairs 30] [--attacks dlg idlg ig] [--ig-iterations 4800]
        [--ig-size 32]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

from gradinv_exp import client, data, models
from gradinv_exp.analysis import metrics, uncertainty
from gradinv_exp.attacks import AttackConfig, choose_backend
from gradinv_exp.attacks.engine import Job, attack
from gradinv_exp.attacks.optimizers import AdamConfig, LBFGSConfig
from gradinv_exp.base.streams import generator
from gradinv_exp.data import DatasetConfig

CLASSES = 100


def onehot_cross_entropy(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """DLG's ``cross_entropy_for_onehot``."""
    return torch.mean(torch.sum(-target * F.log_softmax(pred, dim=-1), 1))


def l2_gradient_distance(model, loss, original) -> torch.Tensor:
    dummy = torch.autograd.grad(loss, model.parameters(), create_graph=True)
    return sum(((gx - gy) ** 2).sum() for gx, gy in zip(dummy, original))


def reference_dlg(model, original, x0, y0, steps: int) -> torch.Tensor:
    dummy_data, dummy_label = x0.clone().requires_grad_(True), y0.clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS([dummy_data, dummy_label])
    for _ in range(steps):

        def closure():
            optimizer.zero_grad()
            loss = onehot_cross_entropy(model(dummy_data), F.softmax(dummy_label, dim=-1))
            diff = l2_gradient_distance(model, loss, original)
            diff.backward()
            return diff

        optimizer.step(closure)
    return dummy_data.detach()


def idlg_label(original) -> torch.Tensor:
    """iDLG's rule: the class whose row of the last weight gradient sums lowest."""
    return torch.argmin(torch.sum(original[-2], dim=-1), dim=-1).reshape((1,))


def reference_idlg(model, original, x0, steps: int) -> torch.Tensor:
    dummy_data = x0.clone().requires_grad_(True)
    label = idlg_label(original)
    optimizer = torch.optim.LBFGS([dummy_data], lr=1.0)
    for _ in range(steps):

        def closure():
            optimizer.zero_grad()
            loss = F.cross_entropy(model(dummy_data), label)
            diff = l2_gradient_distance(model, loss, original)
            diff.backward()
            return diff

        optimizer.step(closure)
    return dummy_data.detach()


def reference_ig(model, original, x0, iterations: int, tv: float = 1e-4) -> torch.Tensor:
    x = x0.clone().requires_grad_(True)
    label = idlg_label(original)
    optimizer = torch.optim.Adam([x], lr=0.1)
    milestones = [int(iterations / 2.667), int(iterations / 1.6), int(iterations / 1.142)]
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.1)
    for _ in range(iterations):

        def closure():
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), label)
            trial = torch.autograd.grad(loss, model.parameters(), create_graph=True)
            dot = sum((t * g).sum() for t, g in zip(trial, original))
            norms = (
                sum(t.pow(2).sum() for t in trial).sqrt()
                * sum(g.pow(2).sum() for g in original).sqrt()
            )
            dx = torch.mean(torch.abs(x[:, :, :, :-1] - x[:, :, :, 1:]))
            dy = torch.mean(torch.abs(x[:, :, :-1, :] - x[:, :, 1:, :]))
            cost = 1 - dot / norms + tv * (dx + dy)
            cost.backward()
            x.grad.sign_()
            return cost

        optimizer.step(closure)
        scheduler.step()
        with torch.no_grad():
            x.data = torch.clamp(x, 0, 1)
    return x.detach()


PRESETS = {
    "dlg": AttackConfig(name="dlg", objective="l2", labels="joint", iterations=300),
    "idlg": AttackConfig(name="idlg", objective="l2", labels="idlg", iterations=300),
    "ig": AttackConfig(
        name="ig", objective="cosine", priors={"tv": 1e-4}, labels="idlg", signed=True,
        boxed=True, lr_decay=True, iterations=4800,
    ),
}  # fmt: skip


def pair(n: int, size: int):
    """Photo n % 10 at ``size`` px, the DLG LeNet of seed n // 10 and its true gradient."""
    images, labels, _ = data.load(DatasetConfig(name="photos", index=n % 10, image_size=size), 1)
    net = models.build(
        "lenet_dlg", channels=3, num_classes=CLASSES, image_size=size, activation="sigmoid",
        init_range=0.5, generator=generator(n // 10, "model"),
    )  # fmt: skip
    onehot = F.one_hot(labels, CLASSES).float()
    return net, images, client.gradient(client.Client(net, images, onehot))


def ours(name: str, cfg: AttackConfig, net, images, original, gen_seed: int) -> torch.Tensor:
    closures = cfg.iterations * (20 if name != "ig" else 1)
    backend = choose_backend(
        "auto", "auto", model="lenet_dlg", device="cpu", problems=1, closures=closures
    )
    job = Job([g[None] for g in original], generator(gen_seed, "attack"), lambda *a: None)
    (result,) = attack(
        client.Simulator(net, client.FedSGDConfig()), [job],
        shape=(1, *images.shape), num_classes=CLASSES, cfg=cfg,
        optimizer=AdamConfig() if name == "ig" else LBFGSConfig(), backend=backend,
    )  # fmt: skip
    return result.images[0]


def starts(size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The dummy image and label logits the engine draws first for this seed."""
    gen = generator(seed, "attack")
    x0 = torch.randn((1, 1, 3, size, size), generator=gen)
    return x0[0], torch.randn((1, 1, CLASSES), generator=gen)[0]


def report(name: str, side: str, psnrs: list[float], seconds: float) -> None:
    line = uncertainty.describe(np.array(psnrs))
    print(f"{name:5s} {side:12s} {line}  ({len(psnrs)} pairs, "
          f"{seconds / len(psnrs):.1f} s each)", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=30)
    parser.add_argument("--attacks", nargs="+", default=["dlg", "idlg", "ig"])
    parser.add_argument("--steps", type=int, default=300, help="L-BFGS steps of DLG/iDLG")
    parser.add_argument("--ig-iterations", type=int, default=4800)
    parser.add_argument("--ig-size", type=int, default=32, help="image side for IG")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"load average {os.getloadavg()[0]:.2f}; {args.pairs} (image, model) pairs per attack")
    for name in args.attacks:
        size = args.ig_size if name == "ig" else 32
        steps = args.ig_iterations if name == "ig" else args.steps
        cfg = dataclasses.replace(PRESETS[name], iterations=steps)
        psnrs: dict[str, list[float]] = {"reference": [], "gradinv_exp": []}
        seconds = {"reference": 0.0, "gradinv_exp": 0.0}
        for n in range(args.pairs):
            net, images, original = pair(n, size)
            x0, y0 = starts(size, n)
            start = time.perf_counter()
            if name == "dlg":
                recon = reference_dlg(net, original, x0, y0, steps)
            elif name == "idlg":
                recon = reference_idlg(net, original, x0, steps)
            else:
                recon = reference_ig(net, original, x0, steps)
            seconds["reference"] += time.perf_counter() - start
            psnrs["reference"].append(float(metrics.psnr(images, recon)[0]))
            start = time.perf_counter()
            mine = ours(name, cfg, net, images, original, n)
            seconds["gradinv_exp"] += time.perf_counter() - start
            psnrs["gradinv_exp"].append(float(metrics.psnr(images, mine)[0]))
        for side in psnrs:
            report(name, side, psnrs[side], seconds[side])


if __name__ == "__main__":
    main()
