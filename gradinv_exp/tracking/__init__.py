"""The ``tracking`` group: optional logging of runs and sweeps to an experiment tracker
(``tracking=mlflow``, ``tracking=tensorboard``; default ``none``).

``registry.py`` holds the registry and the two calls every launcher makes:
``log_run`` when a job has written its folder, ``log_sweep`` when a sweep's summary is
written. The trackers read what the run folder holds (config, metrics.json,
history.csv, reconstruction.png), so a tracker never changes what a run computes.
"""

from gradinv_exp.tracking import to_mlflow, to_tensorboard  # noqa: F401  (registers them)
from gradinv_exp.tracking.registry import (
    TRACKERS,
    TrackingConfig,
    log_run,
    log_sweep,
)

__all__ = ["TRACKERS", "TrackingConfig", "log_run", "log_sweep"]
