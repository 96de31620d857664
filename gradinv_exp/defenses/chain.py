"""``chain``: several defenses in order, each applied to the previous one's output."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from gradinv_exp.base import lazy
from gradinv_exp.base.options import ConfigError, one_of, require
from gradinv_exp.defenses.registry import DEFENSES, DefenseConfig, defense

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from gradinv_exp.client import Client
else:
    torch = lazy.module("torch", __name__)  # loaded on first use (see base/lazy.py)


def defense_from(step: Mapping[str, Any] | DefenseConfig, key: str) -> DefenseConfig:
    """A typed, range-checked defense config from a mapping like ``{name: prune, ratio: 0.2}``.

    Fields left out take the schema's defaults. Used for lists of defenses (a chain's
    steps, the utility experiment's defenses), whose elements Hydra can only type as maps.
    """
    if isinstance(step, DefenseConfig):
        return step
    name = step.get("name")
    one_of(f"{key}.name", name, DEFENSES.names())
    schema = DEFENSES[name].schema
    try:
        typed = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), step))
    except ConfigError as err:
        raise ConfigError(f"{key}: {err}") from None
    except OmegaConfBaseException as err:
        raise ConfigError(f"{key}: {str(err).splitlines()[0]}") from None
    assert isinstance(typed, DefenseConfig)
    return typed


@dataclass
class ChainConfig(DefenseConfig):
    """Apply ``steps`` in order, each to the previous step's output.

    Each step is a map ``{name: <defense>, <field>: <value> ...}`` (any defense but chain);
    ``__post_init__`` turns it into that defense's typed schema, checking its fields.
    """

    name: str = "chain"
    steps: list[Any] = field(
        default_factory=lambda: [{"name": "prune", "ratio": 0.2}, {"name": "noise", "sigma": 0.01}]
    )

    def __post_init__(self) -> None:
        require(len(self.steps) >= 1, "defense.steps", self.steps, "must list at least one defense")
        self.steps = [defense_from(s, f"defense.steps[{i}]") for i, s in enumerate(self.steps)]
        nested = [s.name for s in self.steps if isinstance(s, ChainConfig)]
        require(not nested, "defense.steps", nested, "a step cannot itself be a chain")


@defense(ChainConfig)
def chain(
    grads: Sequence[Tensor],
    cfg: ChainConfig,
    *,
    generator: torch.Generator,
    client: Client | None = None,
) -> list[Tensor]:
    """Apply ``cfg.steps`` in order, each to the previous step's output.

    Every step sees the client; a per-example step (dp, clip) on a batch of B > 1
    recomputes the per-example gradients from it, so it must come first (checked by
    ``registry.check_order`` before any job starts).
    """
    for step in cfg.steps:
        grads = DEFENSES[step.name].fn(grads, step, generator=generator, client=client)
    return list(grads)
