"""The package's layout: no import cycles, counting every import that runs (inside
functions too) and those under ``TYPE_CHECKING`` (a cycle of types is still two modules
that cannot be understood apart), and few modules flat in ``gradinv_exp/``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "gradinv_exp"
MAX_FLAT = 10  # modules directly in gradinv_exp/, __init__ and __main__ included


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> the package's modules it imports (``from pkg import module`` is an edge
    to the module; entering a package from outside runs its ``__init__`` first)."""
    mods = modules()

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    edges: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = name.split(".") if is_package else name.split(".")[:-1]
                    parts = parts[: len(parts) - (node.level - 1)]
                    base = ".".join([*parts, *([node.module] if node.module else [])])
                subs = [f"{base}.{a.name}" for a in node.names]
                targets = [s for s in subs if s in mods] or [base]
            else:
                continue
            for target in targets:
                found = resolve(target) if target.split(".")[0] == PACKAGE.name else None
                if found is None or found == name:
                    continue
                edges[name].add(found)
                parts = found.split(".")
                for i in range(2, len(parts)):
                    face = ".".join(parts[:i])
                    if face in mods and not (name == face or name.startswith(face + ".")):
                        edges[name].add(face)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_planted_cycle():
    edges = import_graph()
    edges["gradinv_exp.base.options"].add("gradinv_exp.experiment")  # options -> ... -> options
    assert any("gradinv_exp.base.options" in c for c in cycles(edges))


def test_few_modules_sit_flat_in_the_package():
    flat = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(flat) <= MAX_FLAT, flat


def test_a_deferred_submodule_binds_its_alias_in_its_owner(monkeypatch):
    """``lazy.module`` stands in for a module until first use, then the owner's name is the
    real module (data.py binds ``PIL.Image`` as ``Image`` and ``numpy`` as ``np`` so)."""
    import sys
    import types

    from gradinv_exp.base import lazy

    monkeypatch.delitem(sys.modules, "xml.dom.minidom", raising=False)
    owner = types.ModuleType("lazy_owner_sample")
    monkeypatch.setitem(sys.modules, owner.__name__, owner)
    owner.dom = lazy.module("xml.dom.minidom", owner.__name__, "dom")
    assert "xml.dom.minidom" not in sys.modules  # nothing imported yet
    assert owner.dom.parseString("<a/>").documentElement.tagName == "a"
    assert owner.dom is sys.modules["xml.dom.minidom"]  # the stand-in replaced
    with pytest.raises(ValueError, match="needs the alias"):
        lazy.module("xml.dom.minidom", owner.__name__)
