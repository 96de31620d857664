"""A run's checkpoint file, ``attack_checkpoint.pt``: a stopped run continues from it.

Every ``attack.checkpoint_every`` steps the run writes the attack's full state
(``attacks/checkpoint.py``), its progress so far (snapshots, history rows, attack time)
and its flat config into its folder, atomically (``artifacts.atomic_write``: a run killed
while writing keeps the previous checkpoint). The same command run again into the same
folder finds it and continues from its step; the finished run equals one that was never
stopped. The file is removed when the run finishes (ok or diverged), and kept when it is
interrupted or fails, for the next attempt.

A checkpoint is only used by a run with the same settings: the keys in ``FREE`` may
differ (they do not change the attack's arithmetic on a given device), any other
difference is one WARNING and a start from step 0. It is read with
``torch.load(weights_only=True)``, so a file in a shared folder cannot run code.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from gradinv_exp.runs import artifacts, faults

log = logging.getLogger(__name__)

NAME = "attack_checkpoint.pt"
FREE = ("attack.checkpoint_every", "threads", "device")  # may change between attempts


def save(run_dir: Path, config: dict[str, Any], state: dict[str, Any]) -> None:
    """Write ``state`` with the run's flat ``config`` to ``run_dir/attack_checkpoint.pt``."""
    artifacts.atomic_write(run_dir / NAME, lambda tmp: torch.save({**state, "config": config}, tmp))


def load(run_dir: Path, config: dict[str, Any], device: torch.device) -> dict[str, Any] | None:
    """The checkpoint in ``run_dir`` if it was made with ``config`` (``FREE`` keys aside),
    tensors on ``device``; None, with one WARNING saying why, when it cannot be used."""
    path = run_dir / NAME
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location=device, weights_only=True)
        saved = state["config"]
    except Exception as err:
        log.warning("%s cannot be read (%s): starting from step 0", path, faults.error_line(err))
        return None
    differ = [
        k
        for k in {**saved, **config}
        if k not in FREE and not k.startswith("tracking.") and saved.get(k) != config.get(k)
    ]  # where a run is logged does not change it
    if differ:
        key = differ[0]
        log.warning(
            "%s was made with other settings (%s=%r, not %r): starting from step 0",
            path, key, saved.get(key), config.get(key),
        )  # fmt: skip
        return None
    return state


def remove(run_dir: Path) -> None:
    (run_dir / NAME).unlink(missing_ok=True)
