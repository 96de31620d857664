"""The ``model`` group: its schema (``ModelConfig``) and the models under attack, built
with a seeded initialisation, their trained weights (``model.checkpoint``) and
pretraining (``model.pretrain_steps``). Torch loads on first use, so that the schema is
checked before it loads.

Every built-in builder takes ``(channels, num_classes, image_size, activation)`` and
returns an ``nn.Module`` mapping images ``(B, C, H, W)`` to logits ``(B, num_classes)``;
every model ends in an ``nn.Linear`` layer (label recovery reads its gradient).

Two options build what ``model.target`` names and keep that model's own activations
(``model.activation: null``): ``custom``, the user's builder ``module:function`` called
as ``fn(channels, num_classes, image_size)``, and ``torchvision``, a classification
architecture of ``torchvision.models`` by name (``resnet50``), its first convolution
fitted to the data's channels. Trained weights come from ``model.checkpoint`` for them
too.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from omegaconf import MISSING

from gradinv_exp.base import lazy
from gradinv_exp.base.options import (
    ConfigError,
    Registry,
    check_signature,
    not_allowed,
    one_of,
    positive,
    require,
    resolve,
)
from gradinv_exp.client import soft_cross_entropy

if TYPE_CHECKING:
    import torch
    import torchvision
    from torch import Tensor, nn
else:  # loaded on first use: the model group's schema is checked before torch loads
    torch = lazy.module("torch", __name__)
    torchvision = lazy.module("torchvision", __name__)

log = logging.getLogger(__name__)

# (channels, num_classes, image_size, activation) -> model: a built-in's builder
Builder = Callable[[int, int, int, str], "nn.Module"]
# (channels, num_classes, image_size) -> model with its own activations: custom, torchvision
Shaped = Callable[[int, int, int], "nn.Module"]


@dataclass(frozen=True)
class Architecture:
    """One option of the ``model`` group. A built-in has ``build``; an option that builds
    what ``model.target`` names has ``load(target)``, which returns a builder of that
    model with its own activations. Defaults (activation, init) are fields of its YAML,
    ``conf/model/<name>.yaml``. How the attack runs on it (``attacks.backend.choose``,
    measured: docs/performance.md): ``compiles``, its closure compiles in under a minute
    and runs faster compiled; ``native_conv``, one eager problem runs faster on torch's
    native convolutions than on oneDNN (small convolutions)."""

    name: str
    build: Builder | None = None
    load: Callable[[str], Shaped] | None = None
    compiles: bool = False
    native_conv: bool = False


MODELS: Registry[Architecture] = Registry("model")


@dataclass
class ModelConfig:
    """``name`` selects the builder in ``models.MODELS``; shapes come from the dataset.

    The attacked model is the seeded init, then the ``checkpoint``'s weights if given,
    then ``pretrain_steps`` of SGD: real clients share gradients of partly trained
    models, not of a random init.
    """

    name: str = MISSING
    # model=custom: your builder, module:function; model=torchvision: an architecture's name
    target: Optional[str] = None
    activation: Optional[str] = "sigmoid"  # replaces a built-in's; null: the model's own
    init: str = "uniform"  # uniform: U(-init_range, init_range); default: the layers' own
    init_range: float = 0.5  # every weight and bias ~ U(-init_range, init_range)
    checkpoint: Optional[str] = None  # state dict of this model (torch.save(m.state_dict()))
    pretrain_steps: int = 0  # full-batch SGD steps on images other than the attacked ones
    pretrain_lr: float = 0.01
    pretrain_images: int = 8  # the first of the server's own images (never attacked)
    # pretrain with batch norm in train mode, so its running statistics learn the data's
    # (false: eval mode throughout, running statistics stay those of the init: 0 and 1)
    pretrain_bn: bool = False

    def __post_init__(self) -> None:
        if self.activation is not None:  # which options need null: models.construct
            one_of("model.activation", self.activation, list(ACTIVATIONS))
        one_of("model.init", self.init, ("uniform", "default"))
        positive("model.init_range", self.init_range)
        require(
            self.checkpoint is None or self.checkpoint.strip() != "",
            "model.checkpoint",
            self.checkpoint,
            "must be null or the path of a state dict file",
        )
        require(
            self.pretrain_steps >= 0, "model.pretrain_steps", self.pretrain_steps, "must be >= 0"
        )
        positive("model.pretrain_lr", self.pretrain_lr)
        require(
            self.pretrain_images >= 1, "model.pretrain_images", self.pretrain_images, "must be >= 1"
        )


def model(
    name: str, *, compiles: bool = False, native_conv: bool = False
) -> Callable[[Builder], Builder]:
    """Register the decorated builder as model ``name``."""

    def register(fn: Builder) -> Builder:
        MODELS.add(Architecture(name, fn, compiles=compiles, native_conv=native_conv))
        return fn

    return register


# model.activation's options: the name of each one's torch.nn module (names, so that the
# model group's schema checks them before torch loads)
ACTIVATIONS = {"sigmoid": "Sigmoid", "relu": "ReLU", "tanh": "Tanh"}


def activation_layer(name: str) -> nn.Module:
    """A new layer of activation ``name`` (one of ``ACTIVATIONS``)."""
    return getattr(torch.nn, ACTIVATIONS[name])()


def _lenet(
    strides: Sequence[int], channels: int, num_classes: int, image_size: int, activation: str
) -> nn.Module:
    """12-channel k5/p2 convolutions with the given strides, then one linear layer."""
    layers: list[nn.Module] = []
    c_in, total = channels, 1
    for s in strides:
        layers += [
            torch.nn.Conv2d(c_in, 12, kernel_size=5, padding=2, stride=s),
            activation_layer(activation),
        ]
        c_in, total = 12, total * s
    side = -(-image_size // total)  # ceil: a stride-2 conv with padding 2 rounds up
    return torch.nn.Sequential(
        *layers, torch.nn.Flatten(), torch.nn.Linear(12 * side * side, num_classes)
    )


@model("lenet", compiles=True, native_conv=True)
def lenet(channels: int, num_classes: int, image_size: int, activation: str) -> nn.Module:
    """The original notebook's LeNet: convs with strides 2, 2, 1, 1 (768 features at 32x32)."""
    return _lenet((2, 2, 1, 1), channels, num_classes, image_size, activation)


