"""The attack's full state at a step boundary, so that a stopped attack continues exactly.

A long attack (Inverting Gradients: 4,800 steps) on a preemptible node must survive being
stopped. After every ``Checkpoints.every``-th outer step the engine hands
``capture(problem, loop)`` to ``Checkpoints.save``; a run that finds a checkpoint builds
the same ``Problem`` from the same seed and ``restore``s it, then goes on from the next
step. The state is everything the remaining steps read:

- the ``(N, D)`` variables, and the loop's ``good`` copy, ``steps`` and ``diverged``;
- the optimiser's per-row state (``BatchedLBFGS``'s history ring and scalars, Adam's
  moments and step count) through ``state_dict()``, and the lr schedule's;
- the step, and the attack's random stream (``with_rng``): it is only drawn from when the
  problem is built today, but a resumed attack must not depend on that staying so.

Snapshots and history rows belong to the caller (``on_snapshot`` receives them); it adds
them to what it saves. Tensors stay where they are (a checkpoint of a GPU run holds
GPU tensors; loading maps them to the run's device).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from gradinv_exp import lazy

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from gradinv_exp.attacks.engine import Problem
else:
    torch = lazy.module("torch", __name__)  # loaded on first use (see lazy.py)

State = dict[str, Any]


@dataclass
class Loop:
    """The outer loop's own state after ``step`` steps (``engine.optimise``)."""

    step: int
    good: Tensor  # (N, D) the last variables whose loss was finite
    steps: Tensor  # (N,) steps taken per problem, on the device (a diverged one stops counting)
    diverged: Tensor  # (N,) bool


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


def capture(problem: Problem, loop: Loop) -> State:
    """The state of ``problem`` and its loop after ``loop.step`` steps (references to the
    live tensors: save it before the next step)."""
    return {
        "step": loop.step,
        "variables": problem.variables.detach(),
        "good": loop.good,
        "steps": loop.steps,
        "diverged": loop.diverged,
        "optimizer": problem.opt.state_dict(),
        "schedule": None if problem.schedule is None else problem.schedule.state_dict(),
    }


def restore(problem: Problem, state: State) -> Loop:
    """Put ``state`` (``capture`` of a problem built from the same config) into the freshly
    built ``problem``; return the loop's state to continue from."""
    v = problem.variables
    with torch.no_grad():
        v.copy_(state["variables"])
    problem.opt.load_state_dict(state["optimizer"])
    if problem.schedule is not None:
        problem.schedule.load_state_dict(state["schedule"])
    return Loop(
        step=state["step"],
        good=state["good"].to(v.device),
        steps=state["steps"].to(v.device),
        diverged=state["diverged"].to(v.device),
    )


def with_rng(checkpoints: Checkpoints, generator: torch.Generator) -> Checkpoints:
    """``checkpoints`` that also save ``generator``'s state, with ``generator`` set back to
    the saved state when continuing from one."""
    if checkpoints.start is not None:  # a CPU generator's state, wherever the run's tensors are
        generator.set_state(checkpoints.start["rng"].cpu())

    def save(state: State) -> None:
        checkpoints.save({**state, "rng": generator.get_state()})

    return replace(checkpoints, save=save)
