"""The federated client: what it shares, and the attacker's differentiable simulation of it.

FedSGD: a client holding images ``(B, C, H, W)`` in [0, 1] with label distributions
``(B, num_classes)`` shares the parameter gradient of its mean soft cross-entropy at the
current weights. The attacker simulates that same computation on dummy data, for T
independent problems at once (``simulate``), with a graph back to the dummies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from torch import Tensor, nn


def soft_cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    """mean over the batch of sum(-target * log_softmax(logits)); target rows sum to 1."""
    return torch.mean(torch.sum(-target * torch.log_softmax(logits, dim=-1), dim=-1))


@dataclass(frozen=True)
class Client:
    """The model whose gradient is shared and the batch it was computed on (defenses that
    need more than the gradient see this: per-example clipping, Soteria)."""

    model: nn.Module
    images: Tensor  # (B, C, H, W) in [0, 1]
    targets: Tensor  # (B, num_classes) label distributions (one-hot for true labels)

    @property
    def batch_size(self) -> int:
        return len(self.images)


def gradient(client: Client) -> list[Tensor]:
    """What a FedSGD client shares: one tensor per parameter, in ``model.parameters()``
    order, of its mean loss over the batch."""
    loss = soft_cross_entropy(client.model(client.images), client.targets)
    return list(torch.autograd.grad(loss, list(client.model.parameters())))


def per_example_gradients(client: Client) -> list[Tensor]:
    """Each example's parameter gradient: one ``(B, *param.shape)`` tensor per parameter,
    in ``model.parameters()`` order; their mean over B is the batch gradient.

    Uses torch.func (``vmap(grad)``): one vectorised pass instead of B backward passes.
    """
    model = client.model
    params = {k: v.detach() for k, v in model.named_parameters()}

    def loss(p: dict[str, Tensor], x: Tensor, t: Tensor) -> Tensor:
        return soft_cross_entropy(torch.func.functional_call(model, p, (x[None],)), t[None])

    per_example = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0, 0))(
        params, client.images, client.targets
    )
    return [per_example[k] for k in params]


def simulate(model: nn.Module, images: Tensor, labels: Tensor) -> list[Tensor]:
    """Each problem's FedSGD gradient, differentiable in its data: the attacker's model of
    the client, for N independent problems sharing the model.

    ``images`` ``(N, B, C, H, W)``, ``labels`` ``(N, B, num_classes)`` label distributions.
    Returns one ``(N, *param.shape)`` tensor per parameter, with a graph back to ``images``
    and ``labels`` (for the outer backward), whatever the grad mode. N > 1 runs as
    ``vmap(grad(loss))`` over the problem axis (one batched forward/backward, differentiable
    again); N = 1 takes the plain autograd path, where vmap adds ~30% per closure and has
    nothing to batch (same result, see tests).
    """
    if len(images) == 1:
        with torch.enable_grad():
            loss = soft_cross_entropy(model(images[0]), labels[0])
            grads = torch.autograd.grad(loss, list(model.parameters()), create_graph=True)
        return [g[None] for g in grads]
    params = {name: p.detach() for name, p in model.named_parameters()}

    def loss(p: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        return soft_cross_entropy(torch.func.functional_call(model, p, (x,)), y)

    return list(
        torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0, 0))(
            params, images, labels
        ).values()
    )
