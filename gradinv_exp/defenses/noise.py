"""Additive noise on every entry of the gradient, without clipping (``dp`` in
``privacy.py`` is the calibrated version)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gradinv_exp.base import lazy
from gradinv_exp.base.options import one_of, require
from gradinv_exp.defenses.registry import DefenseConfig, defense

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from gradinv_exp.client import Client
else:
    torch = lazy.module("torch", __name__)  # loaded on first use (see base/lazy.py)


@dataclass
class NoiseConfig(DefenseConfig):
    name: str = "noise"
    sigma: float = 1e-3  # standard deviation of the added noise (for both distributions)
    distribution: str = "gaussian"

    def __post_init__(self) -> None:
        require(
            math.isfinite(self.sigma) and self.sigma >= 0.0,
            "defense.sigma",
            self.sigma,
            "must be >= 0 and finite",
        )
        one_of("defense.distribution", self.distribution, ("gaussian", "laplace"))


@defense(NoiseConfig, strength="sigma", log_scale=True)
def noise(
    grads: Sequence[Tensor],
    cfg: NoiseConfig,
    *,
    generator: torch.Generator,
    client: Client | None = None,
) -> list[Tensor]:
    """Add fresh noise of standard deviation ``sigma`` to every entry.

    Laplace noise has scale ``sigma / sqrt(2)`` so both distributions have std ``sigma``
    and a sweep over ``sigma`` compares like with like.
    """
    out = []
    for g in grads:
        if cfg.distribution == "gaussian":
            eps = torch.randn(g.shape, generator=generator, device=g.device, dtype=g.dtype)
        else:  # inverse CDF of a unit-variance Laplace from a uniform on (-1/2, 1/2)
            u = torch.rand(g.shape, generator=generator, device=g.device, dtype=g.dtype) - 0.5
            eps = -torch.sign(u) * torch.log1p(-2 * u.abs()) / 2**0.5
        out.append(g + cfg.sigma * eps)
    return out