@model("lenet_dlg", compiles=True, native_conv=True)
def lenet_dlg(channels: int, num_classes: int, image_size: int, activation: str) -> nn.Module:
    """The original DLG LeNet: convs with strides 2, 2, 1 (768 features at 32x32)."""
    return _lenet((2, 2, 1), channels, num_classes, image_size, activation)


@model("linear", compiles=True)
def linear(channels: int, num_classes: int, image_size: int, activation: str) -> nn.Module:
    """Softmax regression: flatten, one linear layer (no activation to replace)."""
    return torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(channels * image_size * image_size, num_classes)
    )


MLP_WIDTH = 1024  # two hidden layers of this width


@model("mlp", compiles=True)
def mlp(channels: int, num_classes: int, image_size: int, activation: str) -> nn.Module:
    """Fully connected: flatten, two hidden layers of ``MLP_WIDTH``, linear classifier."""
    width = MLP_WIDTH
    return torch.nn.Sequential(
        torch.nn.Flatten(),
        torch.nn.Linear(channels * image_size * image_size, width), activation_layer(activation),
        torch.nn.Linear(width, width), activation_layer(activation),
        torch.nn.Linear(width, num_classes),
    )  # fmt: skip


@model("convnet", compiles=True)
def convnet(channels: int, num_classes: int, image_size: int, activation: str) -> nn.Module:
    """A small CIFAR ConvNet without batch norm: 3x3 convs 32-64-(pool)-128-(pool)-128,
    global average pooling, one linear layer (~0.3 M parameters)."""
    return torch.nn.Sequential(
        torch.nn.Conv2d(channels, 32, 3, padding=1), activation_layer(activation),
        torch.nn.Conv2d(32, 64, 3, padding=1), activation_layer(activation),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(64, 128, 3, padding=1), activation_layer(activation),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(128, 128, 3, padding=1), activation_layer(activation),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
        torch.nn.Linear(128, num_classes),
    )  # fmt: skip


