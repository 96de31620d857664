"""Resume: a command re-run into the same folder skips the runs that already finished.

An interrupted overnight sweep is finished by running the same command with the same
``hydra.sweep.dir`` again. A finished run (metrics.json with status ok or diverged) is
never run again and none of its files is rewritten by this package; ``check_folder``
(called by preflight for every job's folder) refuses, before anything runs, a folder
whose finished run has other overrides.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from gradinv_exp.base.options import ConfigError
from gradinv_exp.base.status import FINISHED

log = logging.getLogger(__name__)


class RunError(ValueError):
    """A run folder that cannot be read (corrupt or half-written files)."""


def read_metrics(run_dir: Path) -> dict[str, Any] | None:
    """metrics.json, None if absent; RunError if present but unreadable."""
    path = run_dir / "metrics.json"
    if not path.exists():
        return None
    try:
        metrics = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise RunError(f"{path}: {err}") from None
    if not isinstance(metrics, dict) or "status" not in metrics:
        raise RunError(f"{path}: no 'status' field")
    return metrics


def status(run_dir: Path) -> str | None:
    """The run's status from its metrics.json; None when absent or unreadable."""
    try:
        metrics = read_metrics(run_dir)
    except RunError:
        return None
    return None if metrics is None else metrics["status"]


def finished(run_dir: Path) -> dict[str, Any] | None:
    """metrics.json of a run that finished (status ok or diverged), else None."""
    try:
        metrics = read_metrics(run_dir)
    except RunError:
        return None
    return metrics if metrics and metrics["status"] in FINISHED else None


def finished_run(run_dir: Path) -> dict[str, Any] | None:
    """metrics.json of ``run_dir`` if that run finished (log one line), else None."""
    metrics = finished(run_dir)
    if metrics is not None:
        log.info("skip: %s already finished (status %s), not run again", run_dir, metrics["status"])
    return metrics


def task_overrides(overrides: Iterable[str]) -> dict[str, str]:
    """``{key: value}`` of the overrides that shape the job (``hydra.*`` ones do not)."""
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    return {
        o.get_key_element(): o.get_value_element_as_str()
        for o in parsed
        if not o.key_or_group.startswith("hydra")
    }


def check_folder(run_dir: Path, overrides: list[str]) -> None:
    """ConfigError if ``run_dir`` holds a finished run made with other overrides."""
    if finished(run_dir) is None:
        return
    path = run_dir / ".hydra" / "overrides.yaml"
    saved = [str(o) for o in OmegaConf.load(path)] if path.exists() else []
    new = task_overrides(overrides)
    if task_overrides(saved) != new:
        wanted = " ".join(f"{k}={v}" for k, v in new.items())
        raise ConfigError(
            f"{run_dir} holds a finished run of [{' '.join(saved)}], not of [{wanted}]: "
            "finished runs are never overwritten; choose another hydra.sweep.dir or hydra.run.dir"
        )
