"""``tracking=tensorboard``: each run as a TensorBoard event file.

A run writes into ``<run folder>/tensorboard`` (or ``tracking.log_dir/<run folder's
name>``): its config as text, every scalar of metrics.json, the loss curve of
history.csv per step, and its figures as images; ``tensorboard --logdir`` on a sweep
folder shows every job, and the sweep's summary table and figures (written into
``<sweep folder>/tensorboard``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import yaml

from gradinv_exp.analysis.metric_table import PRIMARY
from gradinv_exp.tracking.registry import (
    FIGURES,
    TrackingConfig,
    check_package,
    read_json,
    run_config,
    scalars,
    tracker,
)
from gradinv_exp.tracking.to_mlflow import history

FOLDER = "tensorboard"


@dataclass
class TensorBoardConfig(TrackingConfig):
    name: str = "tensorboard"
    log_dir: Optional[str] = None  # null: a tensorboard/ folder in each run and sweep folder

    def __post_init__(self) -> None:
        check_package(self.name, "tensorboard")


def writer(cfg: TensorBoardConfig, folder: Path) -> Any:
    from torch.utils.tensorboard import SummaryWriter

    where = Path(cfg.log_dir) / folder.name if cfg.log_dir else folder / FOLDER
    return SummaryWriter(log_dir=str(where))


def image(path: Path) -> Any:
    """A PNG as an (H, W, 3) float array in [0, 1] (matplotlib reads it)."""
    from matplotlib.image import imread

    return imread(path)[..., :3]


@tracker(TensorBoardConfig, package="tensorboard")
class TensorBoardLogger:
    def run(self, cfg: TensorBoardConfig, run_dir: Path) -> None:
        metrics = read_json(run_dir / "metrics.json")
        with writer(cfg, run_dir) as log:
            text = yaml.safe_dump(run_config(run_dir), sort_keys=False)
            log.add_text("config", f"```\n{text}```")
            steps = int(metrics.get("steps", 0) or 0)
            for key, value in scalars(metrics).items():
                log.add_scalar(f"final/{key}", value, steps)
            for step, key, value in history(run_dir):
                log.add_scalar(f"curve/{key}", value, step)
            for name in FIGURES:
                if (run_dir / name).is_file():
                    log.add_image(name.removesuffix(".png"), image(run_dir / name),
                                  dataformats="HWC")  # fmt: skip

    def sweep(self, cfg: TensorBoardConfig, sweep_dir: Path) -> None:
        import pandas as pd

        table = pd.read_csv(sweep_dir / "summary.csv")
        columns = [c for c in ("defense", "strength", "status", PRIMARY, "success_rate")
                   if c in table]  # fmt: skip
        with writer(cfg, sweep_dir) as log:
            log.add_text("summary", table[columns].to_markdown(index=False))
            for name in ("comparison.png", "curves.png"):
                if (sweep_dir / name).is_file():
                    log.add_image(name.removesuffix(".png"), image(sweep_dir / name),
                                  dataformats="HWC")  # fmt: skip
