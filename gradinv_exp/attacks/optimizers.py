"""The ``optimizer`` group: what steps the attack's ``(N, D)`` variables.

An optimiser here holds N independent problems, one per row: its state (L-BFGS history,
Adam moments, step sizes) is per row, so N attacks run in lockstep as one computation.
``first_order`` optimisers step along a (possibly signed) gradient with a learning rate
that a schedule may change: the attack's ``signed`` and ``lr_decay`` need one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from omegaconf import MISSING

from gradinv_exp.base import lazy
from gradinv_exp.base.options import Registry, option_name, require

if TYPE_CHECKING:
    import torch
    from torch import Tensor
else:
    torch = lazy.module("torch", __name__)  # loaded on first use (see base/lazy.py)


class Optimizer(Protocol):
    """``step(closure)`` with a closure that fills ``.grad`` of the ``(N, D)`` variables and
    returns the ``(N,)`` losses; per-problem state stays per row. ``state_dict()`` and
    ``load_state_dict()`` (as torch's optimisers) carry that state into a checkpoint, and
    into an optimiser of fewer rows when rows leave: every per-row tensor of the state
    has the rows as its first dimension (``engine.take_rows``)."""

    def step(self, closure: Callable[[], Tensor]) -> Tensor | None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class OptimizerConfig:
    name: str = MISSING
    lr: float = 1.0

    def __post_init__(self) -> None:
        # inf is allowed on purpose: the cheapest way to make an attack diverge in a test
        require(self.lr > 0, "optimizer.lr", self.lr, "must be > 0")


OptimizerFn = Callable[["Tensor", OptimizerConfig], Optimizer]


@dataclass(frozen=True)
class OptimizerOption:
    """``first_order``: steps along a gradient with a learning rate. ``evaluations(cfg)``:
    objective evaluations (closures) one step makes at most. ``stops``: a row that one
    step left where it was never moves again (its next steps see the same state: L-BFGS's
    tolerance exits), so the engine lets it leave the problem."""

    name: str
    fn: OptimizerFn
    schema: type[OptimizerConfig]
    first_order: bool
    evaluations: Callable[[Any], int] = lambda cfg: 1
    stops: bool = False


OPTIMIZERS: Registry[OptimizerOption] = Registry("optimizer")


def optimizer(
    schema: type[OptimizerConfig],
    *,
    first_order: bool,
    evaluations: Callable[[Any], int] = lambda cfg: 1,
    stops: bool = False,
) -> Callable[[OptimizerFn], OptimizerFn]:
    """Register the decorated factory ``(variables (N, D), cfg) -> Optimizer``."""

    def register(fn: OptimizerFn) -> OptimizerFn:
        name = option_name(schema)
        OPTIMIZERS.add(OptimizerOption(name, fn, schema, first_order, evaluations, stops))
        return fn

    return register


@dataclass
class LBFGSConfig(OptimizerConfig):
    """torch.optim.LBFGS defaults, as the seed uses them."""

    name: str = "lbfgs"
    lr: float = 1.0
    max_iter: int = 20  # closure evaluations per outer step at most
    history_size: int = 100
    tolerance_grad: float = 1e-7
    tolerance_change: float = 1e-9

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.max_iter >= 1, "optimizer.max_iter", self.max_iter, "must be >= 1")
        require(self.history_size >= 1, "optimizer.history_size", self.history_size, "must be >= 1")
        for key, tol in (
            ("optimizer.tolerance_grad", self.tolerance_grad),
            ("optimizer.tolerance_change", self.tolerance_change),
        ):
            require(math.isfinite(tol) and tol >= 0, key, tol, "must be a finite number >= 0")


# A row whose step did not move it: its gradient is below tolerance_grad, or its next
# direction is no descent direction, and nothing it reads changes while it stays put.
@optimizer(LBFGSConfig, first_order=False, evaluations=lambda cfg: cfg.max_iter, stops=True)
def lbfgs(variables: Tensor, cfg: LBFGSConfig) -> Optimizer:
    """N copies of ``torch.optim.LBFGS`` (no line search), batched: ``lbfgs.BatchedLBFGS``."""
    from gradinv_exp.attacks.lbfgs import BatchedLBFGS  # torch-heavy; not needed to check configs

    return BatchedLBFGS(
        variables,
        lr=cfg.lr,
        max_iter=cfg.max_iter,
        history_size=cfg.history_size,
        tolerance_grad=cfg.tolerance_grad,
        tolerance_change=cfg.tolerance_change,
    )


@dataclass
class AdamConfig(OptimizerConfig):
    name: str = "adam"
    lr: float = 0.1


@optimizer(AdamConfig, first_order=True)
def adam(variables: Tensor, cfg: AdamConfig) -> Optimizer:
    """``torch.optim.Adam`` on the ``(N, D)`` variables: Adam is elementwise, so this already
    is N independent Adams."""
    return torch.optim.Adam([variables], lr=cfg.lr)
