"""What produced a run, for its metrics.json: the package version, the git commit (and
whether the checkout had uncommitted changes) when the package runs from a checkout, the
Python, torch and torchvision versions, the device, the host, and when the run started
and ended. Results move with the attack backend and library versions, so a result that
does not say what produced it cannot be compared. Flat scalar keys, so summary.csv and
``compare --group-by`` can use each one."""

from __future__ import annotations

import platform
import socket
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
import torchvision

PACKAGE = Path(__file__).resolve().parent.parent  # gradinv_exp/
# metrics.json's keys read from the clock: they differ between two runs of one config
CLOCK = ("started", "ended", "wall_s", "run_s")


def version() -> str:
    """The installed gradinv_exp version (``unknown`` when run from an uninstalled copy)."""
    try:
        return metadata.version("gradinv_exp")
    except metadata.PackageNotFoundError:
        return "unknown"


def git(folder: Path = PACKAGE.parent) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the checkout holding the package, or (None, None) when it is not
    in a git checkout (an installed wheel) or git is not installed."""
    if not (folder / ".git").exists():
        return None, None
    try:
        commit = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
        status = subprocess.run(
            ["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None, None
    return commit, bool(status.strip())


def now() -> str:
    """The current time, UTC, ISO 8601 to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def device_name(device: torch.device) -> str:
    """``cpu (N threads)`` or the CUDA device's name."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} ({torch.get_num_threads()} threads)"


def started(device: torch.device) -> dict[str, Any]:
    """Everything but the end time, taken when the run starts."""
    commit, dirty = git()
    return {
        "version": version(),
        "git_commit": commit,
        "git_dirty": dirty,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "device_name": device_name(device),
        "host": socket.gethostname(),
        "started": now(),
    }
