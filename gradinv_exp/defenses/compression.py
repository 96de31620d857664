"""Defenses that compress the gradient, as communication-efficient federated learning
does: sparsification (``prune``, ``topk``) and coarser values (``quantize``, ``sign``).
They look at the gradient alone."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gradinv_exp.base import lazy
from gradinv_exp.base.options import one_of, require
from gradinv_exp.defenses.registry import DefenseConfig, defense, visible_mask

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from gradinv_exp.client import Client
else:
    torch = lazy.module("torch", __name__)  # loaded on first use (see base/lazy.py)


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
    """Adaptive model of ``quantize``: the dummy is matched to the expected value of the
    true gradient given the share's bins, ``quantize_target`` t, instead of to the share:
    returned ``d + (q - t)`` (shapes as the parameters), so l2 against the share is
    ||d - t||^2. Registered with a warm-up of half the attack's steps: it takes over from
    the naive attacker's solution.

    The former model matched to the bin, ``q + d - clamp(d, q - h, q + h)`` (h: half a
    step), zero anywhere in it. An objective that is zero at the truth is zero on every
    gradient that quantises to the share, and at 8 bits on a 32-px image that set holds
    images far from the truth: the bin model stopped at the first such point it reached,
    its objective ~1e-7 with L-BFGS down to one inner iteration per step, at 15-18 dB
    (``scripts/adaptive_quantize.py --why``). Between gradients with the same share, the
    naive attacker breaks the tie at the bin's centre, the expected value of g when g is
    spread evenly in its bin; this model does the same except in the two bins beside
    zero, where most entries of a LeNet gradient lie (all rows of the last layer but the
    label's), the share gives only the sign and h overstates |g|: there t is shrunk
    towards zero. Measured on the same pairs against the naive objective, the bin alone,
    straight-through, the bin started from the naive solution or with its width annealed,
    the naive objective plus the bin's hinge, and the expected value with the hinge or
    from the first step (docs/adaptive_attacks.md): a model that changes the objective
    from the first step changes which pairs L-BFGS's first steps throw into a flat,
    saturated region (naive DLG loses about 1 pair in 8 that way), so none of them was
    reliably as strong as naive; started from the naive solution the expected value only
    refines it."""
    return [d + (q - quantize_target(q, cfg)) for d, q in zip(dummy, shared, strict=True)]


def quantize_target(share: Tensor, cfg: QuantizeConfig) -> Tensor:
    """The adaptive attacker's estimate of the true gradient from one quantised tensor
    ``share`` (any shape, the same shape back). Per tensor the share reveals its scale
    s = max|q| (the largest entry lands on a level) and so half a step h = s/(2**bits-1);
    the levels are the odd multiples of h. The estimate is each entry's level (its bin's
    centre), except in the two bins beside zero (|q| = h), where it is
    q * ``_beside_zero_mean`` of the share of entries there: the mean of |g| in [0, 2h]
    under an exponential density of |g| fitted to that share. On the DLG LeNet's
    gradients this cuts the squared error to the true gradient to 0.26-0.36 of the
    levels' at 4-8 bits. With stochastic rounding an entry at +h may lie in (-h, 3h): the
    same estimate, an approximation there."""
    h = share.abs().amax() / (2**cfg.bits - 1)
    beside = share.abs() < 2 * h
    shrink = _beside_zero_mean(beside.to(torch.float64).mean()).to(share.dtype)
    return torch.where(beside, share * shrink, share)


def _beside_zero_mean(share: Tensor) -> Tensor:
    """E[|g| | |g| < 2h] / h for an exponential density of |g| (scale b) under which the
    fraction ``share`` (a 0-dim float64 tensor) of entries has |g| < 2h: with
    a = 2h/b = -log(1 - share), 2 * (1/a - 1/(e^a - 1)); 1 as share -> 0 (|g| spread
    evenly over the bin), -> 0 as share -> 1. Where every entry is beside zero (1 bit)
    the scale cannot be fitted: 1, the level itself."""
    a = -torch.log1p(-share.clamp(max=1 - 1e-12))
    small = a < 1e-4
    safe = torch.where(small, torch.ones_like(a), a)
    mean = torch.where(small, 1 - a / 6, 2 * (1 / safe - 1 / torch.expm1(safe)))
    return torch.where(share >= 1, torch.ones_like(a), mean)


@defense(QuantizeConfig, strength="bits", model=quantize_model, warmup=0.5)
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
