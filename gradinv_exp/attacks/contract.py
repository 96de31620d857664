"""The attacker contract: what the server observes, what an attack returns, and the one
registry of attacks.

Three objects are kept apart (the threat model of docs/attacks.md): the client's truth
(its images and labels), which only the client and the scorer see; ``Observed``, what the
server receives and what the threat model grants it; and ``server.Server``, what the
server controls (the model it sent, any modification it made). Every attack is one entry
of ``ATTACKS``::

    reconstruct(targets, context) -> [AttackResult, ...]

One call attacks one or more jobs: each ``Target`` is a job's ``Observed`` and ``Server``,
its attack config (the family's own schema), its random stream and where its progress
goes; ``context`` carries what the jobs share and nothing about any client: the compute
backend, the optimizer group's choice, where the checkpoints of the call go. The
optimisation engine (DLG, iDLG, IG ... as presets) is one family behind this contract and
attacks its targets as one problem set; a closed form or a malicious server's read-out is
another, registered the same way beside its code, and attacks its targets one by one
(``each``).

An attack's config selects its family by its schema: every schema derives from
``BaseAttackConfig`` and its ``family`` default names its entry (``name`` is the
preset's name, for tables).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from omegaconf import MISSING

from gradinv_exp.attacks.backend import Backend
from gradinv_exp.base import lazy
from gradinv_exp.base.options import Registry

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

    from gradinv_exp.attacks.checkpoint import State
    from gradinv_exp.attacks.optimizers import OptimizerConfig
    from gradinv_exp.client import ClientConfig
    from gradinv_exp.defenses import DefenseConfig
    from gradinv_exp.servers.registry import Server
else:
    torch = lazy.module("torch", __name__)  # loaded on first use (see base/lazy.py)

OnSnapshot = Callable[[int, "Tensor", "Tensor"], None]


@dataclass
class BaseAttackConfig:
    """Base of every attack schema. ``family`` selects the entry in ``ATTACKS`` (each schema
    fixes it as its default); ``name`` is the preset's name (``conf/attack/<name>.yaml``)."""

    name: str = MISSING
    family: str = MISSING


@dataclass(frozen=True)
class Observed:
    """What the server receives for T attacked updates, and what the threat model grants.

    ``update``: one ``(T, *param.shape)`` tensor per parameter of the model the server sent
    (``server.model.parameters()`` order): the defended update, summed over the ``clients``
    of a secure aggregation (divided by their number, which the server knows).
    ``protocol``: what the attacker takes each client to have done (the clients' own
    protocol, unless the threat model withholds their local hyperparameters).
    ``images``: images behind each update (clients x each client's batch).
    ``labels`` ``(T, images)``: the true labels, only where the threat model grants them.
    ``defense``: the defense and its parameters (Kerckhoffs: the protocol is public).
    """

    update: list[Tensor]
    protocol: ClientConfig
    images: int
    image_shape: tuple[int, int, int]  # (C, H, W), values in [0, 1]
    num_classes: int
    defense: DefenseConfig
    clients: int = 1
    labels: Tensor | None = None

    @property
    def trials(self) -> int:
        return len(self.update[0])

    @property
    def shape(self) -> tuple[int, ...]:
        """The reconstruction's shape ``(T, images, C, H, W)``."""
        return (self.trials, self.images, *self.image_shape)


@dataclass
class AttackResult:
    """What an attack returns for T observed updates (the reconstruction)."""

    images: Tensor  # (T, B, C, H, W): per trial, the last reconstruction with a finite loss
    labels: Tensor  # (T, B) recovered labels (-1: not recovered)
    grad_loss: Tensor  # (T,) objective at ``images`` (0 for a closed form)
    steps: Tensor  # (T,) optimiser steps taken
    diverged: Tensor  # (T,) bool: the loss became NaN/inf and the trial stopped there
    restart: Tensor  # (T,) index of the winning restart
    compiled: bool = False  # the closure ran compiled (False also after a failed compile)
    compile_s: float = 0.0  # seconds spent compiling it
    assumed: dict[str, Any] = field(default_factory=dict)  # what the attack assumed

    @classmethod
    def read_out(cls, images: Tensor, labels: Tensor, assumed: dict[str, Any]) -> AttackResult:
        """The result of an attack that reads its images off the update in closed form:
        no objective (0), no steps, nothing diverged."""
        trials = len(images)
        zeros = torch.zeros(trials, dtype=torch.long)
        return cls(
            images, labels, torch.zeros(trials), zeros, zeros.bool(), zeros, False, 0.0, assumed
        )


