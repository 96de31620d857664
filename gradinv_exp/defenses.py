"""Gradient defenses: functions ``fn(grads, cfg, *, generator, client=None) -> grads``.

Every defense returns new tensors and never mutates its input (the seed's in-place
defenses stacked across the loop). ``grads`` is one client's list of per-parameter
gradients in ``model.parameters()`` order. ``client`` (model, images, targets) is there
for the defenses that need more than the batch gradient (``dp``/``clip`` per example,
``soteria``); the others ignore it.

What a defense reports besides the gradient (DP's epsilon, a chain's steps) depends on
its config only and comes from ``report(cfg)``, written into metrics.json.

This module holds the registry and the defenses that only look at the gradient;
``privacy.py`` holds clip and DP, ``soteria.py`` Soteria.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from gradinv_exp import privacy
from gradinv_exp.checks import ConfigError
from gradinv_exp.clients import Client
from gradinv_exp.defense_config import (
    ChainConfig,
    DefenseConfig,
    DPConfig,
    NoiseConfig,
    PruneConfig,
    QuantizeConfig,
    SignConfig,
    TopkConfig,
)
from gradinv_exp.soteria import soteria

Grads = list[Tensor]


def none(
    grads: Sequence[Tensor],
    cfg: DefenseConfig,
    *,
    generator: torch.Generator,
    client: Client | None = None,
) -> Grads:
    """Share the true gradient (copies, so callers may not alias the original)."""
    return [g.clone() for g in grads]


def prune(
    grads: Sequence[Tensor],
    cfg: PruneConfig,
    *,
    generator: torch.Generator,
    client: Client | None = None,
) -> Grads:
    """Zero entries with |g| below the ``ratio``-quantile of |g|; keep signs and values.

    ``scope=layer`` takes the quantile per tensor, ``global`` over all entries together.
    Ties at the threshold are kept, so at most ``ratio`` of the entries become zero.
    """
    if cfg.ratio == 0:
        return none(grads, cfg, generator=generator)
    if cfg.scope == "global":
        threshold = _threshold(torch.cat([g.abs().flatten() for g in grads]), cfg.ratio)
        return [torch.where(g.abs() < threshold, torch.zeros_like(g), g) for g in grads]
    return [
        torch.where(g.abs() < _threshold(g.abs().flatten(), cfg.ratio), torch.zeros_like(g), g)
        for g in grads
    ]


def _threshold(values: Tensor, ratio: float) -> Tensor:
    """The (k+1)-th smallest of ``values``, k = floor(ratio * n): exactly k entries lie
    strictly below it when values are distinct (``ratio`` < 1, so k < n)."""
    k = int(ratio * values.numel())
    return values.kthvalue(k + 1).values


def quantize(
    grads: Sequence[Tensor],
    cfg: QuantizeConfig,
    *,
    generator: torch.Generator,
    client: Client | None = None,
) -> Grads:
    """Per tensor: 2**bits uniform levels on [-s, s], s = max|g|; round to nearest.

    ``stochastic`` rounds up with probability equal to the remainder (unbiased,
    DoReFa-style). A tensor of zeros stays zero.
    """
    steps = 2**cfg.bits - 1
    out = []
    for g in grads:
        scale = g.abs().max()
        if scale == 0:
            out.append(torch.zeros_like(g))
            continue
        pos = (g + scale) / (2 * scale) * steps  # in [0, steps]
        if cfg.stochastic:
            low = pos.floor()
            up = torch.rand(g.shape, generator=generator, device=g.device) < (pos - low)
            pos = low + up
        else:
            pos = pos.round()
        out.append(pos / steps * (2 * scale) - scale)
    return out


def noise(
    grads: Sequence[Tensor],
    cfg: NoiseConfig,
    *,
    generator: torch.Generator,
    client: Client | None = None,
) -> Grads:
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


def topk(
    grads: Sequence[Tensor],
    cfg: TopkConfig,
    *,
    generator: torch.Generator,
    client: Client | None = None,
) -> Grads:
    """Keep the ceil(keep * n) entries with the largest |g| (per tensor, or over all
    tensors with ``scope=global``), zero the rest; kept values and signs unchanged."""
    if cfg.scope == "global":
        flat = torch.cat([g.flatten() for g in grads])
        kept = _top_mask(flat, cfg.keep).split([g.numel() for g in grads])
        return [torch.where(m.reshape(g.shape), g, 0) for g, m in zip(grads, kept)]
    return [torch.where(_top_mask(g.flatten(), cfg.keep).reshape(g.shape), g, 0) for g in grads]


def _top_mask(values: Tensor, keep: float) -> Tensor:
    """Boolean mask of the ceil(keep * n) largest |values|: exactly that many, so among
    entries tied at the threshold an unspecified subset is kept."""
    mask = torch.zeros(values.shape, dtype=torch.bool, device=values.device)
    mask[values.abs().topk(math.ceil(keep * values.numel())).indices] = True
    return mask


def sign(
    grads: Sequence[Tensor],
    cfg: SignConfig,
    *,
    generator: torch.Generator,
    client: Client | None = None,
) -> Grads:
    """signSGD with scale: sign(g) * mean|g| per tensor (magnitudes lost, norm kept in L1)."""
    return [torch.sign(g) * g.abs().mean() for g in grads]


def chain(
    grads: Sequence[Tensor],
    cfg: ChainConfig,
    *,
    generator: torch.Generator,
    client: Client | None = None,
) -> Grads:
    """Apply ``cfg.steps`` in order, each to the previous step's output.

    Every step sees the client; ``dp``/``clip`` on a batch of B > 1 recompute the
    per-example gradients from it, so they must come first (``run.validate`` checks).
    """
    for step in cfg.steps:
        grads = DEFENSES[step.name](grads, step, generator=generator, client=client)
    return list(grads)


DEFENSES: dict[str, Callable[..., Grads]] = {
    "none": none,
    "prune": prune,
    "quantize": quantize,
    "noise": noise,
    "clip": privacy.clip,
    "dp": privacy.dp,
    "topk": topk,
    "sign": sign,
    "soteria": soteria,
    "chain": chain,
}

# Defenses that replace the incoming gradient by per-example gradients when B > 1.
PER_EXAMPLE: tuple[str, ...] = ("clip", "dp")


def apply(
    grads: Sequence[Tensor],
    cfg: DefenseConfig,
    *,
    generator: torch.Generator,
    client: Client | None = None,
) -> Grads:
    """Run the defense named by ``cfg.name``; ``grads`` is left as it was."""
    with torch.no_grad():
        return DEFENSES[cfg.name](grads, cfg, generator=generator, client=client)


def steps(cfg: DefenseConfig) -> list[DefenseConfig]:
    """The defenses ``cfg`` applies, in order (a chain's steps, else ``cfg`` itself)."""
    return list(cfg.steps) if isinstance(cfg, ChainConfig) else [cfg]


def check(cfg: DefenseConfig, batch_size: int) -> None:
    """Per-example clipping (dp, clip) recomputes the client's gradients when B > 1, which
    would discard what earlier chain steps did: then it must be the first step."""
    late = [s.name for s in steps(cfg)[1:] if s.name in PER_EXAMPLE]
    if late and batch_size > 1:
        raise ConfigError(
            f"defense.steps: {late[0]} clips per example (dataset.batch_size={batch_size}) "
            "so it must be the chain's first step"
        )


def describe(cfg: DefenseConfig) -> str:
    """``name(field=value, ...)``: one step as metrics.json and tables show it."""
    fields = ", ".join(f"{k}={v}" for k, v in vars(cfg).items() if k != "name")
    return f"{cfg.name}({fields})"


def report(cfg: DefenseConfig) -> dict[str, Any]:
    """What metrics.json records about the defense besides its cost (config only):
    ``defense_steps`` (the applied defenses in order as one string, "a(..) -> b(..)",
    since tables need scalars) and, when a step is DP,
    ``epsilon``/``delta``/``accountant`` of the release (composed over DP steps)."""
    applied = steps(cfg)
    out: dict[str, Any] = {"defense_steps": " -> ".join(describe(s) for s in applied)}
    private = [s for s in applied if isinstance(s, DPConfig)]
    if private:
        out |= privacy.report(private)
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
