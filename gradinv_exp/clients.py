"""A federated client as the defenses that need more than its batch gradient see it.

DP's per-example clipping needs each example's own gradient, Soteria needs the model and
the images to measure how the representation depends on the input; both take a
``Client``. Every other defense ignores it.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from gradinv_exp.batched import soft_cross_entropy


@dataclass(frozen=True)
class Client:
    """The model whose gradient is shared and the batch it was computed on."""

    model: nn.Module
    images: Tensor  # (B, C, H, W) in [0, 1]
    targets: Tensor  # (B, num_classes) label distributions (one-hot for true labels)

    @property
    def batch_size(self) -> int:
        return len(self.images)


def per_example_gradients(client: Client) -> list[Tensor]:
    """Each example's parameter gradient: one ``(B, *param.shape)`` tensor per parameter,
    in ``model.parameters()`` order; their mean over B is the batch gradient.

    Uses torch.func (``vmap(grad)``): one vectorised pass instead of B backward passes.
    """
    params = {k: v.detach() for k, v in client.model.named_parameters()}

    def loss(p: dict[str, Tensor], x: Tensor, t: Tensor) -> Tensor:
        return soft_cross_entropy(functional_call(client.model, p, (x[None],)), t[None])

    per_example = vmap(grad(loss), in_dims=(None, 0, 0))(params, client.images, client.targets)
    return [per_example[k] for k in params]
