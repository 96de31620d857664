"""Gradient-matching objectives and image priors: pure functions of tensors.

An objective compares the dummy's parameter gradients ``grads`` with the shared ones
``target`` (two equally long lists of tensors, one per parameter, any shapes) and returns a
scalar. Priors take images ``(B, C, H, W)`` and return a scalar.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

Objective = Callable[[Sequence[Tensor], Sequence[Tensor]], Tensor]


def l2_distance(grads: Sequence[Tensor], target: Sequence[Tensor]) -> Tensor:
    """DLG's objective: sum over layers of the squared L2 distance, in [0, inf).

    ``mse_loss`` fuses difference and square (forward and backward): vmapped over 16
    trials it measured 22 vs 35 ms per closure against ``((g - t) ** 2).sum()``.
    """
    return sum(F.mse_loss(g, t, reduction="sum") for g, t in zip(grads, target, strict=True))


def cosine_distance(grads: Sequence[Tensor], target: Sequence[Tensor]) -> Tensor:
    """Inverting Gradients' objective: 1 - cosine of the full gradient vectors, in [0, 2].

    All layers count as one vector (not a mean of per-layer cosines), so the gradient's
    direction is matched and its scale, which a defense or the batch size changes, is not.
    """
    dot = sum((g * t).sum() for g, t in zip(grads, target, strict=True))
    norm_g = torch.sqrt(sum((g**2).sum() for g in grads))
    norm_t = torch.sqrt(sum((t**2).sum() for t in target))
    return 1 - dot / (norm_g * norm_t).clamp_min(1e-12)


def total_variation(images: Tensor) -> Tensor:
    """Anisotropic TV as in Inverting Gradients: mean |dx| + mean |dy| over ``(B, C, H, W)``.

    Natural images are piecewise smooth; this prior pulls the reconstruction towards them.
    """
    dx = (images[..., :, 1:] - images[..., :, :-1]).abs().mean()
    dy = (images[..., 1:, :] - images[..., :-1, :]).abs().mean()
    return dx + dy


OBJECTIVES: dict[str, Objective] = {"l2": l2_distance, "cosine": cosine_distance}
