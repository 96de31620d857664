"""Defenses that compress the gradient, as communication-efficient federated learning
does: sparsification (``prune``, ``topk``) and coarser values (``quantize``, ``sign``).
They look at the gradient alone."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gradinv_exp import lazy
from gradinv_exp.defenses.registry import DefenseConfig, defense, visible_mask
from gradinv_exp.options import one_of, require

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from gradinv_exp.client import Client
else:
    torch = lazy.module("torch", __name__)  # loaded on first use (see lazy.py)


@dataclass
class PruneConfig(DefenseConfig):
    name: str = "prune"
    ratio: float = 0.2  # fraction of entries (smallest |g|) set to zero
    scope: str = "layer"  # layer: quantile per tensor; global: over all tensors

    def __post_init__(self) -> None:
        require(0.0 <= self.ratio < 1.0, "defense.ratio", self.ratio, "must be in [0, 1)")
        one_of("defense.scope", self.scope, ("layer", "global"))


@defense(PruneConfig, strength="ratio", model=visible_mask)
def prune(
    grads: Sequence[Tensor],
    cfg: PruneConfig,
    *,
    generator: torch.Generator,
    client: Client | None = None,
) -> list[Tensor]:
    """Zero entries with |g| below the ``ratio``-quantile of |g|; keep signs and values.

    ``scope=layer`` takes the quantile per tensor, ``global`` over all entries together.
    Ties at the threshold are kept, so at most ``ratio`` of the entries become zero.
    """
    if cfg.ratio == 0:
        return [g.clone() for g in grads]
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


@dataclass
class TopkConfig(DefenseConfig):
    name: str = "topk"
    keep: float = 0.1  # fraction of entries (largest |g|) kept; the rest become zero
    scope: str = "layer"  # layer: per tensor; global: over all tensors

    def __post_init__(self) -> None:
        require(0 < self.keep <= 1, "defense.keep", self.keep, "must be in (0, 1]")
        one_of("defense.scope", self.scope, ("layer", "global"))


@defense(TopkConfig, strength="keep", log_scale=True, model=visible_mask)
def topk(
    grads: Sequence[Tensor],
    cfg: TopkConfig,
    *,
    generator: torch.Generator,
    client: Client | None = None,
) -> list[Tensor]:
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


@dataclass
class QuantizeConfig(DefenseConfig):
    name: str = "quantize"
    bits: int = 4  # 2**bits uniform levels on [-max|g|, max|g|] per tensor
    stochastic: bool = False  # unbiased stochastic rounding instead of round-to-nearest

    def __post_init__(self) -> None:
        require(1 <= self.bits <= 24, "defense.bits", self.bits, "must be an integer in [1, 24]")


def quantize_model(
    dummy: Sequence[Tensor], shared: Sequence[Tensor], cfg: QuantizeConfig
) -> list[Tensor]:
    """Adaptive model of ``quantize``: match to the bin. Per tensor the share reveals its
    scale s = max|q| (the largest entry lands on a level) and so the step 2s/(2**bits-1);
    the dummy counts as matching anywhere inside [q - step/2, q + step/2]. Returned:
    q + (d - clamp(d, q - step/2, q + step/2)), equal to the share inside the bin, so l2
    gives the squared hinge distance to the interval and cosine is 1 at the truth.
    Chosen over a straight-through quantiser because its loss is exactly zero at the
    truth and its gradient is never zero outside the bin (rounding's is, almost
    everywhere). Stochastic rounding can land one step away: the interval is then
    [q - step, q + step]."""
    steps = 2**cfg.bits - 1
    width = 1.0 if cfg.stochastic else 0.5
    out = []
    for d, q in zip(dummy, shared, strict=True):
        half = width * 2 * q.abs().amax() / steps
        out.append(q + (d - torch.clamp(d, q - half, q + half)))
    return out


@defense(QuantizeConfig, strength="bits", model=quantize_model)
def quantize(
    grads: Sequence[Tensor],
    cfg: QuantizeConfig,
    *,
    generator: torch.Generator,
    client: Client | None = None,
) -> list[Tensor]:
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


@dataclass
class SignConfig(DefenseConfig):
    name: str = "sign"


def sign_model(dummy: Sequence[Tensor], shared: Sequence[Tensor], cfg: SignConfig) -> list[Tensor]:
    """Adaptive model of ``sign``: match the signs, at the scale the share reveals.

    Sign drops each entry's magnitude but keeps, per tensor, m = mean|g| (the share's
    |entries|), so only the dummy's direction within each tensor is compared: it is
    rescaled to the same L1 mean, d' = d * m / mean|d| (scale-free: d and a*d, a > 0,
    give one d'). Then, as ``quantize_model`` does with its bin, d' counts as matching
    anywhere on its share's half-line ([0, inf) where s > 0, (-inf, 0] where s < 0,
    {0} where s = 0): returned s + (d' - clamp(d', lower, upper)). At the truth d' = g
    and every sign agrees, so it equals the share and l2 is 0 (cosine 1); elsewhere l2 is
    the squared distance of d' to the share's orthant, whose gradient is never zero
    where a sign disagrees. Chosen over a smooth sign, tanh(d/tau), which is never
    exactly the share (its objective is not zero at the truth for any tau > 0) and whose
    gradient vanishes for |d| >> tau. Shapes as the parameters."""
    out = []
    for d, s in zip(dummy, shared, strict=True):
        scaled = d * (s.abs().mean() / d.abs().mean().clamp_min(1e-30))
        lower = torch.where(s < 0, -math.inf, 0.0)
        upper = torch.where(s > 0, math.inf, 0.0)
        out.append(s + (scaled - torch.clamp(scaled, lower, upper)))
    return out


@defense(SignConfig, model=sign_model)
def sign(
    grads: Sequence[Tensor],
    cfg: SignConfig,
    *,
    generator: torch.Generator,
    client: Client | None = None,
) -> list[Tensor]:
    """signSGD with scale: sign(g) * mean|g| per tensor (magnitudes lost, norm kept in L1)."""
    return [torch.sign(g) * g.abs().mean() for g in grads]
