"""``custom``: the user's own defense, a function in their own module; no fork.

``defense=custom defense.target=my_defenses:soft_prune +defense.params.p=0.5`` calls::

    soft_prune(grads, generator=generator, client=client, p=0.5)

``grads`` is the client's list of per-parameter gradient tensors (``model.parameters()``
order), ``generator`` the run's seeded "defense" random stream (draw every random number
from it and runs are reproducible), ``client`` the model, images ``(B, C, H, W)`` and
one-hot labels behind the gradient; ``defense.params`` become keyword arguments. The
function returns new tensors of the same shapes and leaves its input as it was, like a
built-in defense (``registry``).

``defense.strength`` names the parameter that sets how strongly it distorts the gradient
(``defense.strength=p``): sweeps, summary.csv, curves.png and compare then put its runs on
that axis (log-scaled with ``defense.log_scale=true``), under the function's name, as
they do for a built-in defense's registered strength field.

Preflight imports the function, checks that it accepts these arguments and runs it once
on a probe client's gradient (``check``); every call checks what it returns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

from omegaconf import MISSING

from gradinv_exp.base import lazy
from gradinv_exp.base.options import (
    ConfigError,
    check_signature,
    not_allowed,
    require,
    resolve,
    split_target,
)
from gradinv_exp.client import gradient
from gradinv_exp.defenses.registry import Axis, DefenseConfig, defense, visible_mask

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from gradinv_exp.client import Client
else:
    torch = lazy.module("torch", __name__)  # loaded on first use (see base/lazy.py)

KEY = "defense.target"
CALL = "fn(grads, *, generator, client, **params)"


@dataclass
class CustomConfig(DefenseConfig):
    name: str = "custom"
    target: str = MISSING  # the function, module:function (importable from here or PYTHONPATH)
    params: dict[str, Any] = field(default_factory=dict)  # its keyword arguments
    strength: Optional[str] = None  # the key of params that sets the strength, for tables
    log_scale: bool = False  # strengths compared on a log scale (e.g. a noise scale)

    def __post_init__(self) -> None:
        split_target(KEY, self.target)
        if self.strength is None:
            return
        keys = ", ".join(self.params) or "none given"
        require(
            self.strength in self.params,
            "defense.strength",
            self.strength,
            f"must name a key of defense.params ({keys}): set it with "
            f"+defense.params.{self.strength}=VALUE",
        )
        value = self.params[self.strength]
        require(
            isinstance(value, (int, float)) and not isinstance(value, bool),
            f"defense.params.{self.strength}",
            value,
            "is the strength (defense.strength), so it must be a number",
        )


def custom_axis(config: Mapping[str, Any]) -> Axis:
    """A custom run's place in tables: under its function's name (``soft_prune`` for
    ``my_defenses:soft_prune``), on the axis of its declared strength parameter."""
    target = str(config.get("defense.target") or "custom")
    key = config.get("defense.strength")
    value = config.get(f"defense.params.{key}") if key else None
    name = target.replace(":", ".").rsplit(".", 1)[-1]
    return Axis(name, key, value, bool(config.get("defense.log_scale")))


def check(cfg: CustomConfig, probe: Client) -> None:
    """Preflight: import ``cfg.target``, check its signature, and apply it once to the
    probe client's gradient; the input must come back unchanged."""
    fn = resolve(KEY, cfg.target)
    grads = [g.detach() for g in gradient(probe)]
    generator = torch.Generator().manual_seed(0)
    kwargs = {"generator": generator, "client": probe, **cfg.params}
    check_signature(KEY, cfg.target, fn, CALL, grads, **kwargs)
    before = [g.clone() for g in grads]
    custom(grads, cfg, generator=generator, client=probe)
    if not all(torch.equal(a, b) for a, b in zip(before, grads)):
        why = "it changed its input in place; return new tensors (g * mask, not g.mul_(mask))"
        raise not_allowed(KEY, cfg.target, why)


@defense(CustomConfig, axis=custom_axis, check=check, model=visible_mask)
def custom(
    grads: Sequence[Tensor],
    cfg: CustomConfig,
    *,
    generator: torch.Generator,
    client: Client | None = None,
) -> list[Tensor]:
    """Call the user's function; a one-line ConfigError when it raises or returns anything
    but finite tensors of the input's shapes (a run would otherwise fail far from here)."""
    fn = resolve(KEY, cfg.target)
    try:
        out = fn(list(grads), generator=generator, client=client, **cfg.params)
    except ConfigError:
        raise
    except Exception as err:
        text = " ".join(str(err).split())
        raise not_allowed(KEY, cfg.target, f"it raised {type(err).__name__}: {text}") from err
    return checked(cfg.target, grads, out)


def checked(target: str, grads: Sequence[Tensor], out: Any) -> list[Tensor]:
    """``out`` as a list when it is one finite tensor per input tensor, of its shape."""
    if not isinstance(out, (list, tuple)) or len(out) != len(grads):
        what = f"{len(out)} items" if isinstance(out, (list, tuple)) else type(out).__name__
        why = f"it must return a list of {len(grads)} tensors (one per parameter), not {what}"
        raise not_allowed(KEY, target, why)
    for i, (g, s) in enumerate(zip(grads, out)):
        if not isinstance(s, torch.Tensor) or s.shape != g.shape:
            what = tuple(s.shape) if isinstance(s, torch.Tensor) else type(s).__name__
            why = f"its tensor {i} must have shape {tuple(g.shape)}, not {what}"
            raise not_allowed(KEY, target, why)
        if not bool(torch.isfinite(s).all()):
            raise not_allowed(KEY, target, f"its tensor {i} holds NaN or inf")
    return list(out)
