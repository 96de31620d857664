"""Resume: a command re-run into the same folder skips the runs that already finished.

An interrupted overnight sweep is finished by running the same command with the same
``hydra.sweep.dir`` again. A finished run (metrics.json with status ok or diverged) is
never run again and none of its files is rewritten by this package; ``check_targets``
refuses, before anything runs, a folder whose finished run has other overrides.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from gradinv_exp.options import ConfigError

log = logging.getLogger(__name__)

JOB_NUM = "${hydra.job.num}"  # the default sweep subdir: job folders are job numbers


FINISHED = ("ok", "diverged")  # a run with one of these statuses is never run again


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


def job_dirs(hydra_cfg: DictConfig, count: int, multirun: bool) -> list[Path] | None:
    """The folder of each of ``count`` jobs: ``run.dir``, or job ``i`` of a sweep ->
    ``sweep.dir/i``; None for a sweep with its own ``hydra.sweep.subdir`` (which folder a
    job will use is then only known when it runs)."""
    if not multirun:
        return [Path(hydra_cfg.run.dir)]
    if OmegaConf.to_container(hydra_cfg.sweep, resolve=False).get("subdir") != JOB_NUM:
        return None
    return [Path(hydra_cfg.sweep.dir) / str(num) for num in range(count)]


def check_targets(folders: list[Path] | None, jobs: Iterable[list[str]]) -> None:
    """Check the folder each job will write to (``job_dirs``; None: nothing to check)."""
    for run_dir, job in zip(folders or [], jobs):
        check_folder(run_dir, job)
