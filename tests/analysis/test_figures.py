"""Figures put each number where it belongs: a curve's points at their defense strengths
(not at their row numbers), with their metric and interval, on the strength's scale."""

import numpy as np
import pandas as pd
import torch
from matplotlib.collections import PolyCollection

from gradinv_exp.analysis import figures

STRENGTHS = [0.001, 0.01, 0.1, 1.0]
PSNR = [30.0, 22.0, 12.0, 8.0]


def points(order: list[int]) -> pd.DataFrame:
    """One pooled row per noise strength (rows in ``order``) and one without a defense."""
    rows = [
        {"defense": "noise", "strength": STRENGTHS[i], "strength_key": "sigma",
         "strength_log": True, "psnr": PSNR[i], "psnr_ci_low": PSNR[i] - 1,
         "psnr_ci_high": PSNR[i] + 2}
        for i in order
    ]  # fmt: skip
    rows.append(
        {"defense": "none", "strength": np.nan, "strength_key": None, "strength_log": False,
         "psnr": 35.0, "psnr_ci_low": 34.0, "psnr_ci_high": 36.0}
    )  # fmt: skip
    return pd.DataFrame(rows)


def test_curve_points_sit_at_their_strengths_whatever_the_row_order():
    for order in ([0, 1, 2, 3], [2, 0, 3, 1]):
        ax = figures.curves(points(order), "psnr").axes[0]
        line = ax.lines[0]
        assert list(line.get_xdata()) == STRENGTHS
        assert list(line.get_ydata()) == PSNR
        assert ax.get_xscale() == "log" and ax.get_xlabel() == "noise: sigma"
        band = next(c for c in ax.collections if isinstance(c, PolyCollection))
        xs, ys = band.get_paths()[0].vertices.T
        assert set(np.round(xs, 12)) == set(STRENGTHS)  # the interval spans the same x
        assert ys.min() == min(PSNR) - 1 and ys.max() == max(PSNR) + 2
        reference = [a for a in ax.lines if list(a.get_ydata()) == [35.0, 35.0]]
        assert len(reference) == 1  # no defense: a dashed line at its PSNR


def test_progress_shows_every_snapshot_under_its_step_on_one_image():
    steps = range(0, 130, 10)  # 13 snapshots of 2 trials x 3 images
    snapshots = [(s, torch.rand(2, 3, 3, 8, 8)) for s in steps]
    fig = figures.progress(snapshots, columns=5)
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.texts] == [f"step {s}" for s in steps]
    grid = ax.images[0].get_array()
    frame = figures.to_image(snapshots[7][1])  # row 1, column 2 of the grid
    height, width = frame.shape[:2]
    band, pad = max(8, height // 4), 2
    assert grid.shape[:2] == (pad + 3 * (band + height + pad), pad + 5 * (width + pad))
    top, left = pad + (band + height + pad) + band, pad + 2 * (width + pad)
    np.testing.assert_allclose(grid[top : top + height, left : left + width], frame, atol=1e-6)
    assert ax.texts[7].get_position() == (left + width / 2, top - band / 2)
