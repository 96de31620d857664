"""What Inverting Gradients does around each optimiser step: boxing after it and the
step-decay learning-rate schedule (signed gradients are applied in ``attacks.Problem``)."""

from __future__ import annotations

import torch
from torch import Tensor


def box_(x: Tensor) -> None:
    """Clamp images in place to the valid range [0, 1] (normalisation is in the model)."""
    with torch.no_grad():
        x.clamp_(0, 1)


def step_decay(opt: torch.optim.Optimizer, iterations: int) -> torch.optim.lr_scheduler.MultiStepLR:
    """Inverting Gradients' schedule: lr x0.1 at 3/8, 5/8 and 7/8 of ``iterations``."""
    milestones = [int(iterations * f) for f in (3 / 8, 5 / 8, 7 / 8)]
    return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=0.1)
