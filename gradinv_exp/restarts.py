"""Restarts: R independent starts per trial run as R*T problems, stacked restart-major
(problem ``r * T + t`` is restart r of trial t); per trial the lowest loss wins."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

OnSnapshot = Callable[[int, Tensor, Tensor], None]


def best_restart(losses: Tensor, restarts: int) -> Tensor:
    """Per trial, the restart ``(T,)`` with the lowest loss; ``losses`` is ``(R*T,)``."""
    return torch.nan_to_num(losses.view(restarts, -1), nan=math.inf).argmin(0)


def pick(values: Tensor, restart: Tensor) -> Tensor:
    """Rows ``(T, ...)`` of ``values`` ``(R*T, ...)`` at the given restart per trial."""
    stacked = values.view(len(values) // len(restart), len(restart), *values.shape[1:])
    return stacked[restart, torch.arange(len(restart))]


def best_of_restarts(restarts: int, on_snapshot: OnSnapshot) -> OnSnapshot:
    """Wrap ``on_snapshot`` so that it sees, per trial, only the currently best restart."""

    def report(step: int, losses: Tensor, images: Tensor) -> None:
        best = best_restart(losses, restarts)
        on_snapshot(step, pick(losses, best), pick(images, best))

    return report
