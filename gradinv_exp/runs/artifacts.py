"""Writing result files: JSON, CSV, text, images.npz and figures.

Every file is written to a temporary name in the same folder and renamed into place,
so a reader (the sweep summary, the compare command) never sees half a file; a disk that
fills up while a file is written leaves the file as it was and raises ``DiskFull``, whose
one line names the file and how to finish the run. The
temporary file is created like any new file, with the mode the user's umask gives
(0644 under umask 022), so results on a shared cluster folder stay readable.
"""

from __future__ import annotations

import errno
import json
import math
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure
    from torch import Tensor


FULL = (errno.ENOSPC, errno.EDQUOT)  # no space left on the device; the user's quota used up


class DiskFull(OSError):
    """A result file could not be written for want of space. Its message names the file and
    says how to finish: free space and run the command again into the same folder (resume
    skips the runs that finished, and a run without metrics.json runs again)."""


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a new temporary file beside ``path``, then rename it to
    ``path``; on any exception (an interrupt included) the temporary file is removed.

    The file ``.<name>.<random>.tmp`` is created with ``O_EXCL`` and mode 0666, so that
    the kernel applies the umask (and a folder's default ACL) as for any new file;
    ``tempfile.mkstemp`` would create it 0600, and the rename keeps the mode. It is
    created inside the ``try``: a signal right after it exists still removes it. A full
    disk (or quota) becomes ``DiskFull``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")  # 64 random bits
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        write(tmp)
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, OSError) and err.errno in FULL and not isinstance(err, DiskFull):
            raise DiskFull(
                err.errno,
                f"{os.strerror(err.errno)}: {path} was not written; free space, then run the "
                "command again into the same folder (hydra.run.dir or hydra.sweep.dir) to "
                "finish it",
            ) from err
        raise


def remove_partial(run_dir: Path) -> None:
    """Remove the temporary files (``atomic_write``'s ``.*.tmp``) that a process killed
    while writing left in ``run_dir``: half a file, never a result. Only for a folder
    whose writer is gone (its job lock is free, or held by this process)."""
    for left in run_dir.glob(".*.tmp"):
        left.unlink(missing_ok=True)


def _json_safe(value: Any) -> Any:
    """NaN/inf are not JSON: write them as null so any JSON reader can load the file."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_json(path: Path, data: dict[str, Any]) -> None:
    text = json.dumps(_json_safe(data), indent=2, allow_nan=False) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text))


def write_csv(path: Path, frame: pd.DataFrame) -> None:
    atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False))


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def write_images(path: Path, truth: Tensor, recon: Tensor) -> None:
    """Ground truth and final reconstruction, ``(T, B, C, H, W)`` in [0, 1], as ``.npz``.

    Kept as numbers (not only as a figure) so sweep summaries and the compare command can
    lay out reconstructions of many runs side by side.
    """

    def save(tmp: Path) -> None:
        with tmp.open("wb") as f:  # a file object: np.savez would append ".npz" to a name
            np.savez_compressed(f, truth=truth.cpu().numpy(), recon=recon.cpu().numpy())

    atomic_write(path, save)


def save_figure(path: Path, fig: Figure) -> None:
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight"))
