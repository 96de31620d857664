"""What an option of a config group is: one registry per group, and the one-line errors
that schemas raise for values they do not allow.

A group's module creates one ``Registry`` and fills it with a decorator that binds an
option's name to its function, its schema and its facts (a defense's strength field, an
optimiser's kind ...), so everything about one option sits in one place. The registry
refuses a second option of the same name, and a name it does not know is a one-line
``ConfigError`` listing the ones it does. A group may also accept the user's own
callable, named ``module:function`` (``resolve``), so new code needs no fork.

Range checks (``require``, ``one_of``, ``positive``) run in the schemas' ``__post_init__``
and raise ``ConfigError`` with ``key=value`` and what is allowed, before any work starts.

This module imports no torch: the command line checks a whole sweep's configs before it
loads torch (see ``__main__``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import fields
from typing import Any, Generic, Protocol, TypeVar

from omegaconf import MISSING


class ConfigError(ValueError):
    """A configuration value that is not allowed; the message is one line for the user."""


def require(ok: bool, key: str, value: Any, allowed: str) -> None:
    """Raise a one-line ConfigError naming ``key=value`` and what is allowed."""
    if not ok:
        raise ConfigError(f"{key}={value!r} is not allowed: {allowed}")


def one_of(key: str, value: Any, choices: tuple[str, ...] | list[str]) -> None:
    require(value in choices, key, value, "choose one of " + ", ".join(choices))


def positive(key: str, value: float) -> None:
    """A finite number > 0 (NaN and inf fail: they would only poison the run later)."""
    require(math.isfinite(value) and value > 0, key, value, "must be a finite number > 0")


class Named(Protocol):
    @property
    def name(self) -> str: ...


E = TypeVar("E", bound=Named)


class Registry(Generic[E]):
    """The options of one config group: ``name -> entry``, filled once per option.

    ``entry`` is the group's own frozen dataclass (function, schema, facts). Registration
    order is kept; ``names()`` are sorted for messages.
    """

    def __init__(self, group: str) -> None:
        self.group = group
        self._entries: dict[str, E] = {}

    def add(self, entry: E) -> E:
        """Register ``entry``; a second entry of the same name is a programming error."""
        if entry.name in self._entries:
            raise ValueError(f"{self.group} option {entry.name!r} is already registered")
        self._entries[entry.name] = entry
        return entry

    def __getitem__(self, name: str) -> E:
        if name not in self._entries:
            one_of(f"{self.group}.name", name, self.names())
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[E]:
        return iter(self._entries.values())

    def names(self) -> list[str]:
        return sorted(self._entries)


def option_name(schema: type) -> str:
    """The option a schema dataclass belongs to: the default of its ``name`` field."""
    default = next(f.default for f in fields(schema) if f.name == "name")
    if not isinstance(default, str) or default == MISSING:
        raise TypeError(f"{schema.__name__}.name needs the option's name as its default")
    return default
