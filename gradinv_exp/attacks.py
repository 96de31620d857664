"""Gradient-inversion attacks: recover images (and labels) from a shared gradient.

State has a leading trial axis T: ``T`` independent attacks on ``T`` shared gradients
run in lockstep (same step counter, separate optimisers), so snapshots line up across
trials. An attack sees the model, the shared gradients ``target`` (one tensor per
parameter, shape ``(T, *param.shape)``), the image shape ``(T, B, C, H, W)`` and the
number of classes, never the truth. It reports progress through
``on_snapshot(step, grad_loss (T,), images (T, B, C, H, W))`` at step 0 (the initial
dummy, before any update) and every ``snapshot_every`` steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from gradinv_exp.config import AttackConfig, LBFGSConfig, OptimizerConfig

OnSnapshot = Callable[[int, Tensor, Tensor], None]


def soft_cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    """mean over the batch of sum(-target * log_softmax(logits)); target rows sum to 1."""
    return torch.mean(torch.sum(-target * torch.log_softmax(logits, dim=-1), dim=-1))


def gradient(
    model: nn.Module, images: Tensor, target: Tensor, *, create_graph: bool = False
) -> list[Tensor]:
    """Parameter gradient of the soft cross-entropy of ``model(images)`` vs ``target``.

    ``images`` is one client batch ``(B, C, H, W)``; ``target`` its label distributions
    ``(B, num_classes)`` (one-hot for the true gradient).
    """
    loss = soft_cross_entropy(model(images), target)
    return list(torch.autograd.grad(loss, list(model.parameters()), create_graph=create_graph))


def l2_distance(grads: Sequence[Tensor], target: Sequence[Tensor]) -> Tensor:
    """DLG's objective: sum over layers of the squared L2 distance."""
    return sum(((g - t) ** 2).sum() for g, t in zip(grads, target, strict=True))


def _lbfgs(params: list[Tensor], cfg: LBFGSConfig) -> torch.optim.Optimizer:
    return torch.optim.LBFGS(
        params,
        lr=cfg.lr,
        max_iter=cfg.max_iter,
        history_size=cfg.history_size,
        tolerance_grad=cfg.tolerance_grad,
        tolerance_change=cfg.tolerance_change,
    )


OPTIMIZERS: dict[str, Callable[[list[Tensor], OptimizerConfig], torch.optim.Optimizer]] = {
    "lbfgs": _lbfgs,
    "adam": lambda params, cfg: torch.optim.Adam(params, lr=cfg.lr),
}


@dataclass
class AttackResult:
    """Outcome of T attacks on T shared gradients."""

    images: Tensor  # (T, B, C, H, W): per trial, the last reconstruction with a finite loss
    labels: Tensor  # (T, B) recovered labels
    grad_loss: Tensor  # (T,) objective at ``images``
    steps: Tensor  # (T,) optimiser steps taken
    diverged: Tensor  # (T,) bool: the loss became NaN/inf and the trial stopped there


@dataclass
class Trial:
    """One attack's variables, optimiser, and objective ``loss(create_graph)``."""

    x: Tensor
    y: Tensor
    opt: torch.optim.Optimizer
    loss: Callable[[bool], Tensor]

    def closure(self) -> Tensor:
        self.opt.zero_grad()
        loss = self.loss(True)
        loss.backward()
        return loss


def dlg(
    model: nn.Module,
    target: Sequence[Tensor],
    *,
    shape: tuple[int, ...],
    num_classes: int,
    attack: AttackConfig,
    optimizer: OptimizerConfig,
    generator: torch.Generator,
    on_snapshot: OnSnapshot,
) -> AttackResult:
    """Deep Leakage from Gradients: jointly optimise dummy images and soft labels.

    Dummy images ``(T, B, C, H, W)`` and label logits ``(T, B, num_classes)`` start
    from N(0, 1) drawn from ``generator``; each trial minimises ``l2_distance`` between
    its dummy's gradient (loss on softmax of its label logits) and its target.
    """
    device = target[0].device
    xs = torch.randn(shape, generator=generator).to(device)
    ys = torch.randn((*shape[:2], num_classes), generator=generator).to(device)
    trials = []
    for t in range(shape[0]):
        x, y = xs[t].clone().requires_grad_(True), ys[t].clone().requires_grad_(True)
        goal = [g[t] for g in target]

        def loss(create_graph: bool, x: Tensor = x, y: Tensor = y, goal: list = goal) -> Tensor:
            grads = gradient(model, x, torch.softmax(y, -1), create_graph=create_graph)
            return l2_distance(grads, goal)

        trials.append(Trial(x, y, OPTIMIZERS[optimizer.name]([x, y], optimizer), loss))
    return optimise(trials, attack, on_snapshot)


def optimise(trials: list[Trial], attack: AttackConfig, on_snapshot: OnSnapshot) -> AttackResult:
    """The outer loop shared by the attacks: lockstep steps, snapshots, divergence.

    A NaN/inf loss stops that trial (status diverged) and keeps its last images whose
    loss was finite; the other trials go on.
    """

    def losses() -> Tensor:
        return torch.tensor([float(t.loss(False)) for t in trials])

    def stacked(which: str) -> Tensor:
        return torch.stack([getattr(t, which).detach() for t in trials])

    on_snapshot(0, losses(), stacked("x"))
    count = len(trials)
    good = [(t.x.detach().clone(), t.y.detach().clone()) for t in trials]
    steps = torch.zeros(count, dtype=torch.long)
    diverged = torch.zeros(count, dtype=torch.bool)
    for step in range(1, attack.iterations + 1):
        for i, trial in enumerate(trials):
            if diverged[i]:
                continue
            loss = float(trial.opt.step(trial.closure).detach())
            if not math.isfinite(loss) or not torch.isfinite(trial.x).all():
                diverged[i] = True
                with torch.no_grad():  # back to the last finite point
                    trial.x.copy_(good[i][0])
                    trial.y.copy_(good[i][1])
                continue
            steps[i] = step
            good[i] = (trial.x.detach().clone(), trial.y.detach().clone())
        if diverged.all():
            on_snapshot(int(steps.max()), losses(), stacked("x"))
            break
        if step % attack.snapshot_every == 0 or step == attack.iterations:
            on_snapshot(step, losses(), stacked("x"))
    return AttackResult(
        images=stacked("x").clone(),
        labels=stacked("y").argmax(-1),
        grad_loss=losses(),
        steps=steps,
        diverged=diverged,
    )


ATTACKS: dict[str, Callable[..., AttackResult]] = {"dlg": dlg}
