"""The Python API, for notebooks: ``gradinv_exp.run`` and ``gradinv_exp.load_runs``.

``run("defense=noise", "defense.sigma=0.01", out="runs/n1")`` is the command line's
single run, called from Python: the same overrides, composition and preflight (a bad
value raises the same one-line ``ConfigError``), the same folder (``.hydra/``,
metrics.json, history.csv, the figures, images.npz and the log) and the same resume rule
(a folder that holds the finished run of these overrides is read, not run again; one
with another finished run is refused) and the same locks (a folder another command or
notebook is writing is refused with one line). It returns a ``Run`` with the metrics, the
images and the history. ``load_runs(paths)`` is the compare command's table.

Nothing heavy is imported until a function is called, so ``import gradinv_exp`` is
cheap. A run sets torch's thread count to its ``threads`` (1 by default) for the
process, as the command line does.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from torch import Tensor

LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"  # Hydra's job log format


@dataclass(frozen=True)
class Run:
    """One finished run, read from its folder."""

    folder: Path
    metrics: dict[str, Any]  # metrics.json: status, psnr, ssim, ..., config (flat)
    truth: Tensor  # (T, B, C, H, W) in [0, 1]: the attacked images
    recon: Tensor  # (T, B, C, H, W) in [0, 1]: the reconstruction, matched image by image
    history: pd.DataFrame  # history.csv: step, grad_loss, mse, psnr at every snapshot

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> Run:
        """The results in a run folder (of the command line or of ``run``)."""
        import pandas as pd

        from gradinv_exp.analysis.figures import load_images
        from gradinv_exp.runs.resume import RunError, read_metrics

        path = Path(folder)
        metrics = read_metrics(path)
        images = load_images(str(path))
        if metrics is None or images is None:
            raise RunError(f"{path}: no finished run (metrics.json and images.npz)")
        history = pd.read_csv(path / "history.csv")
        return cls(path, metrics, images[0], images[1], history)


def run(*overrides: str, out: str | os.PathLike[str] | None = None) -> Run:
    """Run one experiment as ``python -m gradinv_exp OVERRIDES hydra.run.dir=OUT`` would
    and return its results. ``out`` defaults to the command line's ``outputs/DATE/TIME``.

    Raises ``ConfigError`` (one line) for a bad override or combination, before anything
    runs; a sweep (``-m``, a comma list, an ``experiment`` preset) is refused: call
    ``run`` once per setting, or use the command line. An error during the run is
    raised after metrics.json recorded it (``status: failed``).
    """
    from gradinv_exp import config, experiment
    from gradinv_exp.base.options import ConfigError
    from gradinv_exp.runs import locks, preflight

    config.register()
    argv = list(overrides)
    if out is not None:
        argv.append(f"hydra.run.dir={preflight.quoted(os.fspath(out))}")
    sweeps = bool({"-m", "--multirun"} & set(argv)) or any(
        o.is_sweep_override() for o in preflight.parse(argv)
    )
    plan = None if sweeps else preflight.plan(argv)
    if plan is None or plan.multirun:
        raise ConfigError(
            "gradinv_exp.run runs one experiment: give single values (no -m, comma lists or "
            "sweep presets), or run a sweep with the command line"
        )
    preflight.check_jobs(plan, experiment.check)
    with locks.claim(plan.folder, "out"):  # the command line's locks: one writer per folder
        execute(plan.jobs[0], plan.folder)
    return Run.load(plan.folder)


def execute(job: list[str], folder: Path) -> dict[str, Any]:
    """Run the job ``job`` (override lines) into ``folder`` unless it finished there before,
    as the command line's Hydra job does (``runs.job.run``: locks, resume, typed config,
    the ``.hydra/`` files), with the package's log in ``folder/gradinv_exp.log``. Returns
    the run's metrics.json."""
    from gradinv_exp.runs import job as runs_job

    folder.mkdir(parents=True, exist_ok=True)
    with logging_to(folder / f"{runs_job.JOB_NAME}.log"):
        return runs_job.run(runs_job.compose(job, folder), folder)[0]


@contextmanager
def logging_to(path: Path) -> Iterator[None]:
    """The package's INFO log into ``path`` while the run lasts (the command line's Hydra
    does this for a job); the notebook's own logging is left as it is."""
    logger = logging.getLogger("gradinv_exp")
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        handler.close()
        logger.setLevel(level)


def load_runs(paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> pd.DataFrame:
    """Every run at or below ``paths`` (run folders, sweep folders, any mix) as the compare
    command's table (compare.csv): one row per run, with its ``defense``, ``strength``,
    ``status``, every scalar metric and its flat config (``config.defense.sigma``, ...).
    Folders that cannot be read are skipped with a warning each."""
    from gradinv_exp.analysis import summary

    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    frame, problems = summary.collect([Path(p) for p in paths])
    for line in problems:
        warnings.warn(line, stacklevel=2)
    return frame
