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
from pathlib import Path
from typing import Any

from gradinv_exp.base.options import ConfigError
from gradinv_exp.base.status import FINISHED
from gradinv_exp.runs import folder

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


def check_folder(run_dir: Path, overrides: list[str]) -> None:
    """ConfigError if ``run_dir`` holds a finished run made with other overrides."""
    if finished(run_dir) is None:
        return
    saved = folder.saved_overrides(run_dir)
    new = folder.task_overrides(overrides)
    if folder.task_overrides(saved) != new:
        wanted = " ".join(f"{k}={v}" for k, v in new.items())
        raise ConfigError(
            f"{run_dir} holds a finished run of [{' '.join(saved)}], not of [{wanted}]: "
            "finished runs are never overwritten; choose another hydra.sweep.dir or hydra.run.dir"
        )
