"""Intervals over trials: the t interval of a mean and the Wilson interval of a success
rate, against scipy's own implementations and the textbook cases."""

import math

import numpy as np
import pytest
from scipy import stats

from gradinv_exp.analysis import uncertainty


def test_mean_interval_is_students_t_interval():
    values = np.array([4.1, 5.2, 30.5, 28.0, 6.3, 25.9])
    low, high = uncertainty.mean_interval(values)
    ref = stats.t.interval(0.95, len(values) - 1, loc=values.mean(), scale=stats.sem(values))
    assert (low, high) == pytest.approx(ref)
    assert low < values.mean() < high
    assert uncertainty.mean_interval(np.array([3.0, 3.0])) == (3.0, 3.0)  # no spread
    assert all(math.isnan(v) for v in uncertainty.mean_interval(np.array([7.0])))


@pytest.mark.parametrize(("k", "n"), [(0, 10), (10, 10), (3, 10), (1, 2), (37, 100)])
def test_rate_interval_is_wilsons(k, n):
    ref = stats.binomtest(k, n).proportion_ci(0.95, method="wilson")
    assert uncertainty.rate_interval(k, n) == pytest.approx((ref.low, ref.high))
    low, high = uncertainty.rate_interval(k, n)
    assert 0 <= low <= k / n <= high <= 1
    assert (low == 0) == (k == 0) and (high == 1) == (k == n)  # exact ends


def test_summary_and_success_keys_and_values():
    out = uncertainty.summary("psnr", np.array([18.0, 20.0, 22.0]))
    assert out["psnr"] == 20.0 and out["psnr_min"] == 18.0 and out["psnr_max"] == 22.0
    assert out["psnr_std"] == pytest.approx(np.std([18, 20, 22]))
    assert out["psnr_ci_low"] == pytest.approx(20 - stats.t.ppf(0.975, 2) * 2 / math.sqrt(3))
    # a wide t interval is clipped to what the metric can take: PSNR >= 0 dB, SSIM <= 1
    wide = uncertainty.summary("psnr", np.array([10.0, 20.0, 30.0]))
    assert wide["psnr_ci_low"] == 0.0  # the t interval's lower end is -4.8 dB
    assert uncertainty.summary("ssim", np.array([0.1, 0.9]))["ssim_ci_high"] == 1.0
    assert uncertainty.summary("grad_loss", np.array([-5.0, 5.0]))["grad_loss_ci_low"] < -5
    rate = uncertainty.success(np.array([[True, False], [True, True]]))
    assert rate["success_rate"] == 0.75
    ref = stats.binomtest(3, 4).proportion_ci(0.95, method="wilson")
    assert (rate["success_rate_ci_low"], rate["success_rate_ci_high"]) == pytest.approx(
        (ref.low, ref.high)
    )


def test_label_accuracy_gets_a_wilson_interval_over_images_other_metrics_a_t_interval():
    all_right = np.ones((100, 1))  # iDLG: every label right, a t interval would be [1, 1]
    out = uncertainty.per_image_summary("label_acc", all_right)
    ref = stats.binomtest(100, 100).proportion_ci(0.95, method="wilson")
    assert (out["label_acc_ci_low"], out["label_acc_ci_high"]) == pytest.approx((ref.low, 1.0))
    assert out["label_acc_ci_low"] < 0.97
    # two pooled runs with different batch sizes: 5 of 6 images right, trial means 1, 1, .5
    pooled = uncertainty.per_image_summary("label_acc", np.ones((1, 2)), np.array([[1, 1], [1, 0]]))
    assert pooled["label_acc"] == pytest.approx(2.5 / 3)
    ref = stats.binomtest(5, 6).proportion_ci(0.95, method="wilson")
    assert (pooled["label_acc_ci_low"], pooled["label_acc_ci_high"]) == pytest.approx(
        (ref.low, ref.high)
    )
    psnr = uncertainty.per_image_summary("psnr", np.array([[20.0, 30.0], [22.0, 32.0]]))
    assert (psnr["psnr_ci_low"], psnr["psnr_ci_high"]) == pytest.approx(
        uncertainty.mean_interval(np.array([25.0, 27.0]))
    )


def test_describe_reports_rate_and_mean_with_their_intervals():
    psnrs = np.array([10.0, 25.0, 30.0, 45.0])
    low, high = uncertainty.mean_interval(psnrs)
    rate = stats.binomtest(3, 4).proportion_ci(0.95, method="wilson")
    assert uncertainty.describe(psnrs) == (
        f"success (PSNR >= 20 dB) 0.75 [{rate.low:.2f}, {rate.high:.2f}], "
        f"mean PSNR  27.5 dB [{low:5.1f}, {high:5.1f}]"
    )
