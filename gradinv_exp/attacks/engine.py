"""The one optimisation attack: recover images (and labels) from what a client shared.

DLG, iDLG, Inverting Gradients and GradInversion are presets of this engine
(``conf/attack/*.yaml``), in the way breaching keeps attack variants as configs over one
reconstructor. A preset chooses an objective (``objectives.OBJECTIVES``), priors with weights
(``objectives.PRIORS``), a label mode (``labels.LABELS``), the optimiser (the
``optimizer`` group), and the step rules ``signed`` (step on the sign of the image
gradient), ``boxed`` (clamp images to [0, 1] after each step), ``lr_decay`` (lr x0.1 at
3/8, 5/8, 7/8 of the iterations) and ``restarts``.

State has a leading problem axis N = restarts x trials, restart-major (row ``r * T + t``
is restart r of trial t): all problems run in lockstep as one batched computation
(the ``client.Simulator`` gives every problem its own simulated share; the optimiser
keeps per-row state), so snapshots line up and N problems cost far less than N runs. Per trial
the restart with the lowest objective is reported, in the snapshots (at that moment) and
in the result (at the end). Progress goes to
``on_snapshot(step, grad_loss (T,), images (T, B, C, H, W))`` at step 0 (the initial
dummy, before any update) and every ``snapshot_every`` steps. Every ``checkpoint_every``
steps the full state goes to ``checkpoints.save``, and an attack given a saved state
continues from it (``attacks/checkpoint.py``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gradinv_exp import lazy
from gradinv_exp.attacks import checkpoint
from gradinv_exp.attacks.backend import Backend, ValueAndGrad, convolution, value_and_grad
from gradinv_exp.attacks.checkpoint import Checkpoints, Loop
from gradinv_exp.attacks.contract import AttackResult, BaseAttackConfig, Context, Observed, family
from gradinv_exp.attacks.labels import LABELS, Evidence
from gradinv_exp.attacks.objectives import OBJECTIVES, PRIORS, Scene, check_model
from gradinv_exp.attacks.optimizers import OPTIMIZERS, OptimizerConfig
from gradinv_exp.options import one_of, require

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

    from gradinv_exp.attacks.optimizers import Optimizer
    from gradinv_exp.client import Simulator
    from gradinv_exp.config import Config
    from gradinv_exp.server import Server
else:
    torch = lazy.module("torch", __name__)  # loaded on first use (see lazy.py)

log = logging.getLogger(__name__)

DefenseModel = Callable[[Sequence["Tensor"], Sequence["Tensor"]], "list[Tensor]"]
OnSnapshot = Callable[[int, "Tensor", "Tensor"], None]
EAGER = Backend()


@dataclass
class AttackConfig(BaseAttackConfig):
    """The optimisation family: a preset in ``conf/attack/`` sets these; every field can be
    overridden."""

    family: str = "optimization"
    objective: str = "l2"  # a name in objectives.OBJECTIVES, or module:function (yours)
    priors: dict[str, float] = field(default_factory=dict)  # prior (or module.function) -> weight
    # joint: optimised; given: the true ones; idlg, yin, llg: read from the gradient
    labels: str = "joint"
    restarts: int = 1  # independent starts per trial; the lowest final objective wins
    # run the known defense's differentiable model (its registry entry's ``model``) on
    # the dummy's gradient before matching (docs/adaptive_attacks.md)
    adaptive: bool = False
    signed: bool = False  # step on the sign of the image gradient (first-order optimisers)
    boxed: bool = False  # clamp the dummy to [0, 1] after every step
    lr_decay: bool = False  # lr x0.1 at 3/8, 5/8, 7/8 of iterations (first-order optimisers)
    iterations: int = 300  # outer optimiser steps
    snapshot_every: int = 10  # history row and progress image every N steps (and step 0)
    # full state to the run folder every N steps (0: never), for resuming; see README
    checkpoint_every: int = 100

    def __post_init__(self) -> None:
        OBJECTIVES.check_name("attack.objective", self.objective)  # or module:function
        for prior, weight in self.priors.items():
            PRIORS.check_name("attack.priors", prior)
            require(
                math.isfinite(weight) and weight >= 0,
                f"attack.priors.{prior}",
                weight,
                "must be a finite weight >= 0",
            )
        one_of("attack.labels", self.labels, LABELS.names())
        require(self.restarts >= 1, "attack.restarts", self.restarts, "must be >= 1")
        require(self.iterations >= 1, "attack.iterations", self.iterations, "must be >= 1")
        require(
            self.snapshot_every >= 1, "attack.snapshot_every", self.snapshot_every, "must be >= 1"
        )
        require(
            self.checkpoint_every >= 0,
            "attack.checkpoint_every",
            self.checkpoint_every,
            "must be >= 0 (0 = no checkpoints)",
        )


def check_optimizer(attack: AttackConfig, optimizer: OptimizerConfig) -> None:
    """``signed`` and ``lr_decay`` need a first-order optimiser (a gradient step with a
    learning rate); L-BFGS builds its own steps from curvature."""
    if OPTIMIZERS[optimizer.name].first_order:
        return
    rules = [f"attack.{k}=true" for k in ("signed", "lr_decay") if getattr(attack, k)]
    firsts = "|".join(o.name for o in OPTIMIZERS if o.first_order)
    require(
        not rules,
        "optimizer",
        optimizer.name,
        f"attack={attack.name} sets {' and '.join(rules)}, which needs optimizer={firsts}",
    )


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
    value_and_grad: ValueAndGrad  # variables -> (N,) objectives and their gradient (N, D)
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
        losses, grad = self.value_and_grad(self.variables)
        if self.signed:
            grad[:, : self.size].sign_()
        self.variables.grad = grad
        return losses

    def after_step(self) -> None:
        if self.boxed:
            with torch.no_grad():
                self.images().clamp_(0, 1)
        if self.schedule is not None:
            self.schedule.step()


def step_decay(opt: torch.optim.Optimizer, iterations: int) -> torch.optim.lr_scheduler.MultiStepLR:
    """Inverting Gradients' schedule: lr x0.1 at 3/8, 5/8 and 7/8 of ``iterations``."""
    milestones = [int(iterations * f) for f in (3 / 8, 5 / 8, 7 / 8)]
    return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=0.1)


