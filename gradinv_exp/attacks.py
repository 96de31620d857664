"""Gradient-inversion attacks: recover images (and labels) from a shared gradient.

State has a leading trial axis T: ``T`` independent attacks on ``T`` shared gradients
run in lockstep (same step counter, separate optimisers), so snapshots line up across
trials. An attack sees the model, the shared gradients ``target`` (one tensor per
parameter, shape ``(T, *param.shape)``), the image shape ``(T, B, C, H, W)`` and the
number of classes; the true labels ``known_labels`` ``(T, B)`` only when its label mode is
``given`` (the threat model where the server knows them). It reports progress through
``on_snapshot(step, grad_loss (T,), images (T, B, C, H, W))`` at step 0 (the initial
dummy, before any update) and every ``snapshot_every`` steps.

Attack-specific pieces are pure functions reused by the optimisation loop: objectives
and priors in ``objectives.py``, label recovery in ``labels.py``, the step-decay schedule,
boxing and signed gradients in ``steps.py``, restart selection in ``restarts.py``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from gradinv_exp.config import (
    AttackConfig,
    IDLGConfig,
    IGConfig,
    LBFGSConfig,
    OptimizerConfig,
)
from gradinv_exp.labels import idlg_labels, last_linear_weight
from gradinv_exp.objectives import Objective, cosine_distance, l2_distance, total_variation
from gradinv_exp.restarts import OnSnapshot, best_of_restarts, best_restart, pick
from gradinv_exp.steps import box_, signed_, step_decay


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


# Optimisers an attack may use; an attack missing here accepts every optimiser.
REQUIRED_OPTIMIZER: dict[str, tuple[str, ...]] = {"ig": ("adam",)}


@dataclass
class Trial:
    """One attack's variables, optimiser, and objective ``loss(create_graph)``.

    ``y`` holds label logits when they are optimised (in the optimiser's params) and
    fixed label distributions otherwise. After each optimiser step ``after_step`` boxes
    ``x`` and advances ``schedule``; ``signed`` replaces ``x``'s gradient by its sign.
    """

    x: Tensor
    y: Tensor
    opt: torch.optim.Optimizer
    loss: Callable[[bool], Tensor]
    schedule: torch.optim.lr_scheduler.LRScheduler | None = None
    boxed: bool = False
    signed: bool = False

    def closure(self) -> Tensor:
        self.opt.zero_grad()
        loss = self.loss(True)
        loss.backward()
        if self.signed:
            signed_(self.x)
        return loss

    def after_step(self) -> None:
        if self.boxed:
            box_(self.x)
        if self.schedule is not None:
            self.schedule.step()


def matching_loss(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    goal: Sequence[Tensor],
    *,
    joint: bool,
    objective: Objective,
    tv_weight: float = 0.0,
    create_graph: bool,
) -> Tensor:
    """Objective between the gradient of dummy ``x`` ``(B, C, H, W)`` and ``goal``, plus TV.

    ``y`` ``(B, num_classes)`` are label logits (softmax taken) when ``joint``, else fixed
    label distributions.
    """
    labels = torch.softmax(y, -1) if joint else y
    loss = objective(gradient(model, x, labels, create_graph=create_graph), goal)
    return loss + tv_weight * total_variation(x) if tv_weight else loss


def problems(
    model: nn.Module,
    target: Sequence[Tensor],
    x0: Tensor,
    y0: Tensor,
    *,
    joint: bool,
    objective: Objective,
    optimizer: OptimizerConfig,
    tv_weight: float = 0.0,
    decay_over: int | None = None,
    boxed: bool = False,
    signed: bool = False,
) -> list[Trial]:
    """One ``Trial`` per row of ``x0`` ``(N, B, C, H, W)``; row n attacks ``target[n % T]``.

    ``N`` is a multiple of the number of trials T (restarts stack along that axis).
    ``decay_over`` = iterations enables ``step_decay``.
    """
    count = target[0].shape[0]
    trials = []
    for n in range(len(x0)):
        x = x0[n].clone().requires_grad_(True)
        y = y0[n].clone().requires_grad_(joint)
        goal = [g[n % count] for g in target]

        def loss(create_graph: bool, x: Tensor = x, y: Tensor = y, goal: list = goal) -> Tensor:
            return matching_loss(
                model, x, y, goal, joint=joint, objective=objective, tv_weight=tv_weight,
                create_graph=create_graph,
            )  # fmt: skip

        opt = OPTIMIZERS[optimizer.name]([x, y] if joint else [x], optimizer)
        schedule = step_decay(opt, decay_over) if decay_over else None
        trials.append(Trial(x, y, opt, loss, schedule, boxed, signed))
    return trials


def recovered_labels(
    model: nn.Module, target: Sequence[Tensor], shape: tuple[int, ...], num_classes: int
) -> Tensor:
    """One-hot labels ``(T, B, num_classes)`` read from the shared gradient (``idlg_labels``)."""
    labels = idlg_labels(target[last_linear_weight(model)], shape[1])
    return torch.nn.functional.one_hot(labels, num_classes).float().to(target[0].device)


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
    known_labels: Tensor | None = None,
) -> AttackResult:
    """Deep Leakage from Gradients: jointly optimise dummy images and soft labels.

    Dummy images ``(T, B, C, H, W)`` and label logits ``(T, B, num_classes)`` start
    from N(0, 1) drawn from ``generator``; each trial minimises ``l2_distance`` between
    its dummy's gradient (loss on softmax of its label logits) and its target.
    """
    device = target[0].device
    xs = torch.randn(shape, generator=generator).to(device)
    ys = torch.randn((*shape[:2], num_classes), generator=generator).to(device)
    trials = problems(model, target, xs, ys, joint=True, objective=l2_distance, optimizer=optimizer)
    return optimise(trials, attack, on_snapshot)


def idlg(
    model: nn.Module,
    target: Sequence[Tensor],
    *,
    shape: tuple[int, ...],
    num_classes: int,
    attack: IDLGConfig,
    optimizer: OptimizerConfig,
    generator: torch.Generator,
    on_snapshot: OnSnapshot,
    known_labels: Tensor | None = None,
) -> AttackResult:
    """Improved DLG (Zhao et al. 2020): labels read from the gradient, then DLG on data only.

    Labels come from ``labels.idlg_labels`` (exact for one image); dummy images start
    from N(0, 1) and minimise ``l2_distance`` with the recovered labels held fixed.
    """
    xs = torch.randn(shape, generator=generator).to(target[0].device)
    ys = recovered_labels(model, target, shape, num_classes)
    trials = problems(
        model, target, xs, ys, joint=False, objective=l2_distance, optimizer=optimizer
    )
    return optimise(trials, attack, on_snapshot)


def ig(
    model: nn.Module,
    target: Sequence[Tensor],
    *,
    shape: tuple[int, ...],
    num_classes: int,
    attack: IGConfig,
    optimizer: OptimizerConfig,
    generator: torch.Generator,
    on_snapshot: OnSnapshot,
    known_labels: Tensor | None = None,
) -> AttackResult:
    """Inverting Gradients (Geiping et al. 2020): cosine matching + TV, boxed signed Adam.

    ``attack.restarts`` R independent starts per trial run as R*T problems (restart-major)
    from N(0, 1); per trial the restart with the lowest objective is reported, in the
    snapshots (at that moment) and in the result (at the end). Labels: ``idlg`` (read from
    the gradient), ``given`` (``known_labels``), or ``joint`` (optimised soft labels).
    """
    device = target[0].device
    count, restarts = shape[0], attack.restarts
    xs = torch.randn((restarts * count, *shape[1:]), generator=generator).to(device)
    if attack.labels == "joint":
        ys = torch.randn((restarts * count, shape[1], num_classes), generator=generator)
    elif attack.labels == "given":
        assert known_labels is not None, "attack.labels=given needs the true labels"
        ys = torch.nn.functional.one_hot(known_labels, num_classes).float().repeat(restarts, 1, 1)
    else:
        ys = recovered_labels(model, target, shape, num_classes).repeat(restarts, 1, 1)
    ys = ys.to(device)
    trials = problems(
        model, target, xs, ys, joint=attack.labels == "joint", objective=cosine_distance,
        optimizer=optimizer, tv_weight=attack.tv_weight,
        decay_over=attack.iterations if attack.lr_decay else None,
        boxed=attack.boxed, signed=attack.signed,
    )  # fmt: skip
    result = optimise(trials, attack, best_of_restarts(restarts, on_snapshot))
    return select(result, best_restart(result.grad_loss, restarts))


def select(result: AttackResult, restart: Tensor) -> AttackResult:
    """The ``(T, ...)`` result of the chosen restart per trial from an ``(R*T, ...)`` one."""
    return AttackResult(*(pick(getattr(result, f), restart) for f in AttackResult.__annotations__))


def optimise(trials: list[Trial], attack: AttackConfig, on_snapshot: OnSnapshot) -> AttackResult:
    """The outer loop shared by the attacks: lockstep steps, snapshots, divergence.

    A NaN/inf loss stops that trial (status diverged) and keeps its last images whose
    loss was finite; the other trials go on.
    """

    def losses() -> Tensor:
        return torch.tensor([float(t.loss(False).detach()) for t in trials])

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
            trial.after_step()
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


ATTACKS: dict[str, Callable[..., AttackResult]] = {"dlg": dlg, "idlg": idlg, "ig": ig}
