"""The ``defense`` group: its registry, the schema base class, and what every defense
shares (apply, cost, report).

A defense is ``fn(grads, cfg, *, generator, client=None) -> grads``: ``grads`` is one
client's list of per-parameter tensors in ``model.parameters()`` order, ``cfg`` the
option's typed schema, ``generator`` the run's "defense" random stream, ``client`` the
model, images and labels behind the gradient (for defenses that need more than the
gradient: per-example clipping, Soteria). It returns new tensors and never mutates its
input (the original notebook's in-place defenses stacked across its loop).

An option is registered with ``@defense(Schema, strength=..., ...)`` beside its function;
the schema's ``name`` default is the option's name (``conf/defense/<name>.yaml``). Every
fact a table or check needs about a defense is a field of its ``Defense`` entry. The
user's own defense is the ``custom`` option (``custom.py``), which reads these facts
from its config instead.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from omegaconf import MISSING

from gradinv_exp.base import lazy
from gradinv_exp.base.options import ConfigError, Registry, option_name

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from gradinv_exp.client import Client
else:
    torch = lazy.module("torch", __name__)  # loaded on first use (see base/lazy.py)


@dataclass
class DefenseConfig:
    """Base of every defense schema; ``name`` selects the option in ``DEFENSES``."""

    name: str = MISSING


DefenseFn = Callable[..., "list[Tensor]"]
# the attacker's differentiable model of a defense: (dummy grads, shared grads, cfg) -> the
# dummy's grads as that defense would have shared them, given what the share reveals
ModelFn = Callable[[Sequence["Tensor"], Sequence["Tensor"], Any], "list[Tensor]"]


@dataclass(frozen=True)
class Defense:
    """One option of the ``defense`` group and every fact about it.

    ``strength``: the schema field that sets how strongly it distorts the gradient (None:
    it has none), on a log scale when ``log_scale``; sweep tables, curves and compare put
    runs on that axis. ``per_example``: with a batch of B > 1 it recomputes the client's
    per-example gradients (so it must come first in a chain). ``report``: what
    metrics.json records about all steps of this defense in a run, beyond its cost (DP's
    epsilon), from their configs alone. ``axis``: where a run of it sits in tables, from
    the run's flat config, when that depends on the config (``custom``); else ``name``,
    ``strength`` and ``log_scale`` say it. ``check``: the preflight checks that need
    torch, given a probe client (``custom``: the user's function on its gradient).
    ``model``: the adaptive attacker's differentiable model of this defense
    (``attack.adaptive=true``; Kerckhoffs: the attacker knows the defense and its
    parameters); None: nothing to invert (noise), the naive attacker is the adaptive one.
    ``warmup``: the fraction of the attack's steps in which the adaptive attacker first
    matches the share naively before its model takes over (``AttackerModel``): for a
    model that refines the naive objective rather than reshaping it, so that it starts
    from the naive attacker's solution instead of a basin of its own.
    """

    name: str
    fn: DefenseFn
    schema: type[DefenseConfig]
    strength: str | None = None
    log_scale: bool = False
    per_example: bool = False
    report: Callable[[Sequence[Any]], dict[str, Any]] | None = None
    axis: Callable[[Mapping[str, Any]], Axis] | None = None
    check: Callable[[Any, Client], None] | None = None
    model: ModelFn | None = None
    warmup: float = 0.0


@dataclass(frozen=True)
class Axis:
    """Where a run sits in tables and figures: ``defense`` (its name there), ``key`` (the
    field that sets its strength; None: it has none), that field's ``value``, and whether
    strengths are compared on a log scale."""

    defense: str | None
    key: str | None = None
    value: Any = None
    log_scale: bool = False


DEFENSES: Registry[Defense] = Registry("defense")


def defense(
    schema: type[DefenseConfig],
    *,
    strength: str | None = None,
    log_scale: bool = False,
    per_example: bool = False,
    report: Callable[[Sequence[Any]], dict[str, Any]] | None = None,
    axis: Callable[[Mapping[str, Any]], Axis] | None = None,
    check: Callable[[Any, Client], None] | None = None,
    model: ModelFn | None = None,
    warmup: float = 0.0,
) -> Callable[[DefenseFn], DefenseFn]:
    """Register the decorated function as the defense ``schema`` configures."""
    if strength is not None and strength not in {f.name for f in fields(schema)}:
        raise TypeError(f"{schema.__name__} has no strength field {strength!r}")
    if not 0 <= warmup < 1:
        raise TypeError(f"{schema.__name__}: warmup {warmup} is not a fraction in [0, 1)")

    def register(fn: DefenseFn) -> DefenseFn:
        name = option_name(schema)
        entry = Defense(
            name, fn, schema, strength, log_scale, per_example, report, axis, check, model,
            warmup,
        )  # fmt: skip
        DEFENSES.add(entry)
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


def visible_mask(dummy: Sequence[Tensor], shared: Sequence[Tensor], cfg: Any) -> list[Tensor]:
    """Adaptive model of a sparsifying defense (prune, topk, soteria): the zeros of the
    share are visible, so the dummy is compared only where the share is non-zero.
    Shapes as the parameters; differentiable in ``dummy``."""
    return [d * (s != 0) for d, s in zip(dummy, shared, strict=True)]


@dataclass(frozen=True)
class AttackerModel:
    """The adaptive attacker's model of a defense: called as ``model(dummy grads, share)``
    it returns the dummy's gradient as the defense would have shared it (shapes as the
    parameters); ``warmup``: the fraction of the attack's steps that match the share
    naively before the model takes over (``Defense.warmup``)."""

    run: Callable[[Sequence[Tensor], Sequence[Tensor]], list[Tensor]]
    warmup: float = 0.0

    def __call__(self, dummy: Sequence[Tensor], shared: Sequence[Tensor]) -> list[Tensor]:
        return self.run(dummy, shared)


def attacker_model(cfg: DefenseConfig) -> AttackerModel:
    """The adaptive attacker's model of ``cfg``: its steps' models composed in order
    (steps without one, like noise, pass the dummy through). Every step's model sees
    only the final share: a mask is visible to it only if no later step fills the
    zeros (prune then quantize is not inverted exactly: quantize's levels fill them).
    Its warm-up is the least of its modelled steps' (a mask's model, warm-up 0, is best
    started from scratch)."""
    models = [(DEFENSES[s.name].model, s) for s in steps(cfg)]

    def run(dummy: Sequence[Tensor], shared: Sequence[Tensor]) -> list[Tensor]:
        out = list(dummy)
        for fn, step in models:
            if fn is not None:
                out = fn(out, shared, step)
        return out

    warmups = [DEFENSES[s.name].warmup for fn, s in models if fn is not None]
    return AttackerModel(run, min(warmups, default=0.0))


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


def axis(config: Mapping[str, Any]) -> Axis:
    """Where a run sits in tables and figures, from its flat config (metrics.json's
    ``config``, a utility.csv row: keys ``defense.name``, ``defense.<field>`` ...). A
    defense this checkout does not have keeps its name and gets no strength."""
    name = config.get("defense.name")
    if name not in DEFENSES:
        return Axis(name)
    entry = DEFENSES[name]
    if entry.axis is not None:
        return entry.axis(config)
    key = entry.strength
    return Axis(name, key, config.get(f"defense.{key}") if key else None, entry.log_scale)


def check(cfg: DefenseConfig, probe: Client) -> None:
    """Preflight: each step's own checks that need torch (the user's code), on ``probe``."""
    for step in steps(cfg):
        own = DEFENSES[step.name].check
        if own is not None:
            own(step, probe)


def has_checks(cfg: DefenseConfig) -> bool:
    """Whether a step of ``cfg`` has checks that need a probe client."""
    return any(DEFENSES[s.name].check is not None for s in steps(cfg))
