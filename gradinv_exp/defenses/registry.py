"""The ``defense`` group: its registry, the schema base class, and what every defense
shares (apply, cost, report).

A defense is ``fn(grads, cfg, *, generator, client=None) -> grads``: ``grads`` is one
client's list of per-parameter tensors in ``model.parameters()`` order, ``cfg`` the
option's typed schema, ``generator`` the run's "defense" random stream, ``client`` the
model, images and labels behind the gradient (for defenses that need more than the
gradient: per-example clipping, Soteria). It returns new tensors and never mutates its
input (the seed's in-place defenses stacked across its loop).

An option is registered with ``@defense(Schema, strength=..., ...)`` beside its function;
the schema's ``name`` default is the option's name (``conf/defense/<name>.yaml``). Every
fact a table or check needs about a defense is a field of its ``Defense`` entry.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from omegaconf import MISSING

from gradinv_exp import lazy
from gradinv_exp.options import ConfigError, Registry, option_name

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from gradinv_exp.client import Client
else:
    torch = lazy.module("torch", __name__)  # loaded on first use (see lazy.py)


@dataclass
class DefenseConfig:
    """Base of every defense schema; ``name`` selects the option in ``DEFENSES``."""

    name: str = MISSING


DefenseFn = Callable[..., "list[Tensor]"]


@dataclass(frozen=True)
class Defense:
    """One option of the ``defense`` group and every fact about it.

    ``strength``: the schema field that sets how strongly it distorts the gradient (None:
    it has none), on a log scale when ``log_scale``; sweep tables, curves and compare put
    runs on that axis. ``per_example``: with a batch of B > 1 it recomputes the client's
    per-example gradients (so it must come first in a chain). ``report``: what
    metrics.json records about all steps of this defense in a run, beyond its cost (DP's
    epsilon), from their configs alone.
    """

    name: str
    fn: DefenseFn
    schema: type[DefenseConfig]
    strength: str | None = None
    log_scale: bool = False
    per_example: bool = False
    report: Callable[[Sequence[Any]], dict[str, Any]] | None = None


DEFENSES: Registry[Defense] = Registry("defense")


def defense(
    schema: type[DefenseConfig],
    *,
    strength: str | None = None,
    log_scale: bool = False,
    per_example: bool = False,
    report: Callable[[Sequence[Any]], dict[str, Any]] | None = None,
) -> Callable[[DefenseFn], DefenseFn]:
    """Register the decorated function as the defense ``schema`` configures."""
    if strength is not None and strength not in {f.name for f in fields(schema)}:
        raise TypeError(f"{schema.__name__} has no strength field {strength!r}")

    def register(fn: DefenseFn) -> DefenseFn:
        name = option_name(schema)
        DEFENSES.add(Defense(name, fn, schema, strength, log_scale, per_example, report))
        return fn

    return register


@dataclass
class NoneConfig(DefenseConfig):
    name: str = "none"


@defense(NoneConfig)
def none(
    grads: Sequence[Tensor],
    cfg: NoneConfig,
    *,
    generator: torch.Generator,
    client: Client | None = None,
) -> list[Tensor]:
    """Share the true gradient (copies, so callers may not alias the original)."""
    return [g.clone() for g in grads]


def steps(cfg: DefenseConfig) -> list[DefenseConfig]:
    """The defenses ``cfg`` applies, in order (a chain's steps, else ``cfg`` itself)."""
    inner = getattr(cfg, "steps", None)
    return list(inner) if inner is not None else [cfg]


def apply(
    grads: Sequence[Tensor],
    cfg: DefenseConfig,
    *,
    generator: torch.Generator,
    client: Client | None = None,
) -> list[Tensor]:
    """Run the defense ``cfg`` selects; ``grads`` is left as it was."""
    with torch.no_grad():
        return DEFENSES[cfg.name].fn(grads, cfg, generator=generator, client=client)


def check_order(cfg: DefenseConfig, batch_size: int) -> None:
    """A per-example defense recomputes the client's gradients when B > 1, which would
    discard what earlier chain steps did: then it must be the first step."""
    late = [s.name for s in steps(cfg)[1:] if DEFENSES[s.name].per_example]
    if late and batch_size > 1:
        raise ConfigError(
            f"defense.steps: {late[0]} clips per example (dataset.batch_size={batch_size}) "
            "so it must be the chain's first step"
        )


def describe(cfg: DefenseConfig) -> str:
    """``name(field=value, ...)``: one step as metrics.json and tables show it."""
    values = ", ".join(f"{k}={v}" for k, v in vars(cfg).items() if k != "name")
    return f"{cfg.name}({values})"


def report(cfg: DefenseConfig) -> dict[str, Any]:
    """What metrics.json records about the defense besides its cost (config only):
    ``defense_steps`` (the applied defenses in order as one string, "a(..) -> b(..)",
    since tables need scalars) and what each defense's own ``report`` says about all of
    its steps (DP: ``epsilon``/``delta``/``accountant``, composed over its steps)."""
    applied = steps(cfg)
    out: dict[str, Any] = {"defense_steps": " -> ".join(describe(s) for s in applied)}
    for name in dict.fromkeys(s.name for s in applied):
        own = DEFENSES[name].report
        if own is not None:
            out |= own([s for s in applied if s.name == name])
    return out


def cost(true: Sequence[Tensor], shared: Sequence[Tensor]) -> dict[str, float]:
    """What the defense did to the gradient: relative L2 error, cosine, fraction changed."""
    g = torch.cat([t.detach().flatten() for t in true]).double()
    s = torch.cat([t.detach().flatten() for t in shared]).double()
    norm = g.norm()
    return {
        "defense_rel_error": float((s - g).norm() / norm) if norm > 0 else float("nan"),
        "defense_cosine": float(torch.nn.functional.cosine_similarity(s, g, dim=0)),
        "defense_changed": float((s != g).double().mean()),
    }


def strength(name: str) -> tuple[str | None, bool]:
    """``(field, log_scale)`` of defense ``name``'s strength; ``(None, False)`` when it has
    none or is unknown here (runs of a defense this checkout does not have)."""
    if name not in DEFENSES:
        return None, False
    entry = DEFENSES[name]
    return entry.strength, entry.log_scale
