"""Hydra callbacks, registered in conf/config.yaml under ``hydra.callbacks``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

# "job N: error" per job of the last sweep this process summarised that failed or left no
# metrics.json. Read by the command line to exit 1; filled here, in the launching process,
# because with the joblib or submitit launcher the jobs fail in other processes.
FAILURES: list[str] = []


def summarise(sweep_dir: str) -> None:
    from gradinv_exp import summary  # pandas/matplotlib: only when a sweep ends

    frame, problems = summary.collect([Path(sweep_dir)])
    FAILURES[:] = summary.failures(frame, problems)  # first: writing the figures may fail
    summary.summarise_sweep(Path(sweep_dir), frame, problems)


class SweepSummary(Callback):
    """When a multirun ends, write summary.csv, comparison.png and curves.png into its folder.

    Runs in the process that launched the sweep (also with the joblib and submitit
    launchers), after every job returned; reads only the job folders, so failed or
    killed jobs still appear as rows.
    """

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        summarise(config.hydra.sweep.dir)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        """A job that raised stops Hydra's sweep before ``on_multirun_end``: summarise the
        jobs so far (the failed one is a row), so the sweep folder still has its summary."""
        if job_return.status == JobStatus.FAILED and config.hydra.mode == RunMode.MULTIRUN:
            summarise(config.hydra.sweep.dir)
