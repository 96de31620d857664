"""The user's own code for tests/test_plugins.py: one good example of each kind (the plugin
example in scripts/plugin_example/ is another) and one bad one per preflight check."""

from __future__ import annotations

import torch
from torch import nn


def scale(grads, *, generator, client, factor=0.5):
    """A defense: every entry times ``factor``."""
    return [g * factor for g in grads]


def drop_small(grads, *, generator, client):
    """A sparsifying defense: zero the entries below each tensor's median |g|."""
    return [torch.where(g.abs() < g.abs().median(), 0.0, g) for g in grads]


def weighted_l2(grads, target):
    """An objective: squared L2 distance, layer i weighted by i + 1."""
    return sum((i + 1) * ((g - t) ** 2).sum() for i, (g, t) in enumerate(zip(grads, target)))


def smooth(images):
    """A prior: mean squared vertical difference of ``(B, C, H, W)`` images."""
    return (images[..., 1:, :] - images[..., :-1, :]).pow(2).mean()


def linear_model(channels, num_classes, image_size):
    """A model: one linear layer on the flattened image."""
    return nn.Sequential(nn.Flatten(), nn.Linear(channels * image_size**2, num_classes))


# --- bad ones: each fails one preflight check ---------------------------------------

not_a_function = 3


def defense_without_keywords(grads):
    return grads


def defense_reshaping(grads, *, generator, client):
    return [g.flatten() for g in grads]


def defense_nan(grads, *, generator, client):
    return [g * float("nan") for g in grads]


def defense_in_place(grads, *, generator, client):
    for g in grads:
        g.mul_(0.5)
    return [g.clone() for g in grads]


def objective_per_layer(grads, target):
    return torch.stack([((g - t) ** 2).sum() for g, t in zip(grads, target)])


def objective_detached(grads, target):
    return weighted_l2(grads, target).detach()


def objective_item(grads, target):
    return torch.tensor(weighted_l2(grads, target).item())


def prior_two_arguments(images, weights):
    return images.sum()


def model_two_arguments(channels, num_classes):
    return linear_model(channels, num_classes, 32)


def model_not_a_module(channels, num_classes, image_size):
    return "a model"


def model_wrong_logits(channels, num_classes, image_size):
    return linear_model(channels, num_classes + 1, image_size)


def model_without_linear(channels, num_classes, image_size):
    return nn.Sequential(nn.Conv2d(channels, num_classes, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())


def model_nan(channels, num_classes, image_size):
    net = linear_model(channels, num_classes, image_size)
    with torch.no_grad():
        net[1].bias.fill_(float("nan"))
    return net
