"""The attack's full state at a step boundary, so that a stopped attack continues exactly.

A long attack (Inverting Gradients: 4,800 steps) on a preemptible node must survive being
stopped. After every ``Checkpoints.every``-th outer step the engine hands
``capture(problem, loop)`` to ``Checkpoints.save``; a run that finds a checkpoint builds
the same ``Problem`` from the same seed and ``restore``s it, then goes on from the next
step. The state is everything the remaining steps read:

- the variables of the rows still running and which rows those are, and the loop's
  ``good`` copy, ``steps``, ``diverged`` and the final state of the rows that left;
- the optimiser's per-row state (``BatchedLBFGS``'s history ring and scalars, Adam's
  moments and step count) through ``state_dict()``, and the lr schedule's;
- the step, and each job's random stream (``with_rng``): it is only drawn from when the
  problem is built today, but a resumed attack must not depend on that staying so.

Snapshots and history rows belong to the caller (``on_snapshot`` receives them); it adds
them to what it saves. Tensors stay where they are (a checkpoint of a GPU run holds
GPU tensors; loading maps them to the run's device).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from gradinv_exp.base import lazy

if TYPE_CHECKING:
    import torch
    from torch import Tensor
else:
    torch = lazy.module("torch", __name__)  # loaded on first use (see base/lazy.py)

State = dict[str, Any]


class Problem(Protocol):
    """What a checkpoint reads of the engine's ``Problem`` (``engine.Problem`` is one;
    named here by its shape, so that this module does not import the engine that uses
    it): the running rows ``(n,)`` of N problems, their variables ``(n, D)``, optimiser
    and schedule, and ``keep`` to drop rows."""

    variables: Tensor
    rows: Tensor
    shape: tuple[int, ...]
    opt: Any
    schedule: Any

    def keep(self: P, keep: Tensor) -> P: ...


P = TypeVar("P", bound=Problem)


@dataclass
class Loop:
    """The outer loop's own state after ``step`` steps (``engine.optimise``), for the N
    problems of which ``Problem.rows`` still run: ``good`` ``(n, D)``, the last finite
    variables of those; the rest ``(N, ...)``, on the device: ``steps`` the steps that
    moved each problem, ``diverged``, and for problems that left, their ``final``
    variables ``(N, D)``, ``labels`` ``(N, B)`` and ``losses`` ``(N,)`` (NaN while running)."""

    step: int
    good: Tensor
    steps: Tensor
    diverged: Tensor
    final: Tensor
    labels: Tensor
    losses: Tensor

    @classmethod
    def start(cls, problem: Problem) -> Loop:
        """Before the first step: every problem running, none moved."""
        v = problem.variables.detach()
        count, device = len(v), v.device
        return cls(
            step=0,
            good=v.clone(),
            steps=torch.zeros(count, dtype=torch.long, device=device),
            diverged=torch.zeros(count, dtype=torch.bool, device=device),
            final=v.clone(),
            labels=torch.zeros(count, problem.shape[1], dtype=torch.long, device=device),
            losses=torch.full((count,), math.nan, device=device),
        )


@dataclass(frozen=True)
class Checkpoints:
    """Where the engine's checkpoints go: ``save(state)`` after every ``every``-th step
    (0: never; not after the last step, the run's results follow then); ``start``, a
    saved state to continue from (None: start at step 0)."""

    every: int
    save: Callable[[State], None]
    start: State | None = None

    def due(self, step: int, iterations: int) -> bool:
        return self.every > 0 and step % self.every == 0 and step < iterations


LOOP = ("good", "steps", "diverged", "final", "labels", "losses")


def capture(problem: Problem, loop: Loop) -> State:
    """The state of ``problem`` and its loop after ``loop.step`` steps (references to the
    live tensors: save it before the next step)."""
    return {
        "step": loop.step,
        "rows": problem.rows,
        "variables": problem.variables.detach(),
        **{name: getattr(loop, name) for name in LOOP},
        "optimizer": problem.opt.state_dict(),
        "schedule": None if problem.schedule is None else problem.schedule.state_dict(),
    }


def restore(problem: P, state: State) -> tuple[P, Loop]:
    """Put ``state`` (``capture`` of a problem built from the same config) into the freshly
    built ``problem`` (without the rows that had left by then); return it and the loop's
    state to continue from."""
    device = problem.variables.device
    problem = problem.keep(state["rows"].to(device))
    with torch.no_grad():
        problem.variables.copy_(state["variables"])
    problem.opt.load_state_dict(state["optimizer"])
    if problem.schedule is not None:
        problem.schedule.load_state_dict(state["schedule"])
    return problem, Loop(step=state["step"], **{n: state[n].to(device) for n in LOOP})


def with_rng(checkpoints: Checkpoints, generators: Sequence[torch.Generator]) -> Checkpoints:
    """``checkpoints`` that also save the ``generators``' states (one per job), with each
    generator set back to its saved state when continuing from one."""
    if checkpoints.start is not None:  # a CPU generator's state, wherever the run's tensors are
        for generator, saved in zip(generators, checkpoints.start["rng"], strict=True):
            generator.set_state(saved.cpu())

    def save(state: State) -> None:
        checkpoints.save({**state, "rng": [g.get_state() for g in generators]})

    return replace(checkpoints, save=save)