@model("resnet18")
def resnet18(channels: int, num_classes: int, image_size: int, activation: str) -> nn.Module:
    """torchvision's ResNet-18 adapted to small images: 3x3 stride-1 stem, no max-pool.

    Its ReLUs are replaced by ``activation``. It has batch norm: ``build`` returns it in
    eval mode, so BN uses its running statistics (fresh: mean 0, variance 1) and each
    image's gradient does not depend on the other images of the batch.
    """
    net = torchvision.models.resnet18(num_classes=num_classes)
    net.conv1 = torch.nn.Conv2d(channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    torch.nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
    net.maxpool = torch.nn.Identity()
    for parent in list(net.modules()):
        for name, child in parent.named_children():
            if isinstance(child, torch.nn.ReLU):
                setattr(parent, name, activation_layer(activation))
    return net


def user_model(target: str) -> Shaped:
    """``model=custom``: the user's builder ``target`` (``module:function``), called as
    ``fn(channels, num_classes, image_size)``; it must return an ``nn.Module``."""
    fn = resolve("model.target", target)
    check_signature("model.target", target, fn, "fn(channels, num_classes, image_size)", 3, 10, 32)

    def build(channels: int, num_classes: int, image_size: int) -> nn.Module:
        net = fn(channels, num_classes, image_size)
        if not isinstance(net, torch.nn.Module):
            why = f"it must return an nn.Module, returned {type(net).__name__}"
            raise not_allowed("model.target", target, why)
        return net

    return build


def torchvision_model(arch: str) -> Shaped:
    """``model=torchvision``: classification architecture ``arch`` of torchvision (random
    weights, ``num_classes`` outputs), its first convolution fitted to ``channels``."""
    one_of("model.target", arch, torchvision.models.list_models(module=torchvision.models))

    def build(channels: int, num_classes: int, image_size: int) -> nn.Module:
        net = torchvision.models.get_model(arch, weights=None, num_classes=num_classes)
        return net if channels == 3 else with_input_channels(net, channels)

    return build


def with_input_channels(net: nn.Module, channels: int) -> nn.Module:
    """``net`` with its first 3-channel convolution replaced by one taking ``channels``."""
    for parent in net.modules():
        for name, child in parent.named_children():
            if isinstance(child, torch.nn.Conv2d) and child.in_channels == 3:
                conv = torch.nn.Conv2d(
                    channels,
                    child.out_channels,
                    kernel_size=child.kernel_size,
                    stride=child.stride,
                    padding=child.padding,
                    dilation=child.dilation,
                    groups=child.groups,
                    bias=child.bias is not None,
                    padding_mode=child.padding_mode,
                )
                setattr(parent, name, conv)
                return net
    return net


MODELS.add(Architecture("custom", load=user_model))
MODELS.add(Architecture("torchvision", load=torchvision_model))


def construct(
    name: str,
    channels: int,
    num_classes: int,
    image_size: int,
    activation: str | None,
    target: str | None = None,
) -> nn.Module:
    """Model ``name`` as its builder makes it (before the seeded init). A ConfigError when
    ``target`` or ``activation`` do not fit the option: a built-in takes no target and
    one of ``ACTIVATIONS``; custom and torchvision need a target and keep their own
    activations (``null``)."""
    entry = MODELS[name]
    targeted = ", ".join(e.name for e in MODELS if e.load is not None)
    if entry.build is not None:
        require(target is None, "model.target", target, f"only model={targeted} take one")
        one_of("model.activation", str(activation), list(ACTIVATIONS))
        return entry.build(channels, num_classes, image_size, str(activation))
    assert entry.load is not None
    require(target is not None, "model.target", target, f"model={name} needs one")
    require(
        activation is None,
        "model.activation",
        activation,
        f"must be null: model={name} keeps its own activations",
    )
    return entry.load(str(target))(channels, num_classes, image_size)


def init_uniform(net: nn.Module, bound: float, generator: torch.Generator) -> None:
    """Every weight and bias ~ U(-bound, bound), drawn from ``generator`` (DLG's init)."""
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.rand(p.shape, generator=generator) * 2 * bound - bound)


