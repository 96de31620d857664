"""Per-trial parameter gradients for T independent attacks at once.

The T trials share the model and differ in their dummy data, so the per-trial gradient is
``vmap(grad(loss))`` over the trial axis (torch.func): one batched forward/backward for all
trials, differentiable again (create_graph) so that one double-backward of the summed
objectives gives every trial its own gradient. For T = 1 the plain autograd path is used:
vmap adds ~30% per closure there and has nothing to batch (same result, see
tests/test_batched.py).

Objectives (``objectives.py``) are per-trial functions; ``attacks.matching_loss`` vmaps
them over the trial axis.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap


def soft_cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    """mean over the batch of sum(-target * log_softmax(logits)); target rows sum to 1."""
    return torch.mean(torch.sum(-target * torch.log_softmax(logits, dim=-1), dim=-1))


def gradients(model: nn.Module, images: Tensor, labels: Tensor) -> list[Tensor]:
    """Each trial's parameter gradient of its soft cross-entropy, differentiable in the data.

    ``images`` ``(T, B, C, H, W)``, ``labels`` ``(T, B, num_classes)`` label distributions.
    Returns one ``(T, *param.shape)`` tensor per parameter of ``model``, with a graph back
    to ``images`` and ``labels`` (for the outer backward), whatever the grad mode.
    """
    if len(images) == 1:
        with torch.enable_grad():
            loss = soft_cross_entropy(model(images[0]), labels[0])
            grads = torch.autograd.grad(loss, list(model.parameters()), create_graph=True)
        return [g[None] for g in grads]
    params = {name: p.detach() for name, p in model.named_parameters()}

    def loss(p: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        return soft_cross_entropy(functional_call(model, p, (x,)), y)

    return list(vmap(grad(loss), in_dims=(None, 0, 0))(params, images, labels).values())
