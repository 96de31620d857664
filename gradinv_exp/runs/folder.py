"""What a run folder says about its job, read in one place: its overrides
(``.hydra/overrides.yaml``), its settings as one flat dict (metrics.json's ``config``, else
Hydra's ``.hydra/config.yaml`` flattened the same way, ``flat``), and a composed
job's own config (``task``: Hydra's node removed). Summaries, compare, tracking, resume
and the launchers read folders through it.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's, when PyYAML has it


def flat(cfg: Any) -> dict[str, Any]:
    """The config as one flat dict (``defense.ratio`` ...): what tells runs apart in tables.
    Nested maps become dotted keys (an empty map none); lists stay values."""
    container = OmegaConf.to_container(
        cfg if isinstance(cfg, DictConfig) else OmegaConf.structured(cfg)
    )

    def walk(prefix: str, value: Any) -> dict[str, Any]:
        if isinstance(value, dict):
            return {
                k: v
                for key, item in value.items()
                for k, v in walk(f"{prefix}{key}.", item).items()
            }
        return {prefix[:-1]: value}

    return walk("", container)


def task_overrides(lines: Iterable[str]) -> dict[str, str]:
    """The overrides that shape a job as ``{key: value}``, ``+``/``~`` dropped from the
    keys (``+defense_level=x`` is the key ``defense_level``); ``hydra.*`` ones left out:
    they do not shape the job, and Hydra keeps them out of ``overrides.yaml``."""
    parsed = OverridesParser.create().parse_overrides(list(lines))
    return {
        o.get_key_element().lstrip("+~"): o.get_value_element_as_str()
        for o in parsed
        if not o.key_or_group.startswith("hydra")
    }


def saved_overrides(run_dir: Path) -> list[str]:
    """The override lines of the job in ``run_dir`` ([] when the folder has none)."""
    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return []
    # a list of strings: PyYAML's C loader reads it ~10x faster than OmegaConf.load
    return [str(o) for o in yaml.load(path.read_text(), Loader=LOADER) or []]


def overrides(run_dir: Path) -> dict[str, str]:
    """``task_overrides`` of the job in ``run_dir`` ({} when the folder has none)."""
    return task_overrides(saved_overrides(run_dir))


def run_config(run_dir: Path, metrics: dict[str, Any] | None = None) -> dict[str, Any]:
    """The run's settings, flat (``defense.ratio`` ...): metrics.json's ``config``
    (``metrics``: that file's content, already read), else Hydra's ``.hydra/config.yaml``
    flattened; {} when the folder has neither."""
    if metrics and "config" in metrics:
        return dict(metrics["config"])
    path = run_dir / ".hydra" / "config.yaml"
    return flat(OmegaConf.load(path)) if path.is_file() else {}


def task(cfg: DictConfig) -> DictConfig:
    """The job's own config, as the task function gets it: a writable copy of the composed
    ``cfg`` without Hydra's node."""
    task_cfg = copy.deepcopy(cfg)
    with read_write(task_cfg), open_dict(task_cfg):
        del task_cfg["hydra"]
    OmegaConf.set_readonly(task_cfg, False)
    return task_cfg
