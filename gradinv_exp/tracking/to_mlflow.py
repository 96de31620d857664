"""``tracking=mlflow``: each run as an MLflow run, each sweep as one more.

A run's MLflow run is named after its folder and holds its flat config as parameters,
every scalar of metrics.json as a metric, the loss curve (``curve/grad_loss``,
``curve/psnr``, ``curve/mse``: history.csv at each step) as metric histories, and its figures and
metrics.json as artifacts. A sweep's run (``sweep:<folder>``) holds summary.csv and its
figures. Without ``tracking.uri`` MLflow writes a local file store, ``./mlruns`` in the
folder the command runs in (``mlflow ui`` there shows it); a ``tracking.uri`` (a server,
``sqlite:///...``, ``file:///...``) is passed to MLflow as it is.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from gradinv_exp.base.status import Status
from gradinv_exp.tracking.registry import (
    FIGURES,
    SWEEP_FILES,
    TrackingConfig,
    check_package,
    read_json,
    run_config,
    scalars,
    tracker,
)

MAX_PARAM = 500  # characters of one parameter value that every MLflow store accepts


@dataclass
class MLflowConfig(TrackingConfig):
    name: str = "mlflow"
    uri: Optional[str] = None  # MLflow tracking URI; null: the file store ./mlruns
    experiment: str = "gradinv_exp"  # the MLflow experiment the runs go into

    def __post_init__(self) -> None:
        check_package(self.name, "mlflow")


def store(cfg: MLflowConfig) -> str:
    """The tracking URI: ``cfg.uri``, or the file store ``./mlruns`` as an absolute URI.

    MLflow 3 keeps its file store in maintenance mode and refuses it unless
    ``MLFLOW_ALLOW_FILE_STORE`` is set; the default store is asked for here, so it is set
    (unless the user set it) for it. A database store needs ``sqlalchemy``, which the
    ``tracking`` extra (mlflow-skinny) does not install: give ``tracking.uri`` for one."""
    if cfg.uri:
        return cfg.uri
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return (Path.cwd() / "mlruns").resolve().as_uri()


@tracker(MLflowConfig, package="mlflow")
class MLflowLogger:
    """Logs through an ``mlflow.MlflowClient`` bound to ``store(cfg)``: no global state of
    the mlflow module (active run, tracking URI) is touched, so a notebook's own MLflow
    runs are left alone."""

    def client(self, cfg: MLflowConfig) -> tuple[Any, str]:
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=store(cfg))
        found = client.get_experiment_by_name(cfg.experiment)
        experiment = found.experiment_id if found else client.create_experiment(cfg.experiment)
        return client, experiment

    def run(self, cfg: MLflowConfig, run_dir: Path) -> None:
        from mlflow.entities import Metric, Param

        client, experiment = self.client(cfg)
        metrics = read_json(run_dir / "metrics.json")
        run = client.create_run(
            experiment, run_name=run_dir.name, tags={"run_dir": str(run_dir.resolve())}
        )
        run_id = run.info.run_id
        params = [Param(k, str(v)[:MAX_PARAM]) for k, v in run_config(run_dir).items()]
        final = [Metric(k, v, 0, 0) for k, v in scalars(metrics).items()]
        for start in range(0, len(params), 100):  # MLflow's batch limits
            client.log_batch(run_id, params=params[start : start + 100])
        curve = [Metric(f"curve/{k}", v, 0, step) for step, k, v in history(run_dir)]
        points = final + curve
        for start in range(0, len(points), 1000):
            client.log_batch(run_id, metrics=points[start : start + 1000])
        for name in (*FIGURES, "metrics.json", "history.csv"):
            if (run_dir / name).is_file():
                client.log_artifact(run_id, str(run_dir / name))
        status = "FINISHED" if Status(metrics.get("status", Status.MISSING)).finished else "FAILED"
        client.set_tag(run_id, "status", str(metrics.get("status")))
        client.set_terminated(run_id, status)

    def sweep(self, cfg: MLflowConfig, sweep_dir: Path) -> None:
        client, experiment = self.client(cfg)
        run = client.create_run(experiment, run_name=f"sweep:{sweep_dir.name}",
                                tags={"sweep_dir": str(sweep_dir.resolve())})  # fmt: skip
        for name in SWEEP_FILES:
            if (sweep_dir / name).is_file():
                client.log_artifact(run.info.run_id, str(sweep_dir / name))
        client.set_terminated(run.info.run_id, "FINISHED")


def history(run_dir: Path) -> list[tuple[int, str, float]]:
    """(step, column, value) of every number in history.csv (the loss curve)."""
    path = run_dir / "history.csv"
    if not path.is_file():
        return []
    points = []
    with path.open(newline="") as file:
        for row in csv.DictReader(file):
            step = int(float(row.pop("step")))
            for key, text in row.items():
                try:
                    points.append((step, key, float(text)))
                except (TypeError, ValueError):
                    continue
    return points