def attack(
    simulator: Simulator,
    shared: Sequence[Tensor],
    *,
    shape: tuple[int, ...],
    num_classes: int,
    cfg: AttackConfig,
    optimizer: OptimizerConfig,
    generator: torch.Generator,
    on_snapshot: OnSnapshot,
    known_labels: Tensor | None = None,
    backend: Backend = EAGER,
    checkpoints: Checkpoints | None = None,
    defense_model: DefenseModel | None = None,
    start: Tensor | None = None,
) -> AttackResult:
    """Attack the T shares ``shared`` (one ``(T, *param.shape)`` tensor per parameter of
    the simulated model) as ``cfg`` says; images of shape ``shape`` = (T, B, C, H, W).

    Dummy images start from N(0, 1) drawn from ``generator`` (or, every restart, from
    ``start`` ``(T, B, C, H, W)``: another attack's images to refine), then the label
    mode draws (or reads) its labels; ``known_labels`` ``(T, B)`` are only used by
    ``labels=given``.
    ``backend`` says how the objective and its gradient run (``backend.py``);
    ``checkpoints``: where to save the state, and a state to continue from (the problem
    is built as always, then that state replaces its start). ``defense_model``
    (adaptive attacker): maps the dummy's gradient and the share to the dummy's gradient
    as the defense would have shared it; the objective compares that with the share.
    """
    device = shared[0].device
    backend = eager_if_needed(backend, cfg)
    trials, restarts = shape[0], cfg.restarts
    if start is None:
        x0 = torch.randn((restarts * trials, *shape[1:]), generator=generator).to(device)
    else:
        x0 = start.to(device).repeat(restarts, *[1] * (start.dim() - 1))
    mode = LABELS[cfg.labels]
    gradient = simulator.as_gradient(list(shared))
    evidence = Evidence(
        simulator.model, gradient, shape[1], num_classes, known_labels, generator, shape[2:]
    )
    y0 = mode.start(evidence, restarts).to(device)
    timings: dict[str, float] = {}
    problem = build_problem(
        simulator, shared, x0, y0, cfg, optimizer, optimised=mode.optimised,
        compiled=backend.compile, timings=timings, defense_model=defense_model,
    )  # fmt: skip
    if checkpoints is not None:
        checkpoints = checkpoint.with_rng(checkpoints, generator)
    with convolution(backend.conv):
        result = optimise(problem, cfg, best_of_restarts(restarts, on_snapshot), checkpoints)
    return dataclasses.replace(
        select(result, best_restart(result.grad_loss, restarts)),
        compiled=backend.compile and not timings.get("compile_failed"),
        compile_s=timings.get("compile_s", 0.0),
    )


