"""Partly train the attacked model before the attack: ``model.pretrain_steps``.

Real clients share gradients of models that have already been trained for a while; a
random init is the easy case for an attacker. Pretraining uses ``model.pretrain_images``
images of the same data set that the attack does NOT target: the ones right after the
attacked range ``[index, index + trials * batch_size)``, wrapping around the data set,
with full-batch SGD on the same soft cross-entropy the client uses. It is deterministic
(no sampling), so the seed alone fixes the trained model.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor, nn

from gradinv_exp import batched, data
from gradinv_exp.checks import ConfigError
from gradinv_exp.config import DatasetConfig

log = logging.getLogger(__name__)


def check(name: str, attacked: int, count: int, size: int | None = None) -> None:
    """ConfigError unless ``count`` training images fit beside the ``attacked`` ones in data
    set ``name`` of ``size`` images (default: its known size; unknown -> no check)."""
    size = data.SIZES.get(name) if size is None else size
    if size is not None and attacked + count > size:
        raise ConfigError(
            f"model.pretrain_images={count} is not allowed: {name} has {size} images and "
            f"{attacked} are attacked, so at most {size - attacked} are left to pretrain on"
        )


def images(cfg: DatasetConfig, attacked: int, count: int) -> tuple[Tensor, Tensor]:
    """The ``count`` images ``(count, C, H, W)`` in [0, 1] and labels ``(count,)`` right after
    the ``attacked`` ones from ``cfg.index`` on, wrapping around (never an attacked one)."""
    dataset, source = data.open_dataset(cfg)
    check(source, attacked, count, len(dataset))
    start = cfg.index + attacked
    items = [dataset[(start + i) % len(dataset)] for i in range(count)]
    return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items])


def train(model: nn.Module, x: Tensor, onehot: Tensor, *, steps: int, lr: float) -> list[float]:
    """``steps`` of full-batch SGD on images ``x`` ``(N, C, H, W)`` with label distributions
    ``onehot`` ``(N, num_classes)``, in place; returns the loss before each step."""
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = batched.soft_cross_entropy(model(x), onehot)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    log.info("pretrained %d steps: loss %.4f -> %.4f", steps, losses[0], losses[-1])
    return losses
