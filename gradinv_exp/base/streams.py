"""Seeded random streams: one independent, reproducible ``torch.Generator`` per purpose.

Separate streams keep, e.g., the dummy initialisation identical across defenses, so a
sweep compares defenses on the same attack start; and they let a module draw its own
randomness (the model's init, the defense's noise, the attack's start) without taking
anything from another's stream. Torch loads on first use (see ``lazy.py``).
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from gradinv_exp.base import lazy

if TYPE_CHECKING:
    import torch
else:
    torch = lazy.module("torch", __name__)


def generator(seed: int, purpose: str) -> torch.Generator:
    """The stream of ``purpose`` ("model", "attack", ...) under ``seed``: seeded with the
    first 8 bytes of SHA-256 of ``"<seed>:<purpose>"``."""
    digest = hashlib.sha256(f"{seed}:{purpose}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))