def eager_if_needed(backend: Backend, cfg: AttackConfig) -> Backend:
    """``backend`` without torch.compile when a prior in use cannot be compiled (``bn``:
    forward hooks); one INFO line says so."""
    eager = [n for n, w in cfg.priors.items() if w and not PRIORS[n].compiles]
    if backend.compile and eager:
        log.info("compile: off (attack.priors.%s runs eager)", eager[0])
        return dataclasses.replace(backend, compile=False)
    return backend


@family(
    AttackConfig,
    labels_granted=lambda cfg: LABELS[cfg.labels].granted,
    closures=lambda cfg, opt: cfg.iterations * OPTIMIZERS[opt.name].evaluations(opt),
    batchable=lambda cfg: not cfg.adaptive,  # the adaptive model is each job's own defense
    steps=lambda cfg: cfg.iterations,
    restarts=lambda cfg: cfg.restarts,
    models_defense=lambda cfg: cfg.adaptive,
    rules=lambda run: check_optimizer(run.attack, run.optimizer),
    check=lambda cfg, net: _check(cfg, net),
)
def reconstruct(
    observed: Observed, server: Server, cfg: AttackConfig, context: Context
) -> AttackResult:
    """The optimisation family behind the attacker contract: simulate the clients on the
    model the server sent (``client.Simulator``, the protocol ``observed`` says the clients
    follow) and run ``attack`` on the observed update; an adaptive attacker runs the known
    defense's model (its registry entry's ``model``) on its dummy's update."""
    from gradinv_exp import client, defenses

    assert context.optimizer is not None, "the optimisation family needs the optimizer group"
    simulator = client.Simulator(
        server.model, observed.protocol, server.params, clients=observed.clients
    )
    return attack(
        simulator,
        observed.update,
        shape=observed.shape,
        num_classes=observed.num_classes,
        cfg=cfg,
        optimizer=context.optimizer,
        generator=context.generator,
        on_snapshot=context.on_snapshot,
        known_labels=observed.labels,
        backend=context.backend,
        checkpoints=None
        if context.save_state is None
        else Checkpoints(cfg.checkpoint_every, context.save_state, context.saved_state),
        defense_model=defenses.attacker_model(observed.defense) if cfg.adaptive else None,
    )


def _check(cfg: Config, net: nn.Module) -> None:
    """Preflight: the user's objective and priors on a probe, and that the engine can
    attack the run's model (``plugins.attackable``); imported here, on first use, because
    the config checks that import this module load no torch."""
    from gradinv_exp import plugins

    plugins.check_attack(cfg, net)
    check_model(cfg.attack.priors, net, cfg.model.name)


