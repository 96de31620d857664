"""What an option of a config group is: one registry per group, and the one-line errors
that schemas raise for values they do not allow.

A group's module creates one ``Registry`` and fills it with a decorator that binds an
option's name to its function, its schema and its facts (a defense's strength field, an
optimiser's kind ...), so everything about one option sits in one place. The registry
refuses a second option of the same name, and a name it does not know is a one-line
``ConfigError`` listing the ones it does.

The user's own code needs no fork: a config value may name a Python callable as
``module:function`` (``split_target``, ``resolve``, ``check_signature``; every group
that takes user code resolves it here). ``module.function`` is the same name where a
colon cannot go: Hydra's command line cannot put one in a mapping's key
(``attack.priors``). A registry built with a ``plugin`` factory hands out entries for
such names as if they were registered.

Range checks (``require``, ``one_of``, ``positive``) run in the schemas' ``__post_init__``
and raise ``ConfigError`` with ``key=value`` and what is allowed, before any work starts.

This module imports no torch: the command line checks a whole sweep's configs before it
loads torch (see ``__main__``). ``resolve`` imports the user's module, which may.
"""

from __future__ import annotations

import importlib
import inspect
import math
import os
import pkgutil
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import fields
from typing import Any, Generic, Protocol, TypeVar

from omegaconf import MISSING


class ConfigError(ValueError):
    """A configuration value that is not allowed; the message is one line for the user."""


def not_allowed(key: str, value: Any, why: str) -> ConfigError:
    """The one-line error for ``key=value``: ``key=value is not allowed: why``."""
    return ConfigError(f"{key}={value!r} is not allowed: {why}")


# The checks run inside ``recorded()`` (this module's own; read through ``recorded``).
_RECORDED: ContextVar[list[tuple[str, str]] | None] = ContextVar("recorded", default=None)


@contextmanager
def recorded() -> Iterator[list[tuple[str, str]]]:
    """Collect ``(key, what it allows)`` of every ``require`` (``one_of``, ``positive``)
    run inside, passed or not: ``--help`` shows a schema's ranges from its checks
    themselves, run on a preset's values, so the two cannot disagree."""
    seen: list[tuple[str, str]] = []
    token = _RECORDED.set(seen)
    try:
        yield seen
    finally:
        _RECORDED.reset(token)


def require(ok: bool, key: str, value: Any, allowed: str) -> None:
    """Raise a one-line ConfigError naming ``key=value`` and what is allowed."""
    seen = _RECORDED.get()
    if seen is not None:
        seen.append((key, allowed))
    if not ok:
        raise not_allowed(key, value, allowed)


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
    order is kept; ``names()`` are sorted for messages. With a ``plugin`` factory, a name
    that is a target (``module:function``) gives ``plugin(name, the resolved callable)``:
    the user's code, used like a registered option but never stored.
    """

    def __init__(self, group: str, plugin: Callable[[str, Callable[..., Any]], E] | None = None):
        self.group = group
        self.plugin = plugin
        self._entries: dict[str, E] = {}

    def add(self, entry: E) -> E:
        """Register ``entry``; a second entry of the same name is a programming error."""
        if entry.name in self._entries:
            raise ValueError(f"{self.group} option {entry.name!r} is already registered")
        self._entries[entry.name] = entry
        return entry

    def __getitem__(self, name: str) -> E:
        if name not in self._entries and self.plugin is not None and is_target(name):
            return self.plugin(name, resolve(self.group, name))
        if name not in self._entries:
            one_of(f"{self.group}.name", name, self.names())
        return self._entries[name]

    def check_name(self, key: str, name: str) -> None:
        """ConfigError unless ``name`` is registered or, with a plugin factory, is a
        well-formed target (not imported here: that needs the user's module)."""
        if self.plugin is not None and is_target(name):
            split_target(key, name)
        elif name not in self._entries:
            extra = " or your own function as module:function" if self.plugin else ""
            raise not_allowed(key, name, "choose one of " + ", ".join(self.names()) + extra)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[E]:
        return iter(self._entries.values())

    def names(self) -> list[str]:
        return sorted(self._entries)


def import_all(package: str, path: Iterable[str], skip: Iterable[str] = ()) -> None:
    """Import every module of ``package`` (its ``__path__``) but ``skip``, so that each
    one's options register themselves: a new defense or attack family is its module and
    its YAML, with no list of modules to extend."""
    for found in sorted(pkgutil.iter_modules(path), key=lambda m: m.name):
        if found.name not in skip:
            importlib.import_module(f"{package}.{found.name}")


def option_name(schema: type) -> str:
    """The option a schema dataclass belongs to: the default of its ``name`` field."""
    default = next(f.default for f in fields(schema) if f.name == "name")
    if not isinstance(default, str) or default == MISSING:
        raise TypeError(f"{schema.__name__}.name needs the option's name as its default")
    return default


# --- the user's own code -------------------------------------------------------------


def is_target(name: str) -> bool:
    """Whether ``name`` names a callable (``module:function``, ``module.function``) rather
    than a registered option (whose names hold neither a colon nor a dot)."""
    return ":" in name or "." in name


def split_target(key: str, target: str) -> tuple[str, str]:
    """``module:function`` (or ``module.function``: the last dot splits) -> ``(module,
    function)``; a ConfigError for ``key`` when it is neither."""
    module, colon, attr = target.partition(":")
    if not colon:
        module, _, attr = target.rpartition(".")
    parts = [*module.split("."), *attr.split(".")]
    require(
        all(p.isidentifier() for p in parts),
        key,
        target,
        "must name a Python function as module:function (e.g. my_defenses:soft_prune)",
    )
    return module, attr


def resolve(key: str, target: str) -> Callable[..., Any]:
    """Import the callable ``target`` names; a one-line ConfigError for ``key`` when the
    module cannot be imported, lacks the name or the name is not callable.

    The module is looked up on ``sys.path`` and then in the current folder, so a file
    beside the user's command works with ``gradinv-exp`` as with ``python -m`` (which
    puts the current folder first).
    """
    module_name, attr = split_target(key, target)
    here = os.getcwd()
    if "" not in sys.path and here not in sys.path:
        sys.path.append(here)
    try:
        found: Any = importlib.import_module(module_name)
    except Exception as err:  # ImportError, or any error the module raises at import
        # one line for the user; the cause keeps the traceback (logs, notebooks)
        text = " ".join(str(err).split())
        why = f"cannot import {module_name} ({type(err).__name__}: {text})"
        raise not_allowed(key, target, why) from err
    for part in attr.split("."):
        if not hasattr(found, part):
            raise not_allowed(key, target, f"{module_name} has no attribute {attr!r}")
        found = getattr(found, part)
    if not callable(found):
        raise not_allowed(key, target, f"{attr} is not callable ({type(found).__name__})")
    return found


def check_signature(
    key: str, target: str, fn: Callable[..., Any], call: str, *args: Any, **kwargs: Any
) -> None:
    """ConfigError unless ``fn`` accepts the arguments gradinv_exp passes it (``call``
    shows them, e.g. ``fn(grads, target)``); only names and counts are checked."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin without a signature: the probe will tell
        return
    try:
        signature.bind(*args, **kwargs)
    except TypeError as err:
        why = f"it is called as {call}, which its signature {signature} does not accept ({err})"
        raise not_allowed(key, target, why) from None
