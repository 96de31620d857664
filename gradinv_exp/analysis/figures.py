"""Figures: of one run (progress, reconstruction, loss) and over many runs (comparison of
reconstructions, metric against defense strength).

Figures are built as ``matplotlib.figure.Figure`` objects, not through pyplot: no
backend or global figure registry is involved, so nothing needs a display or closing.
The sweep figures take the DataFrame of ``summary.collect`` (one row per run).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torchvision.utils import make_grid

from gradinv_exp.analysis import metric_table, metrics
from gradinv_exp.base.status import Status

# --- one run ----------------------------------------------------------------------------


def to_image(images: torch.Tensor) -> Any:
    """(T, B, C, H, W) in [0, 1] -> one (H', W', C) array: a row of B images per trial."""
    flat = images.detach().float().clamp(0, 1).cpu().flatten(0, 1)
    return make_grid(flat, nrow=images.shape[1], padding=1).permute(1, 2, 0).numpy()


def show(ax: Axes, images: torch.Tensor, title: str) -> None:
    ax.imshow(to_image(images), interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def progress(snapshots: Sequence[tuple[int, torch.Tensor]], columns: int = 10) -> Figure:
    """The reconstruction at each snapshot, titled with its step, ``columns`` per row.

    One image of all the snapshots on one Axes, each under a white band with its step: a
    300-step run has 31 snapshots, and an Axes per snapshot made this figure cost most of
    the time a run spends writing its files."""
    frames = [torch.from_numpy(to_image(images)).permute(2, 0, 1) for _, images in snapshots]
    _, height, width = frames[0].shape
    band = max(8, height // 4)  # room for the step above each frame
    framed = torch.stack([torch.nn.functional.pad(f, (0, 0, band, 0), value=1.0) for f in frames])
    pad = 2
    grid = make_grid(framed, nrow=columns, padding=pad, pad_value=1.0)
    rows = math.ceil(len(frames) / columns)
    fig = Figure(figsize=(1.3 * min(columns, len(frames)), 1.4 * rows))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.axis("off")
    for n, (step, _) in enumerate(snapshots):
        row, col = divmod(n, columns)
        x = pad + col * (width + pad) + width / 2
        y = pad + row * (height + band + pad) + band / 2
        ax.text(x, y, f"step {step}", ha="center", va="center", fontsize=8)
    return fig


def pairs_per_row(images: int) -> int:
    """How many (truth, reconstruction) pairs a row of ``reconstruction`` holds: up to 4
    side by side, more for large batches so that the grid stays about square (a pair is
    twice as wide as it is high)."""
    return min(images, max(4, math.ceil(math.sqrt(images / 2))))


def reconstruction(truth: torch.Tensor, recon: torch.Tensor, title: str) -> Figure:
    """Each image as a pair, ground truth | reconstruction, the reconstruction titled with
    its PSNR (``metrics.psnr``, as metrics.json's ``per_image``), the pairs in a grid of
    ``pairs_per_row`` columns (a batch of 32: 4 x 8); ``truth`` and ``recon`` are
    ``(T, B, C, H, W)`` in [0, 1], ``recon`` matched to ``truth``. With several trials,
    each title starts with the trial. Drawn as one image, like ``progress``."""
    trials, batch, _, height, width = truth.shape
    recon = recon.detach().float().clamp(0, 1).cpu()
    truth = truth.detach().float().cpu()
    scores = [metrics.psnr(truth[t], recon[t]) for t in range(trials)]  # (B,) per trial
    band, gap, pad = max(8, height // 2), max(1, width // 16), max(2, width // 8)
    pairs = [
        torch.nn.functional.pad(torch.cat([truth[t, b], torch.ones(truth.shape[2], height, gap),
                                           recon[t, b]], dim=2), (0, 0, band, 0), value=1.0)
        for t in range(trials) for b in range(batch)
    ]  # fmt: skip
    columns = pairs_per_row(len(pairs))
    grid = make_grid(torch.stack(pairs), nrow=columns, padding=pad, pad_value=1.0)
    inch = 1.0 / width  # an image 1 inch wide; the title above the grid
    wide, high, head = grid.shape[2] * inch, grid.shape[1] * inch, 0.45
    fig = Figure(figsize=(wide, high + head))
    ax = fig.add_axes((0, 0, 1, high / (high + head)))
    ax.imshow(grid.permute(1, 2, 0).numpy().squeeze(), interpolation="nearest",
              cmap="gray", vmin=0, vmax=1)  # fmt: skip
    ax.axis("off")
    for n in range(len(pairs)):
        t, b = divmod(n, batch)
        row, col = divmod(n, columns)
        left = pad + col * (2 * width + gap + pad)
        y = pad + row * (height + band + pad) + band / 2
        which = f"trial {t}: " if trials > 1 else ""
        ax.text(left + width / 2, y, "truth", ha="center", va="center", fontsize=7)
        ax.text(left + width + gap + width / 2, y, f"{which}{scores[t][b]:.1f} dB",
                ha="center", va="center", fontsize=7)  # fmt: skip
    fig.suptitle(f"{title}\nground truth | reconstruction (PSNR)", fontsize=8, y=0.995)
    return fig


def loss(history: pd.DataFrame) -> Figure:
    """Gradient-matching loss (log scale) and PSNR against the step. A run with one
    snapshot (a closed-form attack, ``analytic`` or ``imprint``, takes no step) gets a
    line that says so with its values instead of empty axes."""
    if len(history) < 2:
        fig = Figure(figsize=(6, 1.6))
        text = "no snapshot: nothing to draw"
        if len(history):
            last = history.iloc[-1]
            text = (
                f"one snapshot, at step {int(last['step'])}: no steps to draw (a closed-form "
                f"attack takes none)\ngradient matching loss {last['grad_loss']:.3g}, "
                f"{metric_table.label('psnr')} {last['psnr']:.1f}"
            )
        fig.text(0.5, 0.5, text, ha="center", va="center", fontsize=10)
        return fig
    fig = Figure(figsize=(9, 3))
    left, right = fig.subplots(1, 2)
    left.semilogy(history["step"], history["grad_loss"].clip(lower=1e-30))
    left.set(xlabel="step", ylabel="gradient matching loss", title="attack objective")
    right.plot(history["step"], history["psnr"])
    right.set(xlabel="step", ylabel=metric_table.axis_label("psnr"), title="reconstruction quality")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


# --- many runs --------------------------------------------------------------------------


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


def extremes(truth: torch.Tensor, recon: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The best and the worst reconstructed image of the first trial's batch (by PSNR;
    ``recon`` is matched to ``truth``), as ``(1, 2, C, H, W)`` each: a large batch's
    panel shows how much of it came back, not a wall of thumbnails."""
    errors = (truth[0] - recon[0]).pow(2).flatten(1).mean(1)
    index = torch.stack([errors.argmin(), errors.argmax()])
    return truth[:1, index], recon[:1, index]


BATCH_SHOWN = 2  # a panel shows a batch larger than this by its best and worst image
PANELS = 47  # runs a comparison shows at most (with the truth's panel, 8 rows of 6)


def shown_rows(runs: int, panels: int = PANELS) -> list[int]:
    """The rows of a table of ``runs`` runs that a comparison shows: all of them, or
    ``panels`` evenly spaced in the table's order (defense, strength, folder), the first
    and the last among them, so that every part of a large sweep appears."""
    if runs <= panels:
        return list(range(runs))
    return sorted({round(i * (runs - 1) / (panels - 1)) for i in range(panels)})


def comparison(frame: pd.DataFrame, labels: list[str], columns: int = 6, note: str = "") -> Figure:
    """Ground truth, then each run's final reconstruction titled by its label and PSNR;
    ``note`` (e.g. that bundled photos stood in for the data set) titles the figure. Of
    more than ``PANELS`` runs, ``shown_rows`` picks the ones shown, and the title says so.

    A run without images (failed, missing) keeps its panel, titled with its status. When
    runs attacked different images, each run's panel shows its own truth above it. A
    batch of more than ``BATCH_SHOWN`` images is shown by its best and worst
    reconstruction (``extremes``), each above its own truth, with the fraction of the
    batch recovered.
    """
    total = len(frame)
    picked = shown_rows(total)
    frame, labels = frame.iloc[picked], [labels[i] for i in picked]
    if len(picked) < total:
        sampled = f"{len(picked)} of {total} runs, evenly spaced in summary.csv's order"
        note = f"{note}\n{sampled}" if note else sampled
    images = [load_images(run) for run in frame["run"]]
    large = any(p is not None and p[0].shape[1] > BATCH_SHOWN for p in images)
    if large:
        images = [None if p is None else extremes(*p) for p in images]
    truths = [pair[0] for pair in images if pair is not None]
    shared = not large and all(
        t.shape == truths[0].shape and torch.equal(t, truths[0]) for t in truths
    )
    panels = len(frame) + 1
    cols = min(columns, panels)
    rows = math.ceil(panels / cols)
    fig = Figure(figsize=(1.9 * cols, 2.6 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    if truths and shared:
        show(axes.flat[0], truths[0], "ground truth")
    for ax, pair, name, (_, row) in zip(axes.flat[1:], images, labels, frame.iterrows()):
        status = row["status"]
        if pair is None:
            ax.set_title(f"{name}\n{status}: no image", fontsize=7)
            continue
        shown = pair[1] if shared else torch.cat([pair[0], pair[1]], dim=0)
        psnr = row.get("psnr")
        score = f"PSNR {psnr:.1f} dB" if pd.notna(psnr) else "PSNR n/a"
        suffix = "" if status == Status.OK else f" ({status})"
        recovered = row.get("batch_recovered")
        if large and pd.notna(recovered):
            suffix += f"\nbest | worst, {recovered:.0%} of batch"
        show(ax, shown, f"{name}\n{score}{suffix}")
        ax.title.set_fontsize(7)
    if note:  # above the panels' titles: tight_layout leaves it no room of its own
        fig.suptitle(note, fontsize=8, y=0.998)
    top = 1 - 0.16 * (note.count("\n") + 1) / fig.get_figheight() if note else 1
    fig.tight_layout(rect=(0, 0, 1, top))
    return fig


def curves(
    points: pd.DataFrame,
    metric: str = metric_table.PRIMARY,
    lines: Sequence[str] = (),
    note: str = "",
) -> Figure:
    """``metric`` against strength: one panel per defense (each has its own unit), one line
    per combination of the ``lines`` columns' values, the 95% interval of the mean as a
    band, clipped to the values the metric can take (``Metric.bounds``: PSNR >= 0 dB);
    settings without a strength (no defense) are dashed reference lines with their bands;
    the runs' success threshold, when they judge success by ``metric``, a dotted line;
    the y axis says which way is more leakage; ``note`` titles the figure.

    ``points`` has one row per (defense, strength, *lines) with the metric pooled over
    all trials of its runs (``summary.pool``).
    """
    if points.empty or metric not in points:  # every run failed: empty panels, not an error
        points = pd.DataFrame(
            columns=["defense", "strength", "strength_key", "strength_log", metric, *lines]
        )
    low, high = f"{metric}_ci_low", f"{metric}_ci_high"
    floor, ceiling = metric_table.METRICS[metric].bounds if metric in metric_table.METRICS else (
        -math.inf, math.inf)  # fmt: skip
    points = points.assign(**{c: points.get(c, np.nan) for c in (low, high)})
    points = points.assign(**{
        low: pd.to_numeric(points[low], errors="coerce").clip(lower=floor, upper=ceiling),
        high: pd.to_numeric(points[high], errors="coerce").clip(lower=floor, upper=ceiling),
    })  # fmt: skip
    done = points[points[metric].notna()]
    swept = done[done["strength"].notna()]
    defenses = list(dict.fromkeys(swept["defense"])) or ["no defense strength swept"]
    fig = Figure(figsize=(4.2 * len(defenses), 3.4))
    axes = fig.subplots(1, len(defenses), squeeze=False, sharey=True)
    references = done[done["strength"].isna()]
    for ax, defense in zip(axes[0], defenses):
        runs = swept[swept["defense"] == defense].sort_values("strength")
        groups = runs.groupby(list(lines), dropna=False) if lines else [((), runs)]
        if runs.empty:  # no strength swept: the settings' reference lines alone
            groups = []
            ax.set_xticks([])
        for values, group in groups:
            line = ax.plot(
                group["strength"], group[metric], marker="o",
                label=setting(lines, values) or defense,
            )[0]  # fmt: skip
            x, y = group["strength"].to_numpy(float), group[metric].to_numpy(float)
            lo, hi = group[low].to_numpy(float), group[high].to_numpy(float)
            ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
            ax.errorbar(x, y, yerr=[y - lo, hi - y], fmt="none", color=line.get_color(), capsize=2)
        for _, ref in references.iterrows():
            name = ", ".join(filter(None, [ref["defense"], setting(lines, ref[list(lines)])]))
            ax.axhline(ref[metric], ls="--", color="gray", label=name)
            if pd.notna(ref[low]):
                ax.axhspan(ref[low], ref[high], color="gray", alpha=0.1, linewidth=0)
        for criterion, threshold in thresholds(done, metric):
            ax.axhline(threshold, ls=":", color="black", linewidth=1, label=f"success: {criterion}")
        if runs["strength_log"].any():
            ax.set_xscale("log")
        key = runs["strength_key"].iloc[0] if len(runs) else "strength"
        xlabel = f"{defense}: {key}" if len(runs) else ""
        ax.set(xlabel=xlabel, ylabel=metric_table.axis_label(metric), title=defense)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # an empty panel has no legend
            ax.legend(fontsize=7)
    if math.isfinite(floor) and len(done):
        axes[0][0].set_ylim(bottom=max(floor, axes[0][0].get_ylim()[0]))
    fig.text(0.01, 0.01, "bands: 95% interval of the mean over trials", fontsize=6, alpha=0.7)
    if note:
        fig.suptitle(note, fontsize=8)
    fig.tight_layout()
    return fig


def thresholds(points: pd.DataFrame, metric: str) -> list[tuple[str, float]]:
    """The success criteria (``psnr >= 20``) and thresholds of the runs in ``points`` that
    judge success by ``metric`` (their ``config.metrics.*``): the line a reader compares
    with."""
    if "config.metrics.success_metric" not in points:
        return []
    judged = points[points["config.metrics.success_metric"] == metric]
    found = pd.to_numeric(judged.get("config.metrics.success_threshold"), errors="coerce")
    sign = metric_table.METRICS[metric].sign() if metric in metric_table.METRICS else ">="
    return [(f"{metric} {sign} {t:g}", float(t)) for t in sorted(set(found.dropna()))]


def setting(keys: Sequence[str], values: Any) -> str:
    """``k=v, ...`` of a curve's line keys (``config.`` dropped) for its legend; a key the
    line has no value of (NaN: another defense's field) is left out."""
    return ", ".join(
        f"{k.removeprefix('config.')}={v}"
        for k, v in zip(keys, values)
        if not (isinstance(v, float) and math.isnan(v))
    )
