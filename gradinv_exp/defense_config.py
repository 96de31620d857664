"""Schemas of the ``defense`` group (one dataclass per option in ``conf/defense/``), the
chain's step parsing, and the strength convention that sweep tables and plots use."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from gradinv_exp.checks import ConfigError, one_of, require


@dataclass
class DefenseConfig:
    """Base of every defense; ``name`` selects the function in ``defenses.DEFENSES``."""

    GROUP: ClassVar[str] = "defense"
    # The field that sets how strongly a defense distorts the gradient (None: no strength),
    # and whether its values are naturally log-spaced. Sweep tables and plots use these;
    # a new defense schema sets both so it appears on the strength axis.
    STRENGTH: ClassVar[str | None] = None
    STRENGTH_LOG: ClassVar[bool] = False
    name: str = MISSING


@dataclass
class NoneDefenseConfig(DefenseConfig):
    name: str = "none"


@dataclass
class PruneConfig(DefenseConfig):
    STRENGTH: ClassVar[str | None] = "ratio"
    name: str = "prune"
    ratio: float = 0.2  # fraction of entries (smallest |g|) set to zero
    scope: str = "layer"  # layer: quantile per tensor; global: over all tensors

    def __post_init__(self) -> None:
        require(0.0 <= self.ratio < 1.0, "defense.ratio", self.ratio, "must be in [0, 1)")
        one_of("defense.scope", self.scope, ("layer", "global"))


@dataclass
class QuantizeConfig(DefenseConfig):
    STRENGTH: ClassVar[str | None] = "bits"
    name: str = "quantize"
    bits: int = 4  # 2**bits uniform levels on [-max|g|, max|g|] per tensor
    stochastic: bool = False  # unbiased stochastic rounding instead of round-to-nearest

    def __post_init__(self) -> None:
        require(1 <= self.bits <= 24, "defense.bits", self.bits, "must be an integer in [1, 24]")


@dataclass
class NoiseConfig(DefenseConfig):
    STRENGTH: ClassVar[str | None] = "sigma"
    STRENGTH_LOG: ClassVar[bool] = True
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


@dataclass
class ClipConfig(DefenseConfig):
    STRENGTH: ClassVar[str | None] = "clip"
    name: str = "clip"
    clip: float = 1.0  # max L2 norm of each example's gradient (all layers together)

    def __post_init__(self) -> None:
        require(self.clip > 0, "defense.clip", self.clip, "must be > 0")


@dataclass
class DPConfig(DefenseConfig):
    STRENGTH: ClassVar[str | None] = "noise_multiplier"
    STRENGTH_LOG: ClassVar[bool] = True
    name: str = "dp"
    clip: float = 1.0  # max L2 norm of each example's gradient (the sensitivity)
    noise_multiplier: float = 1.0  # Gaussian noise std = noise_multiplier * clip
    delta: float = 1e-5  # epsilon is reported at this delta
    accountant: str = "prv"  # opacus accountant: prv (tight) or rdp (looser upper bound)

    def __post_init__(self) -> None:
        require(self.clip > 0, "defense.clip", self.clip, "must be > 0")
        require(
            self.noise_multiplier >= 0,
            "defense.noise_multiplier",
            self.noise_multiplier,
            "must be >= 0",
        )
        require(0 < self.delta < 1, "defense.delta", self.delta, "must be in (0, 1)")
        one_of("defense.accountant", self.accountant, ("prv", "rdp"))


@dataclass
class TopkConfig(DefenseConfig):
    STRENGTH: ClassVar[str | None] = "keep"
    STRENGTH_LOG: ClassVar[bool] = True
    name: str = "topk"
    keep: float = 0.1  # fraction of entries (largest |g|) kept; the rest become zero
    scope: str = "layer"  # layer: per tensor; global: over all tensors

    def __post_init__(self) -> None:
        require(0 < self.keep <= 1, "defense.keep", self.keep, "must be in (0, 1]")
        one_of("defense.scope", self.scope, ("layer", "global"))


@dataclass
class SignConfig(DefenseConfig):
    STRENGTH: ClassVar[str | None] = None
    name: str = "sign"


@dataclass
class SoteriaConfig(DefenseConfig):
    STRENGTH: ClassVar[str | None] = "percentile"
    name: str = "soteria"
    percentile: float = 40.0  # % of representation features whose FC gradient column is zeroed

    def __post_init__(self) -> None:
        require(
            0 <= self.percentile <= 100,
            "defense.percentile",
            self.percentile,
            "must be in [0, 100]",
        )


def defense_from(step: Mapping[str, Any] | DefenseConfig, key: str) -> DefenseConfig:
    """A typed, range-checked defense config from a mapping like ``{name: prune, ratio: 0.2}``.

    Fields left out take the schema's defaults. Used for lists of defenses (a chain's
    steps, the utility experiment's defenses), whose elements Hydra can only type as maps.
    """
    if isinstance(step, DefenseConfig):
        return step
    name = step.get("name")
    one_of(f"{key}.name", name, tuple(DEFENSE_SCHEMAS))
    try:
        typed = OmegaConf.to_object(
            OmegaConf.merge(OmegaConf.structured(DEFENSE_SCHEMAS[name]), step)
        )
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

    STRENGTH: ClassVar[str | None] = None
    name: str = "chain"
    steps: list[Any] = field(
        default_factory=lambda: [{"name": "prune", "ratio": 0.2}, {"name": "noise", "sigma": 0.01}]
    )

    def __post_init__(self) -> None:
        require(len(self.steps) >= 1, "defense.steps", self.steps, "must list at least one defense")
        self.steps = [defense_from(s, f"defense.steps[{i}]") for i, s in enumerate(self.steps)]
        nested = [s.name for s in self.steps if isinstance(s, ChainConfig)]
        require(not nested, "defense.steps", nested, "a step cannot itself be a chain")


DEFENSE_SCHEMAS: dict[str, type[DefenseConfig]] = {
    "none": NoneDefenseConfig,
    "prune": PruneConfig,
    "quantize": QuantizeConfig,
    "noise": NoiseConfig,
    "clip": ClipConfig,
    "dp": DPConfig,
    "topk": TopkConfig,
    "sign": SignConfig,
    "soteria": SoteriaConfig,
    "chain": ChainConfig,
}


def strength_key(defense: str) -> str | None:
    """The config field holding ``defense``'s strength ("ratio" for prune), None if it has none.

    Unknown names (e.g. runs of a defense this checkout does not have) have no strength.
    """
    schema = DEFENSE_SCHEMAS.get(defense)
    return schema.STRENGTH if schema else None


def strength_log(defense: str) -> bool:
    """True when ``defense``'s strength is swept on a log scale (noise sigma)."""
    schema = DEFENSE_SCHEMAS.get(defense)
    return bool(schema and schema.STRENGTH_LOG)
