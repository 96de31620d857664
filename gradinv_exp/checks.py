"""Range checks for config schemas: one-line errors that name ``key=value`` and what is
allowed, raised before any work starts."""

from __future__ import annotations

import math
from typing import Any


class ConfigError(ValueError):
    """A configuration value that is not allowed; the message is one line for the user."""


def require(ok: bool, key: str, value: Any, allowed: str) -> None:
    """Raise a one-line ConfigError naming ``key=value`` and what is allowed."""
    if not ok:
        raise ConfigError(f"{key}={value!r} is not allowed: {allowed}")


def one_of(key: str, value: Any, choices: tuple[str, ...]) -> None:
    require(value in choices, key, value, "choose one of " + ", ".join(choices))


def positive(key: str, value: float) -> None:
    """A finite number > 0 (NaN and inf fail: they would only poison the run later)."""
    require(math.isfinite(value) and value > 0, key, value, "must be a finite number > 0")
