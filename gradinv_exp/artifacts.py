"""Files a run leaves behind: metrics.json, history.csv and three figures.

Every file is written to a temporary name in the same folder and renamed into place,
so a reader (the sweep summary, the compare command) never sees half a file.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from torch import Tensor  # noqa: E402
from torchvision.utils import make_grid  # noqa: E402


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
    plt.close(fig)


def to_image(images: Tensor) -> Any:
    """(T, B, C, H, W) in [0, 1] -> one (H', W', C) array: a row of B images per trial."""
    flat = images.detach().float().clamp(0, 1).cpu().flatten(0, 1)
    return make_grid(flat, nrow=images.shape[1], padding=1).permute(1, 2, 0).numpy()


def show(ax: plt.Axes, images: Tensor, title: str) -> None:
    ax.imshow(to_image(images), interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def progress_figure(snapshots: Sequence[tuple[int, Tensor]], columns: int = 10) -> Figure:
    """The reconstruction at each snapshot, titled with its step, ``columns`` per row."""
    rows = math.ceil(len(snapshots) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(1.3 * columns, 1.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (step, images) in zip(axes.flat, snapshots):
        show(ax, images, f"step {step}")
    return fig


def reconstruction_figure(truth: Tensor, recon: Tensor, title: str) -> Figure:
    """Ground truth | reconstruction | |difference|, each ``(T, B, C, H, W)`` as a grid."""
    trials, batch = truth.shape[:2]
    fig, axes = plt.subplots(1, 3, figsize=(3 + 1.5 * batch, 0.8 + 1.3 * trials), squeeze=False)
    recon = recon.detach().clamp(0, 1).to(truth.device)
    for ax, images, name in zip(
        axes[0], (truth, recon, (truth - recon).abs()), ("ground truth", "reconstruction", "|diff|")
    ):
        show(ax, images, name)
    fig.suptitle(title, fontsize=9)
    return fig


def loss_figure(history: pd.DataFrame) -> Figure:
    """Gradient-matching loss (log scale) and PSNR against the step."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3))
    left.semilogy(history["step"], history["grad_loss"].clip(lower=1e-30))
    left.set(xlabel="step", ylabel="gradient matching loss", title="attack objective")
    right.plot(history["step"], history["psnr"])
    right.set(xlabel="step", ylabel="PSNR [dB]", title="reconstruction quality")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
