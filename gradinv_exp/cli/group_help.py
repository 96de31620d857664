"""``gradinv-exp --help GROUP``: every option of one config group with its fields, the
values its preset sets, what each field means and which values it allows.

All of it is read from where it already lives, never from a second table: the options
and their presets from Hydra's config search path (the user's ``hydra.searchpath``
included), an option's one-line description from the first comment of its YAML file,
a field's meaning from the comment beside (or above) it in its schema dataclass, and
the values it allows from the checks in the schema's ``__post_init__`` (``require``,
``one_of``, ``positive``: the texts of their one-line errors). ``--help run`` shows the
top-level fields (seed, trials, device ...).
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import textwrap
import tokenize
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

TOP = "run"  # --help run: the top-level fields of ``config.Config``
WIDTH = 92


def comments(schema: type) -> dict[str, str]:
    """``{field: its comment}`` from the source of dataclass ``schema`` (and its bases):
    the comment at the end of the field's line, after the comment lines right above it."""
    found: dict[str, str] = {}
    for cls in reversed(schema.__mro__):
        if not dataclasses.is_dataclass(cls):
            continue
        try:
            lines, _ = inspect.getsourcelines(cls)
        except (OSError, TypeError):
            continue
        above: list[str] = []
        for line in lines[1:]:
            text = line.strip()
            if text.startswith("#"):
                above.append(text.lstrip("# "))
                continue
            name = text.split(":")[0].strip()
            if ":" in text and name.isidentifier() and not text.startswith("def "):
                tail = trailing_comment(line)
                found[name] = " ".join([*above, *([tail] if tail else [])])
            above = []
    return found


def trailing_comment(line: str) -> str:
    """The comment at the end of one line of Python (a ``#`` in a string is not one)."""
    try:
        for token in tokenize.generate_tokens(io.StringIO(line.strip()).readline):
            if token.type == tokenize.COMMENT:
                return token.string.lstrip("# ")
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return ""
    return ""


def allowed(schema: type, group: str) -> dict[str, list[str]]:
    """``{field: what its checks allow}`` from ``schema.__post_init__``: each ``require``'s
    text, each ``one_of``'s choices (evaluated when they are a literal or a name of the
    schema's module), ``> 0`` for ``positive``; keyed by the ``GROUP.FIELD`` they name."""
    found: dict[str, list[str]] = {}
    for cls in schema.__mro__:
        post = cls.__dict__.get("__post_init__")
        if post is None:
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(post)))
        except (OSError, TypeError, SyntaxError):
            continue
        scope = inspect.getmodule(cls).__dict__  # type: ignore[union-attr]
        for call in ast.walk(tree):
            if isinstance(call, ast.Call) and isinstance(call.func, ast.Name):
                rule = rule_of(call, scope)
                if rule is not None and (rule[0].startswith(f"{group}.") or not group):
                    found.setdefault(rule[0].removeprefix(f"{group}."), []).append(rule[1])
    return found


def rule_of(call: ast.Call, scope: dict[str, Any]) -> tuple[str, str] | None:
    """(key, allowed text) of one ``require``/``one_of``/``positive`` call, else None."""
    args = call.args
    name = call.func.id  # type: ignore[attr-defined]
    key_at = {"require": 1, "one_of": 0, "positive": 0}.get(name)
    if key_at is None or len(args) <= key_at or not isinstance(args[key_at], ast.Constant):
        return None
    key = str(args[key_at].value)
    if name == "positive":
        return key, "a finite number > 0"
    if name == "one_of" and len(args) > 2:
        try:  # a literal tuple or a registry's names(): no attribute of ``self``
            choices = eval(compile(ast.Expression(args[2]), "<help>", "eval"), dict(scope))
            return key, "one of " + ", ".join(map(str, choices))
        except Exception:
            return key, "one of " + ast.unparse(args[2])
    if name == "require" and len(args) > 3 and isinstance(args[3], ast.Constant):
        return key, str(args[3].value)  # a text built at run time says it in the error only
    return None


