"""Hydra callbacks, registered in conf/config.yaml under ``hydra.callbacks``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class SweepSummary(Callback):
    """When a multirun ends, write summary.csv, comparison.png and curves.png into its folder.

    Runs in the process that launched the sweep (also with the joblib and submitit
    launchers), after every job returned; reads only the job folders, so failed or
    killed jobs still appear as rows.
    """

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from gradinv_exp import summary  # pandas/matplotlib: only when a sweep ends

        summary.summarise_sweep(Path(config.hydra.sweep.dir))
