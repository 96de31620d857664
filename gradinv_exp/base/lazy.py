"""Deferred imports for the modules that a config check imports.

The command line checks every job's config (names, types, ranges) before anything runs,
and a bad command line should answer at once; importing torch alone takes ~1.5 s. The
modules that hold the options' schemas beside their code (``defenses/``, ``attacks/``,
``client.py``) therefore bind torch with ``module("torch", __name__)``: the real module is
imported on the first attribute access and then replaces the stand-in in the importing
module, so later accesses cost nothing. (``importlib.util.LazyLoader`` does not do: on
Python 3.11 every later ``import torch`` statement loads the module at once.)
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType
from typing import Any


class _Deferred:
    """Stands for module ``name`` in module ``owner`` until first used."""

    def __init__(self, name: str, owner: str, alias: str) -> None:
        self._name, self._owner, self._alias = name, owner, alias

    def __getattr__(self, attr: str) -> Any:
        real = importlib.import_module(self._name)
        setattr(sys.modules[self._owner], self._alias, real)
        return getattr(real, attr)


def module(name: str, owner: str, alias: str | None = None) -> ModuleType:
    """``name`` imported on first use by module ``owner`` (pass ``__name__``), which binds
    it as ``alias`` (``import name as alias``; default ``name``, which must then be a
    top-level module: ``torch``)."""
    if alias is None and "." in name:
        raise ValueError(f"lazy.module({name!r}): a submodule needs the alias its owner binds")
    if name in sys.modules:  # already paid for: no stand-in
        return sys.modules[name]
    return _Deferred(name, owner, alias or name)  # type: ignore[return-value]
