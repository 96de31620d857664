"""Figures put each number where it belongs: a curve's points at their defense strengths
(not at their row numbers), with their metric and interval, on the strength's scale."""

import numpy as np
import pandas as pd
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
