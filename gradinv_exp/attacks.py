"""Gradient-inversion attacks: recover images (and labels) from a shared gradient.

State has a leading trial axis T: ``T`` independent attacks on ``T`` shared gradients
run in lockstep as one batched computation (``batched.gradients`` gives every trial its
own parameter gradient, one backward differentiates all objectives; ``lbfgs.BatchedLBFGS``
or Adam on the ``(T, D)`` variables keep per-trial optimiser state), so snapshots line up
across trials and T trials cost far less than T runs. An attack sees the model, the
shared gradients ``target`` (one tensor per parameter, shape ``(T, *param.shape)``), the
image shape ``(T, B, C, H, W)`` and the number of classes; the true labels
``known_labels`` ``(T, B)`` only when its label mode is ``given`` (the threat model where
the server knows them). It reports progress through
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
from typing import Protocol

import torch
from torch import Tensor, nn
from torch.func import vmap

from gradinv_exp import batched
from gradinv_exp.batched import soft_cross_entropy
from gradinv_exp.config import AttackConfig, IDLGConfig, IGConfig, LBFGSConfig, OptimizerConfig
from gradinv_exp.labels import idlg_labels, last_linear_weight
from gradinv_exp.lbfgs import BatchedLBFGS
from gradinv_exp.objectives import Objective, cosine_distance, l2_distance, total_variation
from gradinv_exp.restarts import OnSnapshot, best_of_restarts, best_restart, pick
from gradinv_exp.steps import box_, step_decay


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
    ``(N, D)`` variables and returns the ``(N,)`` losses; per-problem state stays per row."""

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


# Adam is elementwise, so torch's Adam on the (N, D) variables is N independent Adams.
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


# Optimisers an attack may use; an attack missing here accepts every optimiser.
REQUIRED_OPTIMIZER: dict[str, tuple[str, ...]] = {"ig": ("adam",)}


@dataclass
class Problem:
    """N attacks as one computation: row n of ``variables`` holds problem n's unknowns,
    its dummy images ``(B, C, H, W)`` flattened, then its label logits when they are
    optimised (``labels`` then holds None; else the fixed label distributions).

    Each step: ``opt`` steps all rows; ``signed`` replaces the images' gradient by its sign
    first; afterwards ``boxed`` clamps the images to [0, 1] and ``schedule`` advances.
    """

    variables: Tensor  # (N, D) leaf
    shape: tuple[int, ...]  # (N, B, C, H, W)
    num_classes: int
    labels: Tensor | None  # (N, B, num_classes) fixed label distributions, None = optimised
    loss: Callable[[Tensor], Tensor]  # variables -> (N,) objectives, differentiable
    opt: Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler | None = None
    boxed: bool = False
    signed: bool = False

    @property
    def size(self) -> int:
        return math.prod(self.shape[1:])

    def images(self) -> Tensor:
        return self.variables[:, : self.size].view(self.shape)

    def label_logits(self) -> Tensor:
        return self.variables[:, self.size :].view(*self.shape[:2], self.num_classes)

    def recovered(self) -> Tensor:
        """Recovered labels ``(N, B)``."""
        return (self.label_logits() if self.labels is None else self.labels).argmax(-1)

    def closure(self) -> Tensor:
        v = self.variables
        losses = self.loss(v)
        v.grad = torch.autograd.grad(losses.sum(), v)[0]
        if self.signed:
            v.grad[:, : self.size].sign_()
        return losses.detach()

    def after_step(self) -> None:
        if self.boxed:
            box_(self.variables[:, : self.size])
        if self.schedule is not None:
            self.schedule.step()


def matching_loss(
    model: nn.Module,
    x: Tensor,
    labels: Tensor,
    goal: Sequence[Tensor],
    *,
    objective: Objective,
    tv_weight: float = 0.0,
) -> Tensor:
    """Objective per problem ``(N,)`` between the gradients of dummies ``x``
    ``(N, B, C, H, W)`` with label distributions ``labels`` ``(N, B, num_classes)`` and
    ``goal`` (one ``(N, *param.shape)`` tensor per parameter), plus TV."""
    loss = vmap(objective)(batched.gradients(model, x, labels), goal)
    return loss + tv_weight * vmap(total_variation)(x) if tv_weight else loss


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
) -> Problem:
    """One batched ``Problem`` for the rows of ``x0`` ``(N, B, C, H, W)``; row n attacks
    ``target[n % T]``. ``y0`` ``(N, B, num_classes)``: label logits when ``joint``, else
    fixed label distributions.

    ``N`` is a multiple of the number of trials T (restarts stack along that axis).
    ``decay_over`` = iterations enables ``step_decay``.
    """
    count, shape = target[0].shape[0], tuple(x0.shape)
    goal = [g.repeat(len(x0) // count, *[1] * (g.dim() - 1)) for g in target]
    parts = [x0.flatten(1), y0.flatten(1)] if joint else [x0.flatten(1)]
    variables = torch.cat(parts, 1).clone().requires_grad_(True)
    fixed = None if joint else y0

    size = math.prod(shape[1:])

    def loss(v: Tensor) -> Tensor:
        x = v[:, :size].view(shape)
        labels = torch.softmax(v[:, size:].view(y0.shape), -1) if joint else y0
        return matching_loss(model, x, labels, goal, objective=objective, tv_weight=tv_weight)

    opt = OPTIMIZERS[optimizer.name](variables, optimizer)
    schedule = step_decay(opt, decay_over) if decay_over else None  # type: ignore[arg-type]
    return Problem(variables, shape, y0.shape[-1], fixed, loss, opt, schedule, boxed, signed)


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


def optimise(problem: Problem, attack: AttackConfig, on_snapshot: OnSnapshot) -> AttackResult:
    """The outer loop shared by the attacks: lockstep steps, snapshots, divergence.

    A NaN/inf loss stops that problem (status diverged) and keeps its last images whose
    loss was finite; the others go on.
    """
    v = problem.variables

    def losses() -> Tensor:
        with torch.no_grad():
            return problem.loss(v).detach()

    def snapshot(step: int) -> None:
        on_snapshot(step, losses().cpu(), problem.images().detach())

    snapshot(0)
    good = v.detach().clone()
    steps = torch.zeros(len(v), dtype=torch.long)
    diverged = torch.zeros(len(v), dtype=torch.bool, device=v.device)
    for step in range(1, attack.iterations + 1):
        first = problem.opt.step(problem.closure)
        problem.after_step()
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
        images=problem.images().detach().clone(),
        labels=problem.recovered().detach(),
        grad_loss=losses().cpu(),
        steps=steps,
        diverged=diverged.cpu(),
    )


ATTACKS: dict[str, Callable[..., AttackResult]] = {"dlg": dlg, "idlg": idlg, "ig": ig}
