"""Soteria (Sun et al., CVPR 2021): perturb the representation layer's gradient.

The representation r (B, F) is the input of the model's last fully-connected layer; its
weight gradient is (K, F), column j being sum_b delta_b * r_bj. Features whose r depends
least on the input relative to their size, i.e. with the smallest
    score_j = sum_b ||d r_bj / d x_b|| / |r_bj|,
are the ones an attacker can invert most easily from that column, so Soteria zeroes the
columns of the ``percentile`` % of features with the smallest score. A feature whose
representation is 0 for every image (a dead ReLU) carries no information: its column is
zero already, so it is not a candidate and the percentile applies to the other features
(counting dead features as pruned made Soteria a no-op on ReLU models, where they are
often more than 40%). Every other tensor is shared unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gradinv_exp.base import lazy
from gradinv_exp.base.options import require
from gradinv_exp.defenses.registry import DefenseConfig, defense, visible_mask

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

    from gradinv_exp.client import Client
else:
    torch = lazy.module("torch", __name__)  # loaded on first use (see base/lazy.py)


@dataclass
class SoteriaConfig(DefenseConfig):
    name: str = "soteria"
    percentile: float = 40.0  # % of representation features whose FC gradient column is zeroed

    def __post_init__(self) -> None:
        require(
            0 <= self.percentile <= 100,
            "defense.percentile",
            self.percentile,
            "must be in [0, 100]",
        )


def representation_layer(model: nn.Module) -> tuple[nn.Linear, int]:
    """The model's last ``nn.Linear`` and the index of its weight in ``model.parameters()``."""
    linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    index = next(i for i, p in enumerate(model.parameters()) if p is linear.weight)
    return linear, index


def feature_scores(client: Client) -> tuple[Tensor, Tensor]:
    """``score_j`` (F,) for every representation feature (see the module docstring), and
    ``represented`` (F,) bool: r_bj != 0 for some image b (the candidates for pruning).

    One batched backward pass (``is_grads_batched``) gives all F Jacobian rows
    d r_bj / d x_b at once; examples are independent, so summing over b is exact. An image
    whose r_bj is 0 adds nothing to score_j.
    """
    linear, _ = representation_layer(client.model)
    captured: list[Tensor] = []
    hook = linear.register_forward_hook(lambda _m, inputs, _out: captured.append(inputs[0]))
    x = client.images.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        try:
            client.model(x)
        finally:
            hook.remove()
        r = captured[0]  # (B, F)
        features = r.shape[1]
        onehots = torch.eye(features, dtype=r.dtype, device=r.device)[:, None, :].expand(
            features, *r.shape
        )  # (F, B, F)
        (jac,) = torch.autograd.grad(r, x, grad_outputs=onehots, is_grads_batched=True)
    norms = jac.flatten(2).norm(dim=2).T  # (B, F): ||d r_bj / d x_b||
    r = r.detach().abs()
    ratio = torch.where(r > 0, norms / r.clamp_min(1e-30), torch.zeros_like(r))
    return ratio.sum(0), (r > 0).any(0)


@defense(SoteriaConfig, strength="percentile", model=visible_mask)
def soteria(
    grads: Sequence[Tensor],
    cfg: SoteriaConfig,
    *,
    generator: torch.Generator,
    client: Client | None = None,
) -> list[Tensor]:
    """Zero the FC weight-gradient columns of the floor(percentile/100 * F') features with
    the smallest score, F' = the features with a nonzero representation; needs the
    ``client`` (model and images) to score the features."""
    if client is None:
        raise ValueError("soteria needs the client's model and images (pass client=...)")
    _, index = representation_layer(client.model)
    scores, represented = feature_scores(client)
    candidates = torch.nonzero(represented).flatten()
    count = math.floor(cfg.percentile * len(candidates) / 100)
    keep = torch.ones_like(scores)
    keep[candidates[scores[candidates].argsort()[:count]]] = 0
    out = [g.clone() for g in grads]
    out[index] = out[index] * keep.to(out[index].dtype)
    return out
