"""A defense of your own, outside gradinv_exp: soft pruning.

Soft pruning, as cited from Balunovic et al. ("Bayesian Framework for Gradient Leakage",
ICLR 2022): a random Bernoulli mask drops each gradient entry with probability ``p`` and
Laplace noise of scale ``scale`` is added to every entry. Written from that description,
not checked against the paper's code. Unlike magnitude pruning (the built-in ``prune``)
the dropped entries are random, and the noise hides which entries were dropped.

Used as ``defense=custom defense.target=my_defenses:soft_prune +defense.params.p=0.5
defense.strength=p`` (or the preset ``defense=soft_prune`` in conf/defense/).
"""

from __future__ import annotations

import torch


def soft_prune(
    grads: list[torch.Tensor],
    *,
    generator: torch.Generator,
    client: object,
    p: float = 0.5,
    scale: float = 1e-4,
) -> list[torch.Tensor]:
    """``g * m + Laplace(0, scale)`` per tensor, ``m ~ Bernoulli(1 - p)`` per entry.

    ``grads``: one tensor per model parameter, left unchanged. ``generator``: the run's
    seeded stream; every draw comes from it, so a run is reproducible. ``client`` (the
    model and batch behind the gradient) is not needed here.
    """
    out = []
    for g in grads:
        keep = torch.rand(g.shape, generator=generator) >= p
        u = torch.rand(g.shape, generator=generator) - 0.5  # inverse CDF of the Laplace
        laplace = -scale * torch.sign(u) * torch.log1p(-2 * u.abs().clamp(max=0.5 - 1e-7))
        out.append(g * keep.to(g.device) + laplace.to(g.device, g.dtype))
    return out
