"""Models under attack, built with a seeded initialisation.

Every builder takes ``(channels, num_classes, image_size, activation)`` and returns an
``nn.Module`` mapping images ``(B, C, H, W)`` to logits ``(B, num_classes)``; every model
ends in an ``nn.Linear`` layer (label recovery reads its gradient).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
import torchvision
from torch import nn

from gradinv_exp.checks import ConfigError

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


MLP_WIDTH = 1024  # two hidden layers of this width


def mlp(channels: int, num_classes: int, image_size: int, activation: str) -> nn.Module:
    """Fully connected: flatten, two hidden layers of ``MLP_WIDTH``, linear classifier."""
    width, act = MLP_WIDTH, ACTIVATIONS[activation]
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(channels * image_size * image_size, width), act(),
        nn.Linear(width, width), act(),
        nn.Linear(width, num_classes),
    )  # fmt: skip


def convnet(channels: int, num_classes: int, image_size: int, activation: str) -> nn.Module:
    """A small CIFAR ConvNet without batch norm: 3x3 convs 32-64-(pool)-128-(pool)-128,
    global average pooling, one linear layer (~0.3 M parameters)."""
    act = ACTIVATIONS[activation]
    return nn.Sequential(
        nn.Conv2d(channels, 32, 3, padding=1), act(),
        nn.Conv2d(32, 64, 3, padding=1), act(),
        nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 3, padding=1), act(),
        nn.MaxPool2d(2),
        nn.Conv2d(128, 128, 3, padding=1), act(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(128, num_classes),
    )  # fmt: skip


def resnet18(channels: int, num_classes: int, image_size: int, activation: str) -> nn.Module:
    """torchvision's ResNet-18 adapted to small images: 3x3 stride-1 stem, no max-pool.

    Its ReLUs are replaced by ``activation``. It has batch norm: ``build`` returns it in
    eval mode, so BN uses its running statistics (fresh: mean 0, variance 1) and each
    image's gradient does not depend on the other images of the batch.
    """
    model = torchvision.models.resnet18(num_classes=num_classes)
    model.conv1 = nn.Conv2d(channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if isinstance(child, nn.ReLU):
                setattr(parent, name, ACTIVATIONS[activation]())
    return model


MODELS: dict[str, Callable[..., nn.Module]] = {
    "lenet": lenet,
    "lenet_dlg": lenet_dlg,
    "mlp": mlp,
    "convnet": convnet,
    "resnet18": resnet18,
}


def init_uniform(model: nn.Module, bound: float, generator: torch.Generator) -> None:
    """Every weight and bias ~ U(-bound, bound), drawn from ``generator`` (DLG's init)."""
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.rand(p.shape, generator=generator) * 2 * bound - bound)


INITS = ("uniform", "default")


def build(
    name: str,
    *,
    channels: int,
    num_classes: int,
    image_size: int,
    activation: str,
    init: str = "uniform",
    init_range: float = 0.5,
    generator: torch.Generator,
) -> nn.Module:
    """Build model ``name`` on the CPU in eval mode, seeded (move it afterwards).

    ``init="default"`` keeps the builder's own init (PyTorch's / torchvision's), drawn
    from torch's global RNG seeded with ``generator.initial_seed()`` inside ``fork_rng``
    (the caller's RNG state is untouched); ``"uniform"`` then overwrites every weight and
    bias with U(-init_range, init_range) from ``generator`` (DLG's init). Eval mode only
    matters for batch norm (see ``resnet18``).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(generator.initial_seed())
        model = MODELS[name](channels, num_classes, image_size, activation)
    if init == "uniform":
        init_uniform(model, init_range, generator)
    return model.eval()


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
