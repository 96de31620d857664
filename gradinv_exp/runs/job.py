"""One job in its folder: the steps every way of running a job shares.

The command line's Hydra job (``__main__.job``), the Python API's ``run`` and each member
of a batched sweep (``runs/batched.py``, ``run_batch``) start a job the same way
(``started``): a folder
holding a finished run is read, never run again, and its lock is not even touched;
otherwise the job's lock is held while it runs (a second process waits), leftovers of an
attempt killed while writing are removed, and the folder is checked once more (it may
have finished while this process waited). The config becomes typed values the same way
(``typed``: a value that fails its checks is recorded in metrics.json as ``failed``),
and a finished run is logged to the experiment tracker its config selects
(``tracking``).
Hydra writes a job's ``.hydra/`` files before its task runs; the Python API composes the
job itself and writes the same files (``compose``, ``save_hydra_files``). ``run`` is the
whole of it for a single job.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from gradinv_exp import config, tracking
from gradinv_exp.analysis.metric_table import PRIMARY
from gradinv_exp.base.options import ConfigError
from gradinv_exp.runs import artifacts, faults, folder, locks, preflight, resume

if TYPE_CHECKING:
    from gradinv_exp.config import Config

JOB_NAME = "gradinv_exp"  # the job's name, and its log file's, <job name>.log, as Hydra's


@contextmanager
def started(run_dir: Path) -> Iterator[dict[str, Any] | None]:
    """Within the block: the metrics.json of the run in ``run_dir`` when it finished
    (before, or while this process waited for its lock), else None while this process
    holds the job's lock, with the temporary files of a killed attempt removed."""
    previous = resume.finished_run(run_dir)
    if previous is not None:  # finished before: not even its lock is touched
        yield previous
        return
    with locks.job(run_dir):
        artifacts.remove_partial(run_dir)  # from an attempt killed while writing
        yield resume.finished_run(run_dir)  # finished while this process waited


def typed(cfg: DictConfig, run_dir: Path) -> Config:
    """``cfg`` as typed, range-checked values (``config.to_config``); a ConfigError
    (preflight checked every job, so only a config changed since gets here) is recorded
    in ``run_dir``'s metrics.json as ``failed`` and raised."""
    try:
        return config.to_config(cfg)
    except ConfigError as err:
        faults.record_failure(run_dir, err, folder.flat(cfg))
        raise


def run(cfg: DictConfig, run_dir: Path) -> tuple[dict[str, Any], bool]:
    """Run the job ``cfg`` in ``run_dir`` unless it finished before. ``cfg`` is the task
    config Hydra hands a job (Hydra wrote ``.hydra/``), or a job made by ``compose`` (with
    Hydra's node), whose ``.hydra/`` files are then written first. Returns the run's
    metrics.json and whether it ran now (False: it had finished before)."""
    from gradinv_exp import experiment  # heavy: after preflight's checks

    with started(run_dir) as previous:
        if previous is not None:
            return previous, False
        if "hydra" in cfg:
            save_hydra_files(cfg, run_dir)
            cfg = folder.task(cfg)
        settings = typed(cfg, run_dir)
        metrics = experiment.run(settings, run_dir)
    tracking.log_run(settings.tracking, run_dir)  # tracking=mlflow|tensorboard
    return metrics, True


def run_batch(cfgs: list[Config], run_dirs: list[Path]) -> list[float]:
    """Run typed jobs whose locks the caller holds (the batched launcher's members) as one
    attack (``experiment.run_batch``), then log each finished one to its tracker. Returns
    each job's PSNR, NaN where it failed (its metrics.json says why). A stop signal goes on
    to the caller, every job saved as interrupted; any other error has been recorded in
    every job's metrics.json and is printed in one line."""
    from gradinv_exp import experiment  # heavy: after preflight's checks

    try:
        ended = experiment.run_batch(cfgs, run_dirs)
    except Exception as err:
        print(f"gradinv-exp: batch of {len(cfgs)} job(s) failed: {faults.error_line(err)}",
              file=sys.stderr)  # fmt: skip
        return [math.nan] * len(cfgs)
    values = []
    for cfg, run_dir, metrics in zip(cfgs, run_dirs, ended, strict=True):
        if metrics is None:
            values.append(math.nan)
            continue
        with faults.logged("the run could not be logged to its tracker"):
            tracking.log_run(cfg.tracking, run_dir)
        values.append(metrics[PRIMARY])
    return values


def compose(job: list[str], run_dir: Path) -> DictConfig:
    """The job of override lines ``job`` in ``run_dir``, composed as Hydra composes it for
    the command line: the task config with Hydra's node (``hydra.runtime.output_dir``)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    pinned = [*job, f"hydra.run.dir={preflight.quoted(str(run_dir))}"]  # ${now:} ticks on
    with initialize_config_dir(str(config.CONF_DIR), job_name=JOB_NAME, version_base="1.3"):
        cfg = hydra_compose("config", overrides=pinned, return_hydra_config=True)
    with read_write(cfg.hydra), open_dict(cfg.hydra):
        cfg.hydra.runtime.output_dir = str(run_dir.resolve())
    return cfg


def save_hydra_files(cfg: DictConfig, run_dir: Path) -> None:
    """``.hydra/config.yaml``, ``hydra.yaml`` and ``overrides.yaml`` of the composed job
    ``cfg``, as Hydra writes them for a job it runs (resume and compare read them)."""
    saved = run_dir / ".hydra"
    saved.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(folder.task(cfg), saved / "config.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": cfg.hydra}), saved / "hydra.yaml")
    OmegaConf.save(cfg.hydra.overrides.task, saved / "overrides.yaml")
