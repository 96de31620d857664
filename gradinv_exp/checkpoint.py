"""Trained weights for the attacked model: ``model.checkpoint=PATH``.

A checkpoint is a state dict of the model as ``models.build`` makes it (without the
dataset's normalisation in front), saved with ``torch.save(model.state_dict(), PATH)``.
It is read with ``torch.load(weights_only=True)`` only: a checkpoint is a file from
somebody else, and a full pickle can run any code when loaded.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from gradinv_exp.checks import ConfigError

KEY = "model.checkpoint"


def _error(path: str, problem: str) -> ConfigError:
    return ConfigError(f"{KEY}={path!r} is not allowed: {problem}")


@functools.lru_cache(maxsize=4)
def _read(file: Path, mtime_ns: int, size: int) -> dict[str, Tensor]:
    """The file's state dict (cached by path, mtime and size: preflight checks every job
    of a sweep, and they usually share one checkpoint)."""
    state = torch.load(file, map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()
    ):
        raise TypeError(f"expected a state dict (names -> tensors), found {type(state).__name__}")
    return dict(state)


def read(path: str) -> dict[str, Tensor]:
    """Load the state dict at ``path``; ConfigError (one line naming the file) when it is
    missing, unreadable, not a state dict, or refused by the safe loader."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise _error(path, f"no such file ({file.resolve()})")
    stat = file.stat()
    try:
        return _read(file.resolve(), stat.st_mtime_ns, stat.st_size)
    except Exception as err:  # UnpicklingError (unsafe/corrupt), RuntimeError, TypeError ...
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise _error(path, f"not a loadable state dict ({type(err).__name__}: {first})") from None


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


def load_into(model: nn.Module, path: str) -> None:
    """Copy the checkpoint's weights into ``model`` (strict: every name and shape must match)."""
    state = read(path)
    problem = mismatch(model.state_dict(), state)
    if problem is not None:
        raise _error(path, problem)
    model.load_state_dict(state, strict=True)
