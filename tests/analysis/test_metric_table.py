"""The one metric table: what it lists is what a run computes and records, and its facts
(direction, proportion, unit) decide the success criterion, the intervals and the axes."""

import numpy as np
import pandas as pd
import pytest
import torch

from gradinv_exp.analysis import figures, metric_table, metrics, report, uncertainty
from gradinv_exp.analysis.metric_table import METRICS
from gradinv_exp.base.options import ConfigError
from gradinv_exp.compare import parse
from gradinv_exp.config import MetricsConfig


def test_the_table_lists_exactly_what_a_run_computes_per_image():
    """A metric added to the table without its function (or the reverse) fails here."""
    truth = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([1, 2])
    scores = metrics.evaluate(truth, labels, truth.flip(0), labels.flip(0))
    assert [k for k in scores if k != "order"] == list(metric_table.names())
    assert all(scores[name].shape == (2,) for name in metric_table.names())


def test_direction_decides_success_and_nan_never_passes():
    values = np.array([10.0, 20.0, 30.0, np.nan])
    assert METRICS["psnr"].passes(values, 20.0).tolist() == [False, True, True, False]
    assert METRICS["mse"].passes(values, 20.0).tolist() == [True, True, False, False]
    assert MetricsConfig(success_metric="lpips", success_threshold=0.3).criterion == (
        "lpips <= 0.3"
    )
    assert MetricsConfig().criterion == "psnr >= 20"


def test_success_metric_is_one_of_the_tables_criteria():
    assert metric_table.criteria() == ("psnr", "ssim", "mse", "lpips")
    with pytest.raises(ConfigError, match="success_metric='label_acc'.*psnr, ssim, mse, lpips"):
        MetricsConfig(success_metric="label_acc")


def test_a_proportion_gets_a_wilson_interval_and_others_a_t_interval():
    """100 of 100 right: Wilson gives [0.963, 1]; the t interval of equal values is a point."""
    ones = np.ones((100, 1))
    assert METRICS["label_acc"].proportion and not METRICS["ssim"].proportion
    acc = uncertainty.per_image_summary("label_acc", ones)
    assert acc["label_acc_ci_low"] == pytest.approx(0.963, abs=1e-3)
    ssim = uncertainty.per_image_summary("ssim", ones)
    assert ssim["ssim_ci_low"] == ssim["ssim_ci_high"] == 1.0


def test_units_and_directions_reach_result_lines_axes_and_compare():
    line = report.result_line({"status": "ok", "psnr": 21.0, "ssim": 0.5, "label_acc": 1.0})
    assert line.startswith("result: ok: PSNR 21.0 dB, SSIM 0.500, label acc 1.00")
    assert metric_table.axis_label("psnr") == "PSNR [dB] (higher = more leakage)"
    assert metric_table.axis_label("lpips") == "LPIPS (lower = more leakage)"
    points = pd.DataFrame(
        {"defense": ["noise"], "strength": [0.1], "strength_key": ["sigma"],
         "strength_log": [True], "mse": [0.01]}
    )  # fmt: skip
    axes = figures.curves(points, "mse").axes[0]
    assert axes.get_ylabel() == "MSE (lower = more leakage)"
    assert parse(["x", "--metric", "label_acc"]).metric == "label_acc"
    with pytest.raises(SystemExit):
        parse(["x", "--metric", "accuracy"])


def test_a_metric_added_to_the_table_is_computed_by_its_own_function(monkeypatch):
    """One entry (name + function) is all a new metric needs: evaluate calls it, in the
    table's order, on the matched pair."""
    seen = []

    def brightness(s: metrics.Scored) -> np.ndarray:
        seen.append(s.recon.shape)
        return s.recon.mean(dim=(1, 2, 3)).double().numpy()

    monkeypatch.setattr(metrics, "brightness", brightness, raising=False)
    table = metric_table.Registry("metric")
    for m in METRICS:
        table.add(m)
    table.add(metric_table.Metric("brightness", "brightness", True,
                                  "gradinv_exp.analysis.metrics:brightness"))  # fmt: skip
    monkeypatch.setattr(metrics, "METRICS", table)
    truth = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    scores = metrics.evaluate(truth, torch.tensor([1, 2]), truth.flip(0), torch.tensor([2, 1]))
    assert list(scores)[-2:] == ["brightness", "order"] and seen == [(2, 3, 8, 8)]
    assert scores["brightness"] == pytest.approx(truth.mean(dim=(1, 2, 3)).numpy())
    assert scores["label_acc"].tolist() == [1.0, 1.0]  # matched: labels follow the images