def description(yaml_file: Path | None) -> str:
    """The first sentence(s) of an option's YAML file's leading comment, up to the first
    line that ends one ('.' or ':'), at most three lines; '' when it has none."""
    if yaml_file is None or not yaml_file.is_file():
        return ""
    taken: list[str] = []
    for line in yaml_file.read_text().splitlines()[:3]:
        if not line.startswith("#"):
            break
        taken.append(line.lstrip("# ").strip())
        if taken[-1].endswith((".", ":")):
            break
    return " ".join(taken).rstrip(":")


def fields_text(node: DictConfig, schema: type, group: str) -> list[str]:
    """One entry per field of ``schema`` (``name`` left out): ``FIELD: TYPE = VALUE`` (the
    value ``node`` sets), then its comment and what it allows."""
    notes, rules = comments(schema), allowed(schema, group)
    hints = {f.name: f.type for f in dataclasses.fields(schema)}
    lines = []
    for name in node:
        if name == "name" or name not in hints:
            continue
        value = OmegaConf.to_container(node, resolve=False).get(name)  # type: ignore[union-attr]
        value = "??? (required)" if value == "???" else repr(value)
        kind = str(hints[name]).replace("typing.", "").replace("Optional", "optional")
        head = f"  {group}.{name}: {kind} = {value}"
        more = [notes.get(name, ""), *(f"allowed: {r}" for r in rules.get(name, []))]
        text = "; ".join(m for m in more if m)
        lines.append(head)
        if text:
            lines += textwrap.wrap(text, WIDTH, initial_indent=" " * 6, subsequent_indent=" " * 6)
    return lines


def page(group: str, overrides: Sequence[str] = ()) -> str:
    """The help page of ``group`` (or ``run``): each option as ``GROUP=OPTION``, its
    description, then its fields. ``overrides``: the command's ``hydra.*`` ones (the
    user's ``hydra.searchpath``)."""
    from hydra import compose, initialize_config_dir

    from gradinv_exp import config
    from gradinv_exp.runs import preflight

    config.register()
    hydra_only = [o for o in overrides if o.startswith("hydra.")]
    with initialize_config_dir(str(config.CONF_DIR), version_base="1.3"):
        if group == TOP:
            cfg = compose("config", overrides=hydra_only)
            return top_page(cfg, config.Config)
        names = preflight.options(group, hydra_only)
        key = f"+{group}" if group in preflight.OPTIONAL else group
        out = [f"{key}: {len(names)} options; pick one with {key}=OPTION, then change a field "
               f"with {group}.FIELD=VALUE"]  # fmt: skip
        for option in names:
            cfg = compose("config", overrides=[*hydra_only, f"{key}={option}"])
            out += ["", f"{key}={option}"]
            found = find_yaml(group, option, hydra_only)
            if description(found):
                out += textwrap.wrap(description(found), WIDTH, initial_indent="  ",
                                     subsequent_indent="  ")  # fmt: skip
            node = cfg.get(group)
            if isinstance(node, DictConfig) and OmegaConf.get_type(node) is not dict:
                out += fields_text(node, OmegaConf.get_type(node), group)  # type: ignore[arg-type]
        return "\n".join(out)


def top_page(cfg: DictConfig, schema: type) -> str:
    """The top-level fields of a run (not the groups)."""
    groups = {f.name for f in dataclasses.fields(schema) if dataclasses.is_dataclass(f.type)}
    scalars = OmegaConf.masked_copy(
        cfg, [k for k in cfg if not isinstance(cfg[k], DictConfig) and k not in groups]
    )
    lines = fields_text(scalars, schema, "")
    text = [line.replace("  .", "  ", 1) for line in lines]
    return "run: the top-level fields; change one with FIELD=VALUE\n" + "\n".join(text)


def find_yaml(group: str, option: str, overrides: Sequence[str]) -> Path | None:
    """The YAML file of ``group/option`` in conf/ or a ``file://`` folder on the user's
    ``hydra.searchpath`` (None when neither holds it, e.g. a package search path)."""
    from gradinv_exp import config

    folders = [config.CONF_DIR]
    for override in overrides:
        if override.startswith("hydra.searchpath="):
            listed = override.split("=", 1)[1].strip("[]")
            folders += [Path(p.strip().removeprefix("file://")) for p in listed.split(",")]
    for folder in folders:
        path = folder / group / f"{option}.yaml"
        if path.is_file():
            return path
    return None