def build_problem(
    simulator: Simulator,
    shared: Sequence[Tensor],
    x0: Tensor,
    y0: Tensor,
    cfg: AttackConfig,
    optimizer: OptimizerConfig,
    *,
    optimised: bool,
    compiled: bool = False,
    timings: dict[str, float] | None = None,
    defense_model: DefenseModel | None = None,
) -> Problem:
    """One batched ``Problem`` for the rows of ``x0`` ``(N, B, C, H, W)``; row n attacks
    ``shared[n % T]``. ``y0`` ``(N, B, num_classes)``: label logits when ``optimised``, else
    fixed label distributions. ``compiled``: the objective and its gradient run through
    torch.compile (compile time into ``timings``)."""
    if compiled:  # torch.func transforms need the simulation's functional path
        simulator = dataclasses.replace(simulator, functional=True)
    shape = tuple(x0.shape)
    goal = [g.repeat(len(x0) // len(g), *[1] * (g.dim() - 1)) for g in shared]
    parts = [x0.flatten(1), y0.flatten(1)] if optimised else [x0.flatten(1)]
    variables = torch.cat(parts, 1).clone().requires_grad_(True)
    objective = OBJECTIVES[cfg.objective].fn
    if defense_model is not None:
        objective = adaptive_objective(objective, defense_model)
    scene = Scene(simulator.model, restarts=len(x0) // len(shared[0]))
    priors = [(PRIORS[name].batched(scene), w) for name, w in cfg.priors.items() if w]
    size = math.prod(shape[1:])

    def loss(v: Tensor) -> Tensor:
        x = v[:, :size].view(shape)
        labels = torch.softmax(v[:, size:].view(y0.shape), -1) if optimised else y0
        total = torch.func.vmap(objective)(simulator(x, labels), goal)
        for prior, weight in priors:
            total = total + weight * prior(x)
        return total

    opt = OPTIMIZERS[optimizer.name].fn(variables, optimizer)
    schedule = step_decay(opt, cfg.iterations) if cfg.lr_decay else None  # type: ignore[arg-type]
    fixed = None if optimised else y0
    both = value_and_grad(loss, compiled=compiled, timings={} if timings is None else timings)
    return Problem(
        variables, shape, y0.shape[-1], fixed, loss, both, opt, schedule, cfg.boxed, cfg.signed
    )


def adaptive_objective(objective: Callable, model: DefenseModel) -> Callable:
    """``objective(model(grads, target), target)``: the adaptive attacker's objective for
    one problem (vmapped like the objective itself)."""

    def matched(grads: Sequence[Tensor], target: Sequence[Tensor]) -> Tensor:
        return objective(model(grads, target), target)

    return matched


def best_restart(losses: Tensor, restarts: int) -> Tensor:
    """Per trial, the restart ``(T,)`` with the lowest loss; ``losses`` is ``(R*T,)``."""
    return torch.nan_to_num(losses.view(restarts, -1), nan=math.inf).argmin(0)


def pick(values: Tensor, restart: Tensor) -> Tensor:
    """Rows ``(T, ...)`` of ``values`` ``(R*T, ...)`` at the given restart per trial."""
    stacked = values.view(len(values) // len(restart), len(restart), *values.shape[1:])
    return stacked[restart.to(values.device), torch.arange(len(restart), device=values.device)]


def best_of_restarts(restarts: int, on_snapshot: OnSnapshot) -> OnSnapshot:
    """Wrap ``on_snapshot`` so that it sees, per trial, only the currently best restart."""

    def report(step: int, losses: Tensor, images: Tensor) -> None:
        best = best_restart(losses, restarts)
        on_snapshot(step, pick(losses, best), pick(images, best))

    return report


def select(result: AttackResult, restart: Tensor) -> AttackResult:
    """The ``(T, ...)`` result of the chosen restart per trial from an ``(R*T, ...)`` one."""
    return AttackResult(
        images=pick(result.images, restart),
        labels=pick(result.labels, restart),
        grad_loss=pick(result.grad_loss, restart),
        steps=pick(result.steps, restart),
        diverged=pick(result.diverged, restart),
        restart=restart,
    )


def optimise(
    problem: Problem,
    cfg: AttackConfig,
    on_snapshot: OnSnapshot,
    checkpoints: Checkpoints | None = None,
) -> AttackResult:
    """The outer loop: lockstep steps, snapshots, divergence, checkpoints.

    A NaN/inf loss stops that problem (status diverged) and keeps its last images whose
    loss was finite; the others go on. The result has one row per problem (``restart``
    is all zeros: restarts are chosen by ``select``). Between snapshots nothing is read
    back from the device (on a GPU every such read waits for the queued work): whether
    every problem has diverged is checked at snapshot steps. Continuing from a checkpoint
    at step k repeats no snapshot: the next is the first one after k.
    """
    v = problem.variables

    def losses() -> Tensor:
        with torch.no_grad():
            return problem.loss(v).detach()

    def snapshot(step: int) -> None:
        on_snapshot(step, losses().cpu(), problem.images().detach())

    if checkpoints is not None and checkpoints.start is not None:
        start = checkpoint.restore(problem, checkpoints.start)
    else:
        snapshot(0)
        start = Loop(
            step=0,
            good=v.detach().clone(),
            steps=torch.zeros(len(v), dtype=torch.long, device=v.device),
            diverged=torch.zeros(len(v), dtype=torch.bool, device=v.device),
        )
    good, steps, diverged = start.good, start.steps, start.diverged
    for step in range(start.step + 1, cfg.iterations + 1):
        first = problem.opt.step(problem.closure)
        problem.after_step()
        with torch.no_grad():
            diverged |= ~torch.isfinite(first) | ~torch.isfinite(v).all(1)
            v.copy_(torch.where(diverged[:, None], good, v))  # back to the last finite point
            good = v.detach().clone()
            steps = torch.where(diverged, steps, step)
        if step % cfg.snapshot_every == 0 or step == cfg.iterations:
            if bool(diverged.all()):
                snapshot(int(steps.max()))
                break
            snapshot(step)
        if checkpoints is not None and checkpoints.due(step, cfg.iterations):
            checkpoints.save(checkpoint.capture(problem, Loop(step, good, steps, diverged)))
    return AttackResult(
        images=problem.images().detach().clone(),
        labels=problem.recovered().detach(),
        grad_loss=losses().cpu(),
        steps=steps.cpu(),
        diverged=diverged.cpu(),
        restart=torch.zeros(len(v), dtype=torch.long),
    )