def build(
    name: str,
    *,
    channels: int,
    num_classes: int,
    image_size: int,
    activation: str | None,
    init: str = "uniform",
    init_range: float = 0.5,
    generator: torch.Generator,
    target: str | None = None,
) -> nn.Module:
    """Build model ``name`` (``target``: see ``construct``) on the CPU in eval mode, seeded
    (move it afterwards).

    ``init="default"`` keeps the builder's own init (PyTorch's / torchvision's / the
    user's), drawn from torch's global RNG seeded with ``generator.initial_seed()``
    inside ``fork_rng`` (the caller's RNG state is untouched); ``"uniform"`` then
    overwrites every weight and bias with U(-init_range, init_range) from ``generator``
    (DLG's init). Eval mode matters for batch norm (see ``resnet18``) and dropout.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(generator.initial_seed())
        net = construct(name, channels, num_classes, image_size, activation, target)
    if init == "uniform":
        init_uniform(net, init_range, generator)
    return net.eval()


@functools.lru_cache(maxsize=64)
def check_fits(
    name: str,
    channels: int,
    num_classes: int,
    image_size: int,
    activation: str | None,
    target: str | None = None,
) -> None:
    """ConfigError unless model ``name`` (``target``) maps a ``(1, channels, image_size,
    image_size)`` probe image to finite ``(1, num_classes)`` logits: one forward pass of
    an unseeded model (cached, so a sweep pays it once per combination), run before any
    job starts."""
    key, value = ("model.name", name) if target is None else ("model.target", target)
    try:
        net = construct(name, channels, num_classes, image_size, activation, target).eval()
        probe = torch.rand((1, channels, image_size, image_size), generator=torch.Generator())
        with torch.no_grad():
            logits = net(probe)
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        problem = None if shape == (1, num_classes) else f"it gives logits of shape {shape}"
        if problem is None and not bool(torch.isfinite(logits).all()):
            problem = "its logits on a probe image are not finite"
    except ConfigError:
        raise
    except Exception as err:  # e.g. a feature map shrunk to nothing by the model's strides
        text = str(err).strip()
        problem = f"{type(err).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")
    if problem is not None:
        raise ConfigError(
            f"{key}={value!r} is not allowed with dataset channels={channels}, "
            f"image_size={image_size}, num_classes={num_classes}: {problem}"
        )


# --- trained weights ----------------------------------------------------------------
# A checkpoint is a state dict of the model as ``build`` makes it (without the dataset's
# normalisation in front), saved with ``torch.save(model.state_dict(), PATH)``. It is read
# with ``torch.load(weights_only=True)`` only: a checkpoint is a file from somebody else,
# and a full pickle can run any code when loaded.

CHECKPOINT_KEY = "model.checkpoint"


def _checkpoint_error(path: str, problem: str) -> ConfigError:
    return ConfigError(f"{CHECKPOINT_KEY}={path!r} is not allowed: {problem}")


@functools.lru_cache(maxsize=4)
def _read(file: Path, mtime_ns: int, size: int) -> dict[str, Tensor]:
    """The file's state dict (cached by path, mtime and size: preflight checks every job
    of a sweep, and they usually share one checkpoint)."""
    state = torch.load(file, map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise TypeError(f"expected a state dict (names -> tensors), found {type(state).__name__}")
    return dict(state)


def read_checkpoint(path: str) -> dict[str, Tensor]:
    """Load the state dict at ``path``; ConfigError (one line naming the file) when it is
    missing, unreadable, not a state dict, or refused by the safe loader."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise _checkpoint_error(path, f"no such file ({file.resolve()})")
    stat = file.stat()
    try:
        return _read(file.resolve(), stat.st_mtime_ns, stat.st_size)
    except Exception as err:  # UnpicklingError (unsafe/corrupt), RuntimeError, TypeError ...
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise _checkpoint_error(
            path, f"not a loadable state dict ({type(err).__name__}: {first})"
        ) from None


def mismatch(expected: Mapping[str, Tensor], state: Mapping[str, Tensor]) -> str | None:
    """The first difference between the model's state dict and the file's, or None."""
    for key, value in expected.items():
        if key not in state:
            return f"missing parameter {key!r}"
        if tuple(state[key].shape) != tuple(value.shape):
            return (
                f"{key!r} has shape {tuple(state[key].shape)} but the model needs "
                f"{tuple(value.shape)} (check model.name and dataset channels/image_size/"
                f"num_classes)"
            )
    extra = sorted(set(state) - set(expected))
    return f"unexpected parameter {extra[0]!r}" if extra else None


def load_checkpoint(net: nn.Module, path: str) -> None:
    """Copy the checkpoint's weights into ``net`` (strict: every name and shape must match)."""
    state = read_checkpoint(path)
    problem = mismatch(net.state_dict(), state)
    if problem is not None:
        raise _checkpoint_error(path, problem)
    net.load_state_dict(state, strict=True)


# --- pretraining --------------------------------------------------------------------


def pretrain(
    net: nn.Module, x: Tensor, onehot: Tensor, *, steps: int, lr: float, batch_norm: bool = False
) -> list[float]:
    """``steps`` of full-batch SGD on images ``x`` ``(N, C, H, W)`` with label distributions
    ``onehot`` ``(N, num_classes)``, in place, on the client's soft cross-entropy: real
    clients share gradients of models trained for a while, not of a random init. Nothing
    is sampled, so the seed alone fixes the trained model. Returns the ``steps + 1`` losses
    before each step and after the last; the log gives the first and the last.

    ``batch_norm``: the batch norm layers train as in normal training (batch statistics,
    running statistics updated with their momentum), then return to eval mode; without
    it they stay in eval mode and keep their running statistics."""
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    norms = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    losses = []
    for m in norms if batch_norm else []:
        m.train()
    for _ in range(steps):
        opt.zero_grad()
        loss = soft_cross_entropy(net(x), onehot)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    for m in norms:
        m.eval()
    with torch.no_grad():
        losses.append(float(soft_cross_entropy(net(x), onehot)))
    log.info("pretrained %d steps: loss %.4f -> %.4f", steps, losses[0], losses[-1])
    return losses