@dataclass(frozen=True)
class Target:
    """One job of an attack call: what its server observed and controls, its attack
    config, and the services that are its own (none tells it anything about the client)."""

    observed: Observed
    server: Server
    cfg: Any  # the job's attack config: its family's schema
    generator: torch.Generator  # the job's "attack" stream
    # (step, objective (T,), images (T, B, C, H, W)): the attack's progress, if it has
    # steps; a family that calls it never (a read-out) gets its result as the one snapshot
    on_snapshot: OnSnapshot


@dataclass(frozen=True)
class Context:
    """Services the jobs of an attack call share; none tells them anything about a client."""

    optimizer: OptimizerConfig | None = None  # the optimizer group's choice
    backend: Backend = Backend()
    save_state: Callable[[State], None] | None = None  # where a checkpoint's state goes
    saved_state: State | None = None  # a checkpoint's state to continue from


Reconstruct = Callable[[Sequence[Target], Context], "list[AttackResult]"]
# The run's whole config (``config.Config``, its groups as attributes), named by role only:
# config composes every family's schema, so the families sit below it and never import it.
RunConfig = Any
Check = Callable[["RunConfig", "nn.Module"], None]  # (the run's config, its model) -> raises


def each(fn: Callable[[Target, Context], AttackResult]) -> Reconstruct:
    """The ``reconstruct`` of a family that attacks every target on its own."""

    def reconstruct(targets: Sequence[Target], context: Context) -> list[AttackResult]:
        return [fn(target, context) for target in targets]

    reconstruct.__doc__ = fn.__doc__
    return reconstruct


@dataclass(frozen=True)
class Attack:
    """One family of attacks and every fact about it.

    ``reconstruct``: the attack. ``labels_granted(cfg)``: whether this configuration asks
    the threat model for the true labels. ``servers``: the ``server`` options it works
    with. ``closures(cfg, optimizer)``: objective evaluations it will make (0: none, a
    closed form), which picks the compute backend. ``batchable(cfg)``: whether jobs of
    this configuration gain from sharing one call (``hydra/launcher=batched``: jobs that
    differ in their defense, seed or data, as one problem set). ``apart``: the fields of
    its schema in which the jobs of one call may differ (the rest must be equal).
    ``steps(cfg)``: the outer steps it reports progress over (0: it reports none).
    ``restarts(cfg)``: independent starts per trial, solved in one batch with the trials.
    ``models_defense(cfg)``: whether it runs the known defense's model (adaptive).
    ``server_images(cfg)``: images of the server's own it needs (``Server.images``: a
    part of the data set disjoint from every client's; 0: none).
    ``rules(config)``: checks of the whole run's config (the ``Config``) that span
    groups, without torch. ``check(config, net)``: checks that need torch (the model it
    attacks), run by preflight before any job starts.
    """

    name: str
    schema: type[BaseAttackConfig]
    reconstruct: Reconstruct
    labels_granted: Callable[[Any], bool] = lambda cfg: False
    servers: tuple[str, ...] = ("honest",)
    closures: Callable[[Any, Any], int] = lambda cfg, optimizer: 0
    batchable: Callable[[Any], bool] = lambda cfg: False
    apart: tuple[str, ...] = ()
    steps: Callable[[Any], int] = lambda cfg: 0
    restarts: Callable[[Any], int] = lambda cfg: 1
    models_defense: Callable[[Any], bool] = lambda cfg: False
    server_images: Callable[[Any], int] = lambda cfg: 0
    rules: Callable[[RunConfig], None] | None = None
    check: Check | None = None


ATTACKS: Registry[Attack] = Registry("attack.family")


def family(schema: type[BaseAttackConfig], **facts: Any) -> Callable[[Reconstruct], Reconstruct]:
    """Register the decorated ``reconstruct`` as the attack family ``schema`` configures
    (its ``family`` default is the entry's name), with ``facts``: the other fields of
    ``Attack``."""
    name = schema.family
    if not isinstance(name, str) or name == MISSING:
        raise TypeError(f"{schema.__name__}.family needs the family's name as its default")

    def register(fn: Reconstruct) -> Reconstruct:
        ATTACKS.add(Attack(name, schema, fn, **facts))
        return fn

    return register
