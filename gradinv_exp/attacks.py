"""Gradient-inversion attacks: recover images (and labels) from a shared gradient.

State has a leading trial axis T: ``T`` independent attacks on ``T`` shared gradients
run in lockstep as one batched computation (``batched.gradients`` gives every trial its
own parameter gradient, one backward differentiates all objectives; ``lbfgs.BatchedLBFGS``
or Adam on the ``(T, D)`` variables keep per-trial optimiser state), so snapshots line up
across trials and T trials cost far less than T runs. An attack sees the model, the
shared gradients ``target`` (one tensor per parameter, shape ``(T, *param.shape)``), the
image shape ``(T, B, C, H, W)`` and the number of classes, never the truth. It reports
progress through ``on_snapshot(step, grad_loss (T,), images (T, B, C, H, W))`` at step 0
(the initial dummy, before any update) and every ``snapshot_every`` steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor, nn

from gradinv_exp import batched
from gradinv_exp.batched import soft_cross_entropy
from gradinv_exp.config import AttackConfig, LBFGSConfig, OptimizerConfig
from gradinv_exp.lbfgs import BatchedLBFGS

OnSnapshot = Callable[[int, Tensor, Tensor], None]


def gradient(
    model: nn.Module, images: Tensor, target: Tensor, *, create_graph: bool = False
) -> list[Tensor]:
    """Parameter gradient of the soft cross-entropy of ``model(images)`` vs ``target``.

    ``images`` is one client batch ``(B, C, H, W)``; ``target`` its label distributions
    ``(B, num_classes)`` (one-hot for the true gradient).
    """
    loss = soft_cross_entropy(model(images), target)
    return list(torch.autograd.grad(loss, list(model.parameters()), create_graph=create_graph))


class Optimizer(Protocol):
    """What ``optimise`` steps: ``step(closure)`` with a closure that fills ``.grad`` of the
    ``(T, D)`` variables and returns the ``(T,)`` losses; per-trial state stays per row."""

    def step(self, closure: Callable[[], Tensor]) -> Tensor | None: ...


def _lbfgs(variables: Tensor, cfg: LBFGSConfig) -> Optimizer:
    return BatchedLBFGS(
        variables,
        lr=cfg.lr,
        max_iter=cfg.max_iter,
        history_size=cfg.history_size,
        tolerance_grad=cfg.tolerance_grad,
        tolerance_change=cfg.tolerance_change,
    )


# Adam is elementwise, so torch's Adam on the (T, D) variables is T independent Adams.
OPTIMIZERS: dict[str, Callable[[Tensor, OptimizerConfig], Optimizer]] = {
    "lbfgs": _lbfgs,
    "adam": lambda variables, cfg: torch.optim.Adam([variables], lr=cfg.lr),
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
class Problem:
    """T attacks as one computation: each row of ``variables`` is one trial's unknowns."""

    variables: Tensor  # (T, D) leaf, requires grad
    images: Callable[[Tensor], Tensor]  # variables -> (T, B, C, H, W) reconstructions
    labels: Callable[[Tensor], Tensor]  # variables -> (T, B) recovered labels
    loss: Callable[[Tensor], Tensor]  # variables -> (T,) objectives, differentiable


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

    Per trial, in trial order, a dummy image ``(B, C, H, W)`` and label logits
    ``(B, num_classes)`` are drawn from N(0, 1) with ``generator`` (so trial t starts
    where a single run with the generator advanced past t trials would); each trial
    minimises ``l2_distance`` between its dummy's gradient (loss on softmax of its label
    logits) and its target.
    """
    count, batch = shape[:2]
    size = math.prod(shape[1:])
    start = [
        torch.cat([torch.randn(shape[1:], generator=generator).flatten(),
                   torch.randn((batch, num_classes), generator=generator).flatten()])
        for _ in range(count)
    ]  # fmt: skip
    variables = torch.stack(start).to(target[0].device).requires_grad_(True)

    def images(v: Tensor) -> Tensor:
        return v[:, :size].view(shape)

    def logits(v: Tensor) -> Tensor:
        return v[:, size:].view(count, batch, num_classes)

    def loss(v: Tensor) -> Tensor:
        grads = batched.gradients(model, images(v), torch.softmax(logits(v), -1))
        return batched.l2_distance(grads, target)

    problem = Problem(variables, images, lambda v: logits(v).argmax(-1), loss)
    return optimise(problem, OPTIMIZERS[optimizer.name](variables, optimizer), attack, on_snapshot)


def optimise(
    problem: Problem, opt: Optimizer, attack: AttackConfig, on_snapshot: OnSnapshot
) -> AttackResult:
    """The outer loop shared by the attacks: lockstep steps, snapshots, divergence.

    A NaN/inf loss stops that trial (status diverged) and keeps its last images whose
    loss was finite; the other trials go on.
    """
    v = problem.variables

    def closure() -> Tensor:
        losses = problem.loss(v)
        v.grad = torch.autograd.grad(losses.sum(), v)[0]
        return losses.detach()

    def losses() -> Tensor:
        with torch.no_grad():
            return problem.loss(v).detach()

    def snapshot(step: int) -> None:
        on_snapshot(step, losses(), problem.images(v).detach())

    snapshot(0)
    good = v.detach().clone()
    steps = torch.zeros(len(v), dtype=torch.long)
    diverged = torch.zeros(len(v), dtype=torch.bool, device=v.device)
    for step in range(1, attack.iterations + 1):
        first = opt.step(closure)
        with torch.no_grad():
            diverged |= ~torch.isfinite(first) | ~torch.isfinite(v).all(1)
            v.copy_(torch.where(diverged[:, None], good, v))  # back to the last finite point
            good = v.detach().clone()
        steps[~diverged.cpu()] = step
        if bool(diverged.all()):
            snapshot(int(steps.max()))
            break
        if step % attack.snapshot_every == 0 or step == attack.iterations:
            snapshot(step)
    return AttackResult(
        images=problem.images(v).detach().clone(),
        labels=problem.labels(v).detach(),
        grad_loss=losses().cpu(),
        steps=steps,
        diverged=diverged.cpu(),
    )


ATTACKS: dict[str, Callable[..., AttackResult]] = {"dlg": dlg}
