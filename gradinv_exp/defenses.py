"""Gradient defenses: functions ``fn(grads, cfg, *, generator) -> grads``.

Every defense returns new tensors and never mutates its input (the seed's in-place
defenses stacked across the loop). ``grads`` is the list of per-parameter gradients in
``model.parameters()`` order; a leading trial axis, if present, is just another dimension
except where noted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from gradinv_exp.config import DefenseConfig, NoiseConfig, PruneConfig, QuantizeConfig

Grads = list[Tensor]


def none(grads: Sequence[Tensor], cfg: DefenseConfig, *, generator: torch.Generator) -> Grads:
    """Share the true gradient (copies, so callers may not alias the original)."""
    return [g.clone() for g in grads]


def prune(grads: Sequence[Tensor], cfg: PruneConfig, *, generator: torch.Generator) -> Grads:
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


def quantize(grads: Sequence[Tensor], cfg: QuantizeConfig, *, generator: torch.Generator) -> Grads:
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


def noise(grads: Sequence[Tensor], cfg: NoiseConfig, *, generator: torch.Generator) -> Grads:
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


DEFENSES: dict[str, Callable[..., Grads]] = {
    "none": none,
    "prune": prune,
    "quantize": quantize,
    "noise": noise,
}


def apply(grads: Sequence[Tensor], cfg: DefenseConfig, *, generator: torch.Generator) -> Grads:
    """Run the defense named by ``cfg.name`` on a copy of ``grads``."""
    with torch.no_grad():
        return DEFENSES[cfg.name](grads, cfg, generator=generator)


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
