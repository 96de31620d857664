"""A sample defense: Gaussian noise under its own name (tests/test_extending.py copies it
into gradinv_exp/defenses/)."""

from __future__ import annotations

from dataclasses import dataclass

from gradinv_exp.base import lazy
from gradinv_exp.base.options import positive
from gradinv_exp.defenses.registry import DefenseConfig, defense

torch = lazy.module("torch", __name__)


@dataclass
class BlurConfig(DefenseConfig):
    name: str = "blur"
    sigma: float = 0.5

    def __post_init__(self) -> None:
        positive("defense.sigma", self.sigma)


@defense(BlurConfig, strength="sigma", log_scale=True)
def blur(grads, cfg, *, generator, client=None):
    return [g + cfg.sigma * torch.randn(g.shape, generator=generator) for g in grads]
