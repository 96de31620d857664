"""The one optimisation attack: recover images (and labels) from what clients shared.

DLG, iDLG, Inverting Gradients and GradInversion are presets of this engine
(``conf/attack/*.yaml``), in the way breaching keeps attack variants as configs over one
reconstructor. A preset chooses an objective (``objectives.OBJECTIVES``), priors with weights
(``objectives.PRIORS``), a label mode (``labels.LABELS``), the optimiser (the
``optimizer`` group), and the step rules ``signed`` (step on the sign of the image
gradient), ``boxed`` (clamp images to [0, 1] after each step), ``lr_decay`` (lr x0.1 at
3/8, 5/8, 7/8 of the iterations) and ``restarts``.

One call attacks J jobs (``Job``: a sweep's jobs that differ in their defense, their
attacker's knowledge of it, their seed, ...) as one problem set. State has a leading
problem axis N = restarts x jobs x trials, restart-major (row ``r * J*T + j * T + t`` is
restart r of trial t of job j): all problems run in lockstep as one batched computation
(the ``client.Simulator`` gives every problem its own simulated share, on its own job's
weights; the optimiser keeps per-row state), so N problems cost far less than N runs.
Every row has its own target, and an adaptive row its own job's defense model: rows are
grouped by defense model and each group's objective runs on its rows. Rows that can no
longer change (the optimiser's tolerance exits: ``OptimizerOption.stops``) or that
diverged leave the problem, which shrinks; a compiled objective takes any number of rows
(``backend.value_and_grad``), so the batch compiles once.

Per trial the restart with the lowest objective is reported, in the snapshots (at that
moment) and in the result (at the end). Progress goes to each job's
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
from typing import TYPE_CHECKING, Any

from gradinv_exp.attacks import checkpoint
from gradinv_exp.attacks.backend import Backend, ValueAndGrad, convolution, value_and_grad
from gradinv_exp.attacks.checkpoint import Checkpoints, Loop
from gradinv_exp.attacks.contract import (
    AttackResult,
    BaseAttackConfig,
    Context,
    RunConfig,
    Target,
    family,
)
from gradinv_exp.attacks.labels import LABELS, Evidence
from gradinv_exp.attacks.objectives import OBJECTIVES, PRIORS, Scene, check_model
from gradinv_exp.attacks.optimizers import OPTIMIZERS, OptimizerConfig
from gradinv_exp.base import lazy
from gradinv_exp.base.options import not_allowed, one_of, require

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

    from gradinv_exp.attacks.optimizers import Optimizer
    from gradinv_exp.client import Simulator
else:
    torch = lazy.module("torch", __name__)  # loaded on first use (see base/lazy.py)

log = logging.getLogger(__name__)

DefenseModel = Callable[[Sequence["Tensor"], Sequence["Tensor"]], "list[Tensor]"]
OnSnapshot = Callable[[int, "Tensor", "Tensor"], None]
Objective = Callable[[Sequence["Tensor"], Sequence["Tensor"]], "Tensor"]
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


@dataclass(frozen=True)
class Job:
    """One job's part of an ``attack`` call.

    ``shared``: its T observed updates, one ``(T, *param.shape)`` tensor per parameter of
    the simulated model. ``generator``: its own random stream (its dummy start and label
    draws, exactly as when it runs alone). ``on_snapshot``: where its progress goes.
    ``known_labels`` ``(T, B)``: the true labels, where its threat model grants them.
    ``defense_model``: the adaptive attacker's model of its defense (None: naive); jobs
    whose models are the same object share one objective group. ``params``: its model's
    weights, ``(T or 1, *param.shape)`` per parameter; None: the simulator's own.
    ``start`` ``(T, B, C, H, W)``: where its dummy images start (every restart); None: a
    draw from N(0, 1).
    """

    shared: Sequence[Tensor]
    generator: torch.Generator
    on_snapshot: OnSnapshot
    known_labels: Tensor | None = None
    defense_model: DefenseModel | None = None
    params: dict[str, Tensor] | None = None
    start: Tensor | None = None


@dataclass
class Rows:
    """What the objective reads per row of the problems still running: tensors indexed
    together when rows leave. ``goal``: each row's target update, one ``(n,
    *param.shape)`` tensor per parameter; ``params``: each row's model weights (None: the
    simulator's model's own); ``labels`` ``(n, B, K)``: fixed label distributions (None:
    optimised with the images); ``groups``: per defense group, its rows ``(m,)``."""

    goal: list[Tensor]
    params: dict[str, Tensor] | None
    labels: Tensor | None
    groups: list[Tensor]

    def take(self, keep: Tensor) -> Rows:
        """The rows ``keep`` ``(k,)`` (indices, increasing), renumbered 0..k-1."""
        position = torch.full((len(self.goal[0]),), -1, dtype=torch.long, device=keep.device)
        position[keep] = torch.arange(len(keep), device=keep.device)
        groups = [position[g][position[g] >= 0] for g in self.groups]
        return Rows(
            goal=[g[keep] for g in self.goal],
            params=None if self.params is None else {k: v[keep] for k, v in self.params.items()},
            labels=None if self.labels is None else self.labels[keep],
            groups=groups,
        )


Loss = Callable[["Tensor", Rows], "Tensor"]  # (variables (n, D), rows) -> (n,) objectives


@dataclass
class Problem:
    """N attacks as one computation, of which the ``rows`` ``(n,)`` still run: row i of
    ``variables`` holds problem ``rows[i]``'s unknowns, its dummy images ``(B, C, H, W)``
    flattened, then its label logits when they are optimised (``data.labels`` then holds
    None; else the fixed label distributions).

    Each step: ``opt`` steps all rows; ``signed`` replaces the images' gradient by its sign
    first; afterwards ``boxed`` clamps the images to [0, 1] and ``schedule`` advances.
    ``separable``: every term of the objective is a function of one row (a prior over a
    trial's restarts is not), so rows may leave (``keep``). ``stops``: the optimiser's
    idle rows are finished (its registry entry's ``stops``). An adaptive job whose
    defense model warms up (``defenses.AttackerModel.warmup``) matches its share naively
    for its first ``warmup`` steps and with its model after (``stage``: the objective of
    each step, ``restage`` builds it; the optimiser's state carries on).
    """

    variables: Tensor  # (n, D) leaf
    rows: Tensor  # (n,) which of the N problems each row is
    shape: tuple[int, ...]  # (N, B, C, H, W) of all problems
    num_classes: int
    data: Rows
    loss_of: Loss  # differentiable
    value_and_grad: ValueAndGrad  # (variables, rows) -> (n,) objectives, gradient (n, D)
    opt: Optimizer
    make_opt: Callable[[Tensor], Optimizer]
    schedule: torch.optim.lr_scheduler.LRScheduler | None = None
    make_schedule: Callable[[Optimizer], Any] | None = None
    boxed: bool = False
    signed: bool = False
    separable: bool = True
    stops: bool = False
    active: tuple[bool, ...] = ()  # per objective group: its defense model is in use
    warmups: tuple[int, ...] = ()  # per objective group: its naive steps (0: none)
    restage: Callable[[tuple[bool, ...]], tuple[Loss, ValueAndGrad]] | None = None

    def stage(self, step: int) -> None:
        """Use the objective of step ``step``: a group's model from step ``warmup + 1``
        on (a compiled objective compiles again when it changes)."""
        active = tuple(step > w for w in self.warmups)
        if active != self.active and self.restage is not None:
            self.loss_of, self.value_and_grad = self.restage(active)
            self.active = active

    @property
    def size(self) -> int:
        return math.prod(self.shape[1:])

    def images(self) -> Tensor:
        """The running rows' images ``(n, B, C, H, W)``."""
        return self.variables[:, : self.size].view(len(self.variables), *self.shape[1:])

    def loss(self, v: Tensor) -> Tensor:
        """The running rows' objectives ``(n,)`` at ``v`` ``(n, D)``."""
        return self.loss_of(v, self.data)

    def recovered(self, v: Tensor, rows: Rows) -> Tensor:
        """Recovered labels ``(n, B)`` of the rows ``rows`` at ``v`` ``(n, D)``."""
        if rows.labels is not None:
            return rows.labels.argmax(-1)
        return v[:, self.size :].view(len(v), self.shape[1], self.num_classes).argmax(-1)

    def closure(self) -> Tensor:
        losses, grad = self.value_and_grad(self.variables, self.data)
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

    def keep(self, keep: Tensor) -> Problem:
        """This problem with only the rows ``keep`` ``(k,)`` (indices into ``rows``,
        increasing): their variables, their optimiser state (each per-row tensor of its
        state dict indexed; ``optimizers.Optimizer``), the lr schedule as it was."""
        variables = self.variables.detach()[keep].clone().requires_grad_(True)
        opt = self.make_opt(variables)
        opt.load_state_dict(take_rows(self.opt.state_dict(), keep, len(self.variables)))
        schedule = None
        if self.schedule is not None and self.make_schedule is not None:
            schedule = self.make_schedule(opt)
            schedule.load_state_dict(self.schedule.state_dict())
        return dataclasses.replace(
            self,
            variables=variables,
            rows=self.rows[keep],
            data=self.data.take(keep),
            opt=opt,
            schedule=schedule,
        )


def take_rows(state: Any, keep: Tensor, rows: int) -> Any:
    """``state`` (an optimiser's state dict: nested dicts, lists, tensors, numbers) with
    every tensor whose leading dimension is ``rows`` indexed by ``keep``; the rest as is.
    Per-row state (L-BFGS's history, Adam's moments) has the rows first; shared state
    (Adam's step count, settings) has no such dimension."""
    if isinstance(state, dict):
        return {k: take_rows(v, keep, rows) for k, v in state.items()}
    if isinstance(state, list):
        return [take_rows(v, keep, rows) for v in state]
    if isinstance(state, torch.Tensor) and state.dim() > 0 and len(state) == rows:
        return state[keep.to(state.device)].clone()
    return state


def step_decay(opt: torch.optim.Optimizer, iterations: int) -> torch.optim.lr_scheduler.MultiStepLR:
    """Inverting Gradients' schedule: lr x0.1 at 3/8, 5/8 and 7/8 of ``iterations``."""
    milestones = [int(iterations * f) for f in (3 / 8, 5 / 8, 7 / 8)]
    return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=0.1)


def attack(
    simulator: Simulator,
    jobs: Sequence[Job],
    *,
    shape: tuple[int, ...],
    num_classes: int,
    cfg: AttackConfig,
    optimizer: OptimizerConfig,
    backend: Backend = EAGER,
    checkpoints: Checkpoints | None = None,
) -> list[AttackResult]:
    """Attack every job's T shares as ``cfg`` says; images of shape ``shape`` = (T, B, C,
    H, W) per job. Returns one ``AttackResult`` ``(T, ...)`` per job, as it would be alone.

    Per job, in order: dummy images start from N(0, 1) drawn from its generator (or,
    every restart, from its ``start``: another attack's images to refine), then the
    label mode draws (or reads) its labels; ``known_labels`` are only used by
    ``labels=given``. ``backend`` says how the objective and its gradient run
    (``backend.py``); ``checkpoints``: where to save the state of all rows, and a state to
    continue from (the problem is built as always, then that state replaces its start).
    An adaptive job's ``defense_model`` maps the dummy's gradient and the share to the
    dummy's gradient as the defense would have shared it; its objective compares that
    with the share (after ``int(iterations * defense_model.warmup)`` naive steps, when it
    has a warm-up).
    """
    device = jobs[0].shared[0].device
    backend = eager_if_needed(backend, cfg)
    trials, restarts, count = shape[0], cfg.restarts, len(jobs)
    mode = LABELS[cfg.labels]
    x0s, y0s = [], []
    for job in jobs:
        if job.start is None:
            x0s.append(torch.randn((restarts * trials, *shape[1:]), generator=job.generator))
        else:
            x0s.append(job.start.cpu().repeat(restarts, *[1] * (job.start.dim() - 1)))
        evidence = Evidence(
            simulator.model, simulator.as_gradient(list(job.shared)), shape[1], num_classes,
            job.known_labels, job.generator, shape[2:],
        )  # fmt: skip
        y0s.append(mode.start(evidence, restarts))

    def rows(parts: list[Tensor]) -> Tensor:  # J x (R*T, ...) -> (R*J*T, ...), restart-major
        stacked = torch.stack([p.view(restarts, trials, *p.shape[1:]) for p in parts], 1)
        return stacked.reshape(restarts * count * trials, *parts[0].shape[1:]).to(device)

    shared = [torch.cat(p) for p in zip(*(job.shared for job in jobs))]  # (J*T, ...)
    joint = dataclasses.replace(simulator, params=joint_params(simulator, jobs, trials))
    timings: dict[str, float] = {}
    problem = build_problem(
        joint, shared, rows(x0s), rows(y0s), cfg, optimizer, optimised=mode.optimised,
        compiled=backend.compile, timings=timings,
        models=[job.defense_model for job in jobs for _ in range(trials)],
    )  # fmt: skip
    if checkpoints is not None:
        checkpoints = checkpoint.with_rng(checkpoints, [job.generator for job in jobs])

    def report(step: int, losses: Tensor, images: Tensor) -> None:
        for j, job in enumerate(jobs):
            part = slice(j * trials, (j + 1) * trials)
            job.on_snapshot(step, losses[part], images[part])

    with convolution(backend.conv):
        result = optimise(problem, cfg, best_of_restarts(restarts, report), checkpoints)
    best = select(result, best_restart(result.grad_loss, restarts))
    compiled = backend.compile and not timings.get("compile_failed")
    out = []
    for j in range(count):
        part = slice(j * trials, (j + 1) * trials)
        out.append(
            AttackResult(
                images=best.images[part],
                labels=best.labels[part],
                grad_loss=best.grad_loss[part],
                steps=best.steps[part],
                diverged=best.diverged[part],
                restart=best.restart[part],
                compiled=compiled,
                compile_s=timings.get("compile_s", 0.0),
            )
        )
    return out


def joint_params(simulator: Simulator, jobs: Sequence[Job], trials: int) -> Any:
    """The weights every job's trials attack: the simulator's own (its model's, or its
    ``params``) when no job brings its own; else one set per (job, trial), ``(J*T,
    *param.shape)`` per parameter, job-major."""
    if all(job.params is None for job in jobs):
        return simulator.params
    own = simulator.params or {k: v.detach()[None] for k, v in simulator.model.named_parameters()}
    per_job = [own if job.params is None else job.params for job in jobs]
    return {k: torch.cat([p[k].expand(trials, *p[k].shape[1:]) for p in per_job]) for k in own}


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
    batchable=lambda cfg: True,
    apart=("adaptive",),  # each job's own defense model runs on its own rows
    steps=lambda cfg: cfg.iterations,
    restarts=lambda cfg: cfg.restarts,
    models_defense=lambda cfg: cfg.adaptive,
    rules=lambda run: check_optimizer(run.attack, run.optimizer),
    check=lambda cfg, net: _check(cfg, net),
)
def reconstruct(targets: Sequence[Target], context: Context) -> list[AttackResult]:
    """The optimisation family behind the attacker contract: simulate the clients on the
    model each target's server sent (``client.Simulator``, the protocol its observation
    says the clients follow) and run ``attack`` on every target's observed update as one
    problem set; an adaptive target runs the known defense's model (its registry entry's
    ``model``) on its dummy's update. Targets share the architecture, the protocol, the
    shapes and the attack's settings but ``adaptive``."""
    from gradinv_exp import client, defenses

    assert context.optimizer is not None, "the optimisation family needs the optimizer group"
    first = targets[0]
    cfg = dataclasses.replace(first.cfg, adaptive=False)
    assert all(dataclasses.replace(t.cfg, adaptive=False) == cfg for t in targets)
    simulator = client.Simulator(
        first.server.model, first.observed.protocol, first.server.params,
        clients=first.observed.clients,
    )  # fmt: skip
    models: dict[str, DefenseModel] = {}  # one model (and objective group) per defense
    jobs = []
    for t in targets:
        model = None
        if t.cfg.adaptive:
            key = repr(t.observed.defense)
            model = models.setdefault(key, defenses.attacker_model(t.observed.defense))
        jobs.append(
            Job(
                t.observed.update, t.generator, t.on_snapshot, t.observed.labels, model,
                None if t.server is first.server else own_weights(t.server, first.server),
            )
        )  # fmt: skip
    return attack(
        simulator,
        jobs,
        shape=first.observed.shape,
        num_classes=first.observed.num_classes,
        cfg=cfg,
        optimizer=context.optimizer,
        backend=context.backend,
        checkpoints=None
        if context.save_state is None
        else Checkpoints(cfg.checkpoint_every, context.save_state, context.saved_state),
    )


def own_weights(server: Any, reference: Any) -> dict[str, Tensor] | None:
    """``server``'s weights as a job's ``params``: None when they are ``reference``'s
    (the same values: jobs of one seed), else its per-trial ``params`` or its model's."""
    if server.params is not None:
        same = reference.params is not None and all(
            torch.equal(server.params[k], reference.params[k]) for k in server.params
        )
        return None if same else server.params
    mine = dict(server.model.named_parameters())
    theirs = dict(reference.model.named_parameters())
    if reference.params is None and all(torch.equal(mine[k], theirs[k]) for k in mine):
        return None
    return {k: v.detach()[None] for k, v in mine.items()}


def _check(cfg: RunConfig, net: nn.Module) -> None:
    """Preflight: the user's objective and priors once on a probe client of the run's
    model, and, on a model that is not built in, that the engine can attack it
    (``attackable``). Imports torch's side on first use: the config checks that import
    this module load no torch."""
    from gradinv_exp import client
    from gradinv_exp.attacks import objectives
    from gradinv_exp.models import MODELS

    ds = cfg.dataset
    shape = (ds.channels, ds.image_size, ds.image_size)
    probe = client.probe(net, ds.batch_size, shape, ds.num_classes)
    grads = [g.detach() for g in client.gradient(probe)]
    objectives.check(cfg.attack.objective, cfg.attack.priors, grads, probe.images)
    if MODELS[cfg.model.name].load is not None:
        attackable(cfg, net, probe.images, probe.targets)
    check_model(cfg.attack.priors, net, cfg.model.name)


def attackable(cfg: RunConfig, net: nn.Module, images: Tensor, onehot: Tensor) -> None:
    """The attack needs of a model: with ``attack.labels=idlg`` a last ``nn.Linear`` layer
    (label recovery reads its weight gradient), and a simulated client gradient that is
    differentiable in the dummy images, as the attacker's ``client.Simulator`` computes it
    for the run's client protocol and number of problems (one, or several under vmap)."""
    from gradinv_exp import client
    from gradinv_exp.attacks.labels import last_linear_weight

    key, target = "model.target", cfg.model.target
    if LABELS[cfg.attack.labels].reads_last_linear:
        try:
            last_linear_weight(net)
        except ValueError:
            why = (
                f"attack.labels={cfg.attack.labels} reads the gradient of its last "
                "nn.Linear, and it has none"
            )
            raise not_allowed(key, target, why) from None
    problems = 2 if cfg.trials * cfg.attack.restarts > 1 else 1
    dummy = images.expand(problems, *images.shape).clone().requires_grad_(True)
    try:
        simulate = client.Simulator(net, client.CLIENTS[cfg.client.name].assumed(cfg.client))
        grads = simulate(dummy, onehot.expand(problems, *onehot.shape))
        (slope,) = torch.autograd.grad(sum((g**2).sum() for g in grads), dummy)
    except Exception as err:
        text = " ".join(str(err).split())
        why = f"the attack cannot differentiate its gradient ({type(err).__name__}: {text})"
        raise not_allowed(key, target, why) from err
    if not bool(torch.isfinite(slope).all()):
        raise not_allowed(key, target, "the attack's derivative through it is not finite")


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
    models: Sequence[DefenseModel | None] | None = None,
) -> Problem:
    """One batched ``Problem`` for the rows of ``x0`` ``(N, B, C, H, W)``; row n attacks
    ``shared[n % K]`` (K = ``len(shared[0])``) on the weights ``simulator.params[n % P]``
    (or the simulator's model's). ``y0`` ``(N, B, num_classes)``: label logits when
    ``optimised``, else fixed label distributions. ``models`` (K entries): the defense
    model each target's objective runs the dummy's update through (None: naive).
    ``compiled``: the objective and its gradient run through torch.compile (compile time
    into ``timings``)."""
    if compiled:  # torch.func transforms need the simulation's functional path
        simulator = dataclasses.replace(simulator, functional=True)
    count, targets = len(x0), len(shared[0])
    every = torch.arange(count, device=x0.device)
    params = None
    if simulator.params is not None:
        which = every % len(next(iter(simulator.params.values())))
        params = {k: v[which.to(v.device)] for k, v in simulator.params.items()}
    simulate = dataclasses.replace(simulator, params=None)
    naive = OBJECTIVES[cfg.objective].fn
    groups = objective_groups(naive, models or [None] * targets, count, cfg.iterations)
    data = Rows(
        goal=[g[(every % targets).to(g.device)] for g in shared],
        params=params,
        labels=None if optimised else y0,
        groups=[group.rows for group in groups],
    )
    scene = Scene(simulator.model, restarts=count // targets)
    priors = [(PRIORS[name], w) for name, w in cfg.priors.items() if w]
    separable = all(prior.rowwise for prior, _ in priors)
    batched = [(prior.batched(scene), w) for prior, w in priors]
    tail = tuple(x0.shape[1:])
    size = math.prod(tail)

    def loss_for(active: tuple[bool, ...]) -> Loss:
        objectives = [g.modelled if on else g.naive for g, on in zip(groups, active)]

        def loss(v: Tensor, rows: Rows) -> Tensor:
            x = v[:, :size].view(len(v), *tail)
            if rows.labels is None:
                labels = torch.softmax(v[:, size:].view(len(v), *y0.shape[1:]), -1)
            else:
                labels = rows.labels
            grads = simulate(x, labels, rows.params)
            if len(objectives) == 1:
                total = torch.func.vmap(objectives[0])(grads, rows.goal)
            else:
                total = v.new_zeros(len(v))
                for fn, members in zip(objectives, rows.groups):
                    if not len(members):  # every row of this defense has left
                        continue
                    part = torch.func.vmap(fn)(
                        [g[members] for g in grads], [g[members] for g in rows.goal]
                    )
                    total = total.index_copy(0, members, part)
            for prior, weight in batched:
                total = total + weight * prior(x)
            return total

        return loss

    timings = {} if timings is None else timings

    def restage(active: tuple[bool, ...]) -> tuple[Loss, ValueAndGrad]:
        loss = loss_for(active)
        return loss, value_and_grad(loss, compiled=compiled, timings=timings, rows=count)

    active = tuple(g.warmup == 0 for g in groups)
    loss, both = restage(active)

    variables = torch.cat([x0.flatten(1), y0.flatten(1)] if optimised else [x0.flatten(1)], 1)
    variables = variables.clone().requires_grad_(True)
    entry = OPTIMIZERS[optimizer.name]

    def make_opt(v: Tensor) -> Optimizer:
        return entry.fn(v, optimizer)

    def make_schedule(opt: Any) -> Any:
        return step_decay(opt, cfg.iterations)

    opt = make_opt(variables)
    return Problem(
        variables=variables,
        rows=every,
        shape=tuple(x0.shape),
        num_classes=y0.shape[-1],
        data=data,
        loss_of=loss,
        value_and_grad=both,
        opt=opt,
        make_opt=make_opt,
        schedule=make_schedule(opt) if cfg.lr_decay else None,
        make_schedule=make_schedule if cfg.lr_decay else None,
        boxed=cfg.boxed,
        signed=cfg.signed,
        separable=separable,
        stops=entry.stops,
        active=active,
        warmups=tuple(g.warmup for g in groups),
        restage=restage if any(g.warmup for g in groups) else None,
    )


@dataclass(frozen=True)
class Group:
    """The rows ``(m,)`` attacked through one defense model (or none): ``naive`` is the
    plain objective, ``modelled`` the adaptive one (``naive`` for the naive rows),
    used from step ``warmup + 1`` on."""

    naive: Objective
    modelled: Objective
    warmup: int
    rows: Tensor


def objective_groups(
    objective: Objective,
    models: Sequence[DefenseModel | None],
    count: int,
    iterations: int,
) -> list[Group]:
    """One ``Group`` per distinct defense model among the K targets' ``models`` (row n
    has target n % K): ``objective(model(grads, target), target)`` for an adaptive group,
    after ``int(iterations * model.warmup)`` naive steps."""
    every = torch.arange(count)
    out = []
    for model in {id(m): m for m in models}.values():
        mine = torch.tensor([m is model for m in models])
        rows = every[mine[every % len(models)]]
        if model is None:
            out.append(Group(objective, objective, 0, rows))
            continue
        warmup = int(iterations * getattr(model, "warmup", 0.0))
        out.append(Group(objective, adaptive_objective(objective, model), warmup, rows))
    return out


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
    """The outer loop: lockstep steps, snapshots, divergence, rows leaving, checkpoints.

    A NaN/inf loss stops that problem (status diverged) and keeps its last images whose
    loss was finite; the others go on. A row the optimiser cannot move any more (a step
    that left it where it was, for an optimiser that ``stops``: L-BFGS's tolerance exits
    make that a fixed point) is finished; finished and diverged rows leave the problem
    (``Problem.keep``), so they cost nothing more, and the loop ends when no row is left
    (a last snapshot shows the final state). A row's ``steps`` counts the steps that
    moved it. Between snapshots nothing is read back from an accelerator (every such
    read waits for the queued work): there rows leave at snapshot steps only. Continuing
    from a checkpoint at step k repeats no snapshot: the next is the first one after k.
    The result has one row per problem (``restart`` is all zeros: restarts are chosen by
    ``select``).
    """
    stops = problem.stops
    eager_reads = problem.variables.device.type == "cpu"
    if checkpoints is not None and checkpoints.start is not None:
        problem, loop = checkpoint.restore(problem, checkpoints.start)
    else:
        loop = Loop.start(problem)
    v = problem.variables

    def snapshot(step: int) -> None:
        with torch.no_grad():
            losses, images = loop.losses.clone(), loop.final.clone()
            if len(v):
                losses[problem.rows] = problem.loss(v).detach()
                images[problem.rows] = v.detach()
        on_snapshot(step, losses.cpu(), images[:, : problem.size].view(problem.shape))

    if loop.step == 0:
        snapshot(0)
    for step in range(loop.step + 1, cfg.iterations + 1):
        problem.stage(step)
        before = v.detach().clone() if stops else None
        first = problem.opt.step(problem.closure)
        with torch.no_grad():
            still = (v == before).all(1) if before is not None else None
        problem.after_step()
        with torch.no_grad():
            diverged = loop.diverged[problem.rows]
            diverged |= ~torch.isfinite(first) | ~torch.isfinite(v).all(1)
            v.copy_(torch.where(diverged[:, None], loop.good, v))  # back to the last finite point
            loop.good = v.detach().clone()
            loop.diverged[problem.rows] = diverged
            moved = ~diverged if still is None else ~diverged & ~still
            loop.steps[problem.rows] = torch.where(moved, step, loop.steps[problem.rows])
        loop.step = step
        due = step % cfg.snapshot_every == 0 or step == cfg.iterations
        if eager_reads or due:
            leaving = diverged if still is None else diverged | still
            everyone = bool(leaving.all())
            if everyone or (problem.separable and bool(leaving.any())):
                problem = leave(problem, loop, leaving)
                v = problem.variables
        if not len(v):
            snapshot(step)
            break
        if due:
            snapshot(step)
        if checkpoints is not None and checkpoints.due(step, cfg.iterations):
            checkpoints.save(checkpoint.capture(problem, loop))
    with torch.no_grad():
        if len(v):
            loop.losses[problem.rows] = problem.loss(v).detach()
            loop.final[problem.rows] = v.detach()
            loop.labels[problem.rows] = problem.recovered(v.detach(), problem.data)
    return AttackResult(
        images=loop.final[:, : problem.size].view(problem.shape).clone(),
        labels=loop.labels.clone(),
        grad_loss=loop.losses.cpu(),
        steps=loop.steps.cpu(),
        diverged=loop.diverged.cpu(),
        restart=torch.zeros(problem.shape[0], dtype=torch.long),
    )


def leave(problem: Problem, loop: Loop, leaving: Tensor) -> Problem:
    """Record the rows ``leaving`` ``(n,)`` bool (their final images, labels and loss)
    and return the problem without them (one with no variables when none is left)."""
    going = leaving.nonzero().squeeze(1)
    with torch.no_grad():
        gone, sub = problem.rows[going], problem.data.take(going)
        v = problem.variables.detach()[going]
        loop.final[gone] = v
        loop.labels[gone] = problem.recovered(v, sub)
        loop.losses[gone] = problem.loss_of(v, sub).to(loop.losses)
    if bool(leaving.all()):
        return dataclasses.replace(problem, variables=problem.variables[:0], rows=problem.rows[:0])
    keep = (~leaving).nonzero().squeeze(1)
    loop.good = loop.good[keep]
    return problem.keep(keep)
