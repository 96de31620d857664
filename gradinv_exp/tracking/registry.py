"""The ``tracking`` registry, its schema base class and what every tracker shares.

A tracker is registered with ``@tracker(Schema)`` on a class with two methods:
``run(cfg, run_dir)`` logs one finished run from its folder (its config, every scalar
of metrics.json, the loss curve of history.csv, reconstruction.png), ``sweep(cfg,
sweep_dir)`` logs a sweep's summary.csv and figures. ``package`` names the module the
tracker needs (the ``tracking`` extra: ``pip install 'gradinv_exp[tracking]'``); a
config that selects a tracker whose package is missing is a one-line ConfigError
before any job starts. A tracker that fails while logging (a store that cannot be
written) costs one logged error, never the run: its results are in its folder already.

No tracker package (nor torch) is imported until a run is logged.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from omegaconf import MISSING

from gradinv_exp.base.options import Registry, option_name, require
from gradinv_exp.runs import faults, folder

log = logging.getLogger(__name__)

EXTRA = "pip install 'gradinv_exp[tracking]'"


@dataclass
class TrackingConfig:
    """Base of every tracking schema; ``name`` selects the option in ``TRACKERS``."""

    name: str = MISSING


class Logger(Protocol):
    def run(self, cfg: Any, run_dir: Path) -> None: ...

    def sweep(self, cfg: Any, sweep_dir: Path) -> None: ...


@dataclass(frozen=True)
class Tracker:
    """One option of the ``tracking`` group: its schema, the logger, the package it needs."""

    name: str
    schema: type[TrackingConfig]
    logger: Logger
    package: str | None = None


TRACKERS: Registry[Tracker] = Registry("tracking")


def tracker(schema: type[TrackingConfig], package: str | None = None) -> Callable[[type], type]:
    """Register the decorated logger class as the tracker ``schema`` configures."""

    def register(cls: type) -> type:
        TRACKERS.add(Tracker(option_name(schema), schema, cls(), package))
        return cls

    return register


def check_package(name: str, package: str | None) -> None:
    """ConfigError unless ``package`` (a tracker's module) can be imported here; looked up
    without importing it, so the check costs nothing."""
    require(
        package is None or importlib.util.find_spec(package) is not None,
        "tracking",
        name,
        f"needs the {package} package, which is not installed: {EXTRA}",
    )


@dataclass
class NoneConfig(TrackingConfig):
    name: str = "none"


@tracker(NoneConfig)
class NoTracking:
    """Log nothing (the default): every result is in the run folder."""

    def run(self, cfg: Any, run_dir: Path) -> None:
        return None

    def sweep(self, cfg: Any, sweep_dir: Path) -> None:
        return None


def log_run(cfg: Any, run_dir: Path) -> None:
    """Log the finished run in ``run_dir`` to the tracker ``cfg`` (a tracking schema)
    selects; a failure is one logged error."""
    with faults.logged(f"tracking={cfg.name}: {run_dir} could not be logged"):
        TRACKERS[cfg.name].logger.run(cfg, run_dir)


def log_sweep(cfg: Any, sweep_dir: Path) -> None:
    """Log the sweep summary in ``sweep_dir`` to the tracker ``cfg`` selects."""
    if not (sweep_dir / "summary.csv").is_file():
        return
    with faults.logged(f"tracking={cfg.name}: the sweep {sweep_dir} could not be logged"):
        TRACKERS[cfg.name].logger.sweep(cfg, sweep_dir)


# --- what the trackers read from a run folder ------------------------------------------


def scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of metrics.json (psnr, psnr_ci_low, success_rate, wall_s ...)."""
    return {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    }


def run_config(run_dir: Path) -> dict[str, Any]:
    """The run's flat config (``folder.run_config`` of its metrics.json)."""
    return folder.run_config(run_dir, read_json(run_dir / "metrics.json"))


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


FIGURES = ("reconstruction.png", "loss.png", "progress.png")  # a run's, logged as images
SWEEP_FILES = ("summary.csv", "comparison.png", "curves.png")
