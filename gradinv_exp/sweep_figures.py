"""Figures over many runs: reconstructions side by side, and metric against strength.

Both take the DataFrame of ``summary.collect`` (one row per run, ``run`` = its folder).
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from gradinv_exp import artifacts
from gradinv_exp.defense_config import strength_log


def load_images(run_dir: str) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(truth, recon), each ``(T, B, C, H, W)`` in [0, 1], or None if the run saved none."""
    path = Path(run_dir) / "images.npz"
    if not path.exists():
        return None
    try:
        with np.load(path) as data:
            return torch.from_numpy(data["truth"]), torch.from_numpy(data["recon"])
    except (OSError, ValueError, KeyError):
        return None


def comparison(frame: pd.DataFrame, labels: list[str], columns: int = 6) -> Figure:
    """Ground truth, then each run's final reconstruction titled by its label and PSNR.

    A run without images (failed, missing) keeps its panel, titled with its status. When
    runs attacked different images, each run's panel shows its own truth above it.
    """
    images = [load_images(run) for run in frame["run"]]
    truths = [pair[0] for pair in images if pair is not None]
    shared = all(t.shape == truths[0].shape and torch.equal(t, truths[0]) for t in truths)
    panels = len(frame) + 1
    cols = min(columns, panels)
    rows = math.ceil(panels / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 2.6 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    if truths and shared:
        artifacts.show(axes.flat[0], truths[0], "ground truth")
    for ax, pair, name, (_, row) in zip(axes.flat[1:], images, labels, frame.iterrows()):
        status = row["status"]
        if pair is None:
            ax.set_title(f"{name}\n{status}: no image", fontsize=7)
            continue
        shown = pair[1] if shared else torch.cat([pair[0], pair[1]], dim=0)
        psnr = row.get("psnr")
        score = f"PSNR {psnr:.1f} dB" if pd.notna(psnr) else "PSNR n/a"
        suffix = "" if status == "ok" else f" ({status})"
        artifacts.show(ax, shown, f"{name}\n{score}{suffix}")
        ax.title.set_fontsize(7)
    fig.tight_layout()
    return fig


def curves(frame: pd.DataFrame, metric: str = "psnr", group_by: str | None = None) -> Figure:
    """``metric`` against strength: one panel per defense (each has its own unit), one line
    per ``group_by`` value; runs without a strength (no defense) are a dashed reference.

    Points are the mean over runs at that strength, bars their standard deviation.
    """
    if metric not in frame:  # every run failed: empty panels, not an error
        frame = frame.assign(**{metric: np.nan})
    done = frame[frame[metric].notna()]
    swept = done[done["strength"].notna()]
    defenses = list(dict.fromkeys(swept["defense"])) or ["(no defense with a strength)"]
    fig, axes = plt.subplots(
        1, len(defenses), figsize=(4.2 * len(defenses), 3.2), squeeze=False, sharey=True
    )
    references = done[done["strength"].isna()]
    for ax, defense in zip(axes[0], defenses):
        runs = swept[swept["defense"] == defense]
        groups = runs.groupby(group_by, dropna=False) if group_by else [(defense, runs)]
        for name, group in groups:
            stats = group.groupby("strength")[metric].agg(["mean", "std"]).reset_index()
            ax.errorbar(
                stats["strength"], stats["mean"], yerr=stats["std"].fillna(0), marker="o",
                capsize=2, label=f"{group_by}={name}" if group_by else defense,
            )  # fmt: skip
        for name, group in references.groupby("defense", dropna=False):
            ax.axhline(group[metric].mean(), ls="--", color="gray", label=f"{name}")
        if strength_log(defense):
            ax.set_xscale("log")
        key = runs["strength_key"].iloc[0] if len(runs) else "strength"
        ax.set(xlabel=f"{defense}: {key}", ylabel=metric, title=defense)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
