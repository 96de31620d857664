"""A sample attack family: every image one grey level (tests/test_extending.py copies it
into gradinv_exp/attacks/)."""

from __future__ import annotations

from dataclasses import dataclass

from gradinv_exp.attacks.contract import (
    AttackResult,
    BaseAttackConfig,
    Context,
    Target,
    each,
    family,
)
from gradinv_exp.base import lazy

torch = lazy.module("torch", __name__)


@dataclass
class MidGreyConfig(BaseAttackConfig):
    family: str = "midgrey"
    level: float = 0.5


@family(MidGreyConfig)
@each
def reconstruct(target: Target, context: Context) -> AttackResult:
    shape = target.observed.shape
    images = torch.full(shape, target.cfg.level)
    labels = torch.full(shape[:2], -1, dtype=torch.long)
    return AttackResult.read_out(images, labels, {"assumed.level": target.cfg.level})
