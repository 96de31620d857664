"""Norm clipping and the Gaussian mechanism (DP), and the epsilon of one release.

Both defenses bound each example's influence: its gradient (all layers as one vector) is
scaled to L2 norm at most ``clip``. With a FedSGD ``Client`` holding B > 1 examples that
is done per example (DP-SGD style) and the clipped gradients are averaged; otherwise the
given tensors are the one unit (B = 1, no client, or a FedAvg update, which is clipped as
a whole: then the guarantee is per client, not per example). ``dp`` then adds N(0, (z * clip)^2)
to the sum of clipped gradients before averaging, so one shared gradient is one release
of the Gaussian mechanism with sensitivity ``clip`` and noise multiplier z; its
(epsilon, delta) guarantee comes from an Opacus accountant.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from gradinv_exp.base import lazy
from gradinv_exp.base.options import one_of, require
from gradinv_exp.client import per_example_gradients
from gradinv_exp.defenses.registry import DefenseConfig, defense

if TYPE_CHECKING:
    import torch
    from opacus.accountants import IAccountant
    from torch import Tensor

    from gradinv_exp.client import Client
else:
    torch = lazy.module("torch", __name__)  # loaded on first use (see base/lazy.py)

log = logging.getLogger(__name__)


def clip_norm(grads: Sequence[Tensor], clip: float) -> list[Tensor]:
    """Scale ``grads`` (a leading example axis E on every tensor) so that each example's
    L2 norm over all tensors is at most ``clip``; smaller gradients are unchanged."""
    norms = torch.stack([g.flatten(1).pow(2).sum(1) for g in grads]).sum(0).sqrt()  # (E,)
    factor = (clip / norms.clamp_min(1e-12)).clamp(max=1.0)
    return [g * factor.reshape(-1, *[1] * (g.dim() - 1)) for g in grads]


def clipped_sum(
    grads: Sequence[Tensor], clip: float, client: Client | None
) -> tuple[list[Tensor], int]:
    """Sum over examples of the clipped per-example gradients, and the number of examples."""
    if client is not None and client.per_example and client.batch_size > 1:
        examples = per_example_gradients(client)
    else:
        examples = [g[None] for g in grads]
    return [g.sum(0) for g in clip_norm(examples, clip)], len(examples[0])


@dataclass
class ClipConfig(DefenseConfig):
    name: str = "clip"
    clip: float = 1.0  # max L2 norm of each example's gradient (all layers together)

    def __post_init__(self) -> None:
        require(self.clip > 0, "defense.clip", self.clip, "must be > 0")


def clip_model(
    dummy: Sequence[Tensor], shared: Sequence[Tensor], cfg: ClipConfig | DPConfig
) -> list[Tensor]:
    """Adaptive model of ``clip`` and of ``dp``'s clipping: the dummy's gradient (all
    layers as one vector) scaled to L2 norm at most the known ``clip``. Exact for one
    example per client (B = 1, the share is the clipped gradient) and for a FedAvg
    update (clipped as a whole). For B > 1 the client clips each example before
    averaging, but the attacker's objective sees only the dummy batch's mean gradient:
    the model clips that mean instead, exact while no example exceeds the clip norm and
    an approximation (a batch clip for per-example clips) once some do. ``dp``'s noise
    is fresh and unknown: nothing models it, the attacker matches its clipped dummy to
    the noisy share. Shapes as the parameters; differentiable in ``dummy``."""
    return [g[0] for g in clip_norm([d[None] for d in dummy], cfg.clip)]


@defense(ClipConfig, strength="clip", per_example=True, model=clip_model)
def clip(
    grads: Sequence[Tensor],
    cfg: ClipConfig,
    *,
    generator: torch.Generator,
    client: Client | None = None,
) -> list[Tensor]:
    """Mean of the per-example gradients clipped to L2 norm ``clip`` (no noise)."""
    total, count = clipped_sum(grads, cfg.clip, client)
    return [g / count for g in total]


@dataclass
class DPConfig(DefenseConfig):
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


def report(steps: Sequence[DPConfig]) -> dict[str, float | str]:
    """What metrics.json records about one or more composed DP releases (a chain may hold
    several): epsilon at the smallest delta, that delta, and the accountant used (the
    first step's; its fallback to RDP is named)."""
    delta = min(c.delta for c in steps)
    eps, used = epsilon([c.noise_multiplier for c in steps], delta, steps[0].accountant)
    return {"epsilon": eps, "delta": delta, "accountant": used}


@defense(
    DPConfig,
    strength="noise_multiplier",
    log_scale=True,
    per_example=True,
    report=report,
    model=clip_model,
)
def dp(
    grads: Sequence[Tensor],
    cfg: DPConfig,
    *,
    generator: torch.Generator,
    client: Client | None = None,
) -> list[Tensor]:
    """Gaussian mechanism: (sum of clipped per-example gradients + N(0, (z*clip)^2)) / B."""
    total, count = clipped_sum(grads, cfg.clip, client)
    std = cfg.noise_multiplier * cfg.clip
    return [
        (g + std * torch.randn(g.shape, generator=generator, dtype=g.dtype).to(g.device)) / count
        for g in total
    ]


def epsilon(noise_multipliers: Sequence[float], delta: float, accountant: str) -> tuple[float, str]:
    """Epsilon at ``delta`` of Gaussian-mechanism releases with these noise multipliers
    (one per release, composed), and the accountant that computed it.

    One release = one step at sample rate 1 in Opacus' accountants. The PRV accountant is
    tight but fails numerically for tiny noise (epsilon in the hundreds or more); then
    the RDP accountant (a valid, looser bound) is used and named in the result. A release
    without noise gives epsilon = inf.
    """
    # Imported here: opacus' package import loads its whole privacy engine (~2 s), which
    # every run, test process and sweep worker would otherwise pay for nothing.
    from opacus.accountants import PRVAccountant, RDPAccountant

    if min(noise_multipliers) == 0:
        return math.inf, accountant
    if accountant == "prv":
        try:
            return _epsilon(PRVAccountant(), noise_multipliers, delta), "prv"
        except RuntimeError as err:  # "Discrete mean differs significantly ..."
            log.warning("PRV accountant failed (%s); using the RDP accountant", err)
    return _epsilon(RDPAccountant(), noise_multipliers, delta), "rdp"


def _epsilon(account: IAccountant, noise_multipliers: Sequence[float], delta: float) -> float:
    account.history = [(z, 1.0, 1) for z in noise_multipliers]  # (multiplier, rate, steps)
    with np.errstate(divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # log(0) warnings inside opacus at sample rate 1
        return float(account.get_epsilon(delta))
