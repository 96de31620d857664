"""A model of your own, outside gradinv_exp: ``model=custom model.target=my_models:tiny_cnn``."""

from __future__ import annotations

import math

from torch import nn


def tiny_cnn(channels: int, num_classes: int, image_size: int) -> nn.Module:
    """Two 5x5 stride-2 convolutions (16 channels) with sigmoids, then a linear layer.

    Images ``(B, channels, image_size, image_size)`` -> logits ``(B, num_classes)``. Smooth
    activations, because the attack differentiates the model's gradient; an ``nn.Linear``
    last, because label recovery (iDLG) reads its gradient.
    """
    side = math.ceil(image_size / 4)  # two stride-2 convolutions with padding 2
    return nn.Sequential(
        nn.Conv2d(channels, 16, kernel_size=5, stride=2, padding=2),
        nn.Sigmoid(),
        nn.Conv2d(16, 16, kernel_size=5, stride=2, padding=2),
        nn.Sigmoid(),
        nn.Flatten(),
        nn.Linear(16 * side * side, num_classes),
    )
