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


def test_a_batch_of_32_is_a_grid_of_pairs_each_titled_with_its_psnr():
    """Not one row of 32 thumbnails (4767 x 168 px): 4 pairs (truth | reconstruction) a
    row, 8 rows; each reconstruction's title is the PSNR metrics.json records for it."""
    from gradinv_exp.analysis import metrics

    gen = torch.Generator().manual_seed(0)
    truth = torch.rand(1, 32, 3, 16, 16, generator=gen)
    recon = (truth + 0.1 * torch.randn(truth.shape, generator=gen)).clamp(0, 1)
    fig = figures.reconstruction(truth, recon, "ok  PSNR 20.00 dB")
    width, height = fig.get_size_inches()
    assert 0.5 < width / height < 2  # about square, not a strip
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts[0::2] == ["truth"] * 32
    assert texts[1::2] == [f"{v:.1f} dB" for v in metrics.psnr(truth[0], recon[0])]
    assert figures.pairs_per_row(32) == 4 and figures.pairs_per_row(2) == 2
    assert figures.pairs_per_row(128) == 8
    two = figures.reconstruction(
        truth[:, :2].repeat(3, 1, 1, 1, 1), recon[:, :2].repeat(3, 1, 1, 1, 1), "t"
    )
    assert [t.get_text() for t in two.axes[0].texts][1].startswith("trial 0: ")


def test_curve_bands_stay_inside_what_the_metric_can_take_and_show_the_threshold():
    """Two trials give a t interval wider than PSNR's range ([-15.8, 26.3] dB): the band
    stops at 0 dB; the runs' success threshold is a line; the axis says which way leaks."""
    frame = points([0, 1, 2, 3]).assign(
        **{"config.metrics.success_metric": "psnr", "config.metrics.success_threshold": 20.0}
    )
    frame.loc[0, ["psnr_ci_low", "psnr_ci_high"]] = [-15.8, 126.3]
    ax = figures.curves(frame, "psnr").axes[0]
    band = next(c for c in ax.collections if isinstance(c, PolyCollection))
    ys = band.get_paths()[0].vertices[:, 1]
    assert ys.min() == 0.0 and ys.max() == 100.0
    assert ax.get_ylim()[0] == 0.0
    (threshold,) = [line for line in ax.lines if line.get_label() == "success: psnr >= 20"]
    assert list(threshold.get_ydata()) == [20.0, 20.0]
    assert ax.get_ylabel() == "PSNR [dB] (higher = more leakage)"


def test_a_user_defense_sweep_is_one_line_next_to_the_built_in_ones():
    """The plugin example's soft pruning keeps its strength in defense.params.p: a column
    that changes with the strength only splits no point, so each defense is one line and
    no legend reads ``=nan``."""
    from gradinv_exp.analysis import summary

    rows = [
        {"defense": d, "strength": s, "strength_key": k, "strength_log": True, "psnr": 10.0,
         "config.defense.name": d, f"config.defense.{field}": s, "config.seed": 0}
        for d, k, field in (("soft_prune", "p", "params.p"), ("noise", "sigma", "sigma"))
        for s in (1e-3, 1e-2, 1e-1)
    ]  # fmt: skip
    frame = pd.DataFrame(rows)
    assert summary.line_keys(frame) == []
    fig = figures.curves(frame, "psnr", summary.line_keys(frame))
    for ax, name in zip(fig.axes, ("soft_prune", "noise")):
        (line,) = [li for li in ax.lines if li.get_label() == name]
        assert list(line.get_xdata()) == [1e-3, 1e-2, 1e-1]
        assert not any("nan" in t.get_text() for t in ax.get_legend().get_texts())


def test_a_closed_form_attack_has_no_empty_axes_in_loss_png():
    one = pd.DataFrame({"step": [0], "grad_loss": [0.0], "mse": [0.0], "psnr": [100.0]})
    fig = figures.loss(one)
    assert fig.axes == []
    (text,) = fig.texts
    assert text.get_text().startswith("one snapshot, at step 0: no steps to draw")
    assert "PSNR [dB] 100.0" in text.get_text()
    steps = pd.DataFrame({"step": [0, 5], "grad_loss": [1.0, 0.1], "mse": [0.1] * 2,
                          "psnr": [10.0, 12.0]})  # fmt: skip
    assert len(figures.loss(steps).axes) == 2


def test_a_large_sweep_shows_an_evenly_spaced_sample_and_says_so():
    """1,000 runs: 47 panels (the first and last run among them), not 1,000."""
    assert figures.shown_rows(5) == [0, 1, 2, 3, 4]
    picked = figures.shown_rows(1000)
    assert len(picked) == figures.PANELS and picked[0] == 0 and picked[-1] == 999
    assert np.diff(picked).min() >= 20  # spread out, not the first 47
    frame = pd.DataFrame({"run": [f"/nowhere/{i}" for i in range(100)], "status": "missing"})
    fig = figures.comparison(frame, [str(i) for i in range(100)], note="offline")
    titled = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert len(titled) == figures.PANELS and titled[0].startswith("0\n")
    assert titled[-1].startswith("99\n")
    assert fig.get_suptitle() == "offline\n47 of 100 runs, evenly spaced in summary.csv's order"
