"""``gradinv-exp --help GROUP``: every option of one config group with its fields, the
values its preset sets, what each field means and which values it allows.

All of it is read from where it already lives, never from a second table: the options
and their presets from Hydra's config search path (the user's ``hydra.searchpath``
included), an option's one-line description from the first comment of its YAML file,
a field's meaning from the comment beside (or above) it in its schema dataclass, and
the values it allows from the checks in the schema's ``__post_init__`` themselves, run on
the preset's values (``require``, ``one_of``, ``positive``: the texts of their one-line
errors; nothing is evaluated from source). ``--help run`` shows the
top-level fields (seed, trials, device ...).
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import textwrap
import tokenize
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from gradinv_exp.base import options
from gradinv_exp.base.options import ConfigError

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


def allowed(node: DictConfig, group: str) -> dict[str, list[str]]:
    """``{field: what its checks allow}``: the checks themselves (``options.recorded``:
    every ``require``, ``one_of`` and ``positive`` that building ``node``, a preset's
    values, runs), keyed by the ``GROUP.FIELD`` they name (top-level fields for group
    ""). A check that only applies to other values (a branch not taken) is not shown; a
    preset that cannot be built as it is (a required ``???`` field) shows none."""
    try:
        with options.recorded() as rules:
            OmegaConf.to_object(node)
    except (OmegaConfBaseException, ConfigError):
        return {}
    found: dict[str, list[str]] = {}
    for key, text in rules:
        if group and key.startswith(f"{group}."):
            name = key.removeprefix(f"{group}.")
        elif not group and "." not in key:
            name = key
        else:
            continue
        if text not in found.setdefault(name, []):
            found[name].append(text)
    return found


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


def fields_text(
    node: DictConfig, schema: type, group: str, whole: DictConfig | None = None
) -> list[str]:
    """One entry per field of ``schema`` (``name`` left out): ``FIELD: TYPE = VALUE`` (the
    value ``node`` sets), then its comment and what its checks allow when ``whole`` (the
    config ``node`` belongs to; default ``node``) is built."""
    notes, rules = comments(schema), allowed(node if whole is None else whole, group)
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
    lines = fields_text(scalars, schema, "", whole=cfg)
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
