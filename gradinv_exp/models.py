"""Models under attack, built with a seeded initialisation.

Every builder takes ``(channels, num_classes, image_size, activation)`` and returns an
``nn.Module`` mapping images ``(B, C, H, W)`` to logits ``(B, num_classes)``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
from torch import nn

from gradinv_exp.config import ConfigError

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "sigmoid": nn.Sigmoid,
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
}


def _conv_stack(
    channels: int, strides: Sequence[int], activation: str
) -> tuple[list[nn.Module], int]:
    """12-channel k5/p2 convolutions with the given strides; returns layers and total stride."""
    layers: list[nn.Module] = []
    c_in = channels
    for s in strides:
        layers += [
            nn.Conv2d(c_in, 12, kernel_size=5, padding=2, stride=s),
            ACTIVATIONS[activation](),
        ]
        c_in = 12
    total = 1
    for s in strides:
        total *= s
    return layers, total


def _lenet(
    strides: Sequence[int], channels: int, num_classes: int, image_size: int, activation: str
) -> nn.Module:
    layers, total = _conv_stack(channels, strides, activation)
    side = -(-image_size // total)  # ceil: a stride-2 conv with padding 2 rounds up
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(12 * side * side, num_classes))


def lenet(channels: int, num_classes: int, image_size: int, activation: str) -> nn.Module:
    """The seed's LeNet: convs with strides 2, 2, 1, 1 (768 features at 32x32)."""
    return _lenet((2, 2, 1, 1), channels, num_classes, image_size, activation)


def lenet_dlg(channels: int, num_classes: int, image_size: int, activation: str) -> nn.Module:
    """The original DLG LeNet: convs with strides 2, 2, 1 (768 features at 32x32)."""
    return _lenet((2, 2, 1), channels, num_classes, image_size, activation)


MODELS: dict[str, Callable[..., nn.Module]] = {"lenet": lenet, "lenet_dlg": lenet_dlg}


def init_uniform(model: nn.Module, bound: float, generator: torch.Generator) -> None:
    """Every weight and bias ~ U(-bound, bound), drawn from ``generator`` (DLG's init)."""
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.rand(p.shape, generator=generator) * 2 * bound - bound)


def build(
    name: str,
    *,
    channels: int,
    num_classes: int,
    image_size: int,
    activation: str,
    init_range: float,
    generator: torch.Generator,
) -> nn.Module:
    """Build model ``name`` on the CPU with a seeded uniform init (move it afterwards)."""
    model = MODELS[name](channels, num_classes, image_size, activation)
    init_uniform(model, init_range, generator)
    return model


@functools.lru_cache(maxsize=64)
def check_fits(
    name: str, channels: int, num_classes: int, image_size: int, activation: str
) -> None:
    """ConfigError unless model ``name`` maps a ``(1, channels, image_size, image_size)``
    image to ``(1, num_classes)`` logits: one forward pass of an unseeded model (cached,
    so a sweep pays it once per combination), run before any job starts."""
    try:
        model = MODELS[name](channels, num_classes, image_size, activation).eval()
        with torch.no_grad():
            shape = tuple(model(torch.zeros(1, channels, image_size, image_size)).shape)
        problem = None if shape == (1, num_classes) else f"it gives logits of shape {shape}"
    except Exception as err:  # e.g. a feature map shrunk to nothing by the model's strides
        text = str(err).strip()
        problem = f"{type(err).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")
    if problem is not None:
        raise ConfigError(
            f"model.name={name!r} is not allowed with dataset channels={channels}, "
            f"image_size={image_size}, num_classes={num_classes}: {problem}"
        )
