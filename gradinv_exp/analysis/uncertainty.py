"""Uncertainty over trials: confidence intervals of means and of success rates.

A single attack run on these models is a coin toss (the model init alone moves a
reconstruction from failure to success), so every aggregated number comes with a 95%
interval over its trials:

- a metric's mean: Student's t interval, mean +- t(0.975, n-1) * s / sqrt(n). It is
  exact for normal values and needs no resampling, so it is deterministic and defined
  for the small n of a quick run (n >= 2); for the bimodal PSNR of attacks that either
  succeed or fail it leans on the central limit theorem, so use tens of trials for a
  claim. One trial has no interval (null).
- a success rate, and label accuracy (the fraction of images whose label was
  recovered): the Wilson score interval for a binomial proportion over all images,
  which stays inside [0, 1] and has a width at 0/n and n/n (the normal "Wald" interval,
  and the t interval of per-trial accuracies, collapse to a point there: 100 of 100
  labels right is [0.963, 1], not [1, 1]), the usual choice for small n.
"""

from __future__ import annotations

import math

import numpy as np

from gradinv_exp.analysis.metric_table import METRICS

LEVEL = 0.95
# The bound a verdict judges a success rate's interval against (analysis/verdict.py: a
# defense stops an attack when the upper end is at most this); here, where ``compare``
# reads its default without loading the analysis.
VERDICT_THRESHOLD = 0.05


def mean_interval(values: np.ndarray) -> tuple[float, float]:
    """95% t interval of the mean of ``values`` (1-D); (nan, nan) for fewer than 2."""
    values = np.asarray(values, dtype=float)
    n = len(values)
    if n < 2:
        return math.nan, math.nan
    from scipy import stats  # ~1 s to import: not for compare --help or its errors

    mean, sem = float(values.mean()), float(values.std(ddof=1) / math.sqrt(n))
    half = float(stats.t.ppf(0.5 + LEVEL / 2, n - 1)) * sem
    return mean - half, mean + half


def rate_interval(successes: int, n: int) -> tuple[float, float]:
    """95% Wilson score interval of a proportion ``successes / n``; (nan, nan) for n = 0."""
    if n == 0:
        return math.nan, math.nan
    from scipy import stats

    z = float(stats.norm.ppf(0.5 + LEVEL / 2))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    low = 0.0 if successes == 0 else max(0.0, centre - half)  # exact ends, no rounding dust
    return low, 1.0 if successes == n else min(1.0, centre + half)


def summary(name: str, values: np.ndarray) -> dict[str, float]:
    """``name`` (the mean over trials), ``name_std``, ``_min``, ``_max`` and the 95%
    interval of the mean, ``name_ci_low`` / ``name_ci_high``, clipped to the values a
    metric of the table can take (``Metric.bounds``: a mean PSNR is never below 0 dB,
    however few the trials); NaN values (a metric that could not be computed) make every
    entry NaN."""
    values = np.asarray(values, dtype=float)
    low, high = mean_interval(values)
    if name in METRICS:
        floor, ceiling = METRICS[name].bounds
        low, high = max(low, floor), min(high, ceiling)  # NaN stays NaN
    return {
        name: float(values.mean()),
        f"{name}_std": float(values.std()),
        f"{name}_min": float(values.min()),
        f"{name}_max": float(values.max()),
        f"{name}_ci_low": low,
        f"{name}_ci_high": high,
    }


def per_image_summary(name: str, *runs: np.ndarray) -> dict[str, float]:
    """``summary`` of one score per image, given per run as ``(T, B)`` (runs pooled may
    differ in T and B): the mean, std, min and max are over all the per-trial means;
    the interval is the t interval of that mean, or for a proportion (``metric_table``)
    the Wilson interval over all images."""
    blocks = [np.asarray(r, dtype=float) for r in runs]
    row = summary(name, np.concatenate([b.mean(axis=1) for b in blocks]))
    images = np.concatenate([b.ravel() for b in blocks])
    if name in METRICS and METRICS[name].proportion and not np.isnan(images).any():
        correct = int(np.rint(images).sum())
        row[f"{name}_ci_low"], row[f"{name}_ci_high"] = rate_interval(correct, images.size)
    return row


def success(passed: np.ndarray) -> dict[str, float]:
    """``success_rate`` (fraction of True in ``passed``, any shape) and its 95% Wilson
    interval. With B > 1 images per trial the images of one batch are not independent,
    so the interval is then narrower than it should be."""
    passed = np.asarray(passed, dtype=bool).ravel()
    low, high = rate_interval(int(passed.sum()), len(passed))
    return {
        "success_rate": float(passed.mean()) if len(passed) else math.nan,
        "success_rate_ci_low": low,
        "success_rate_ci_high": high,
    }


def describe(psnrs: np.ndarray, threshold: float = 20.0) -> str:
    """One line for a report: the success rate (PSNR >= ``threshold`` dB) with its Wilson
    interval and the mean PSNR with its t interval, over the 1-D ``psnrs``."""
    values = np.asarray(psnrs, dtype=float)
    low, high = mean_interval(values)
    rate = success(values >= threshold)
    return (
        f"success (PSNR >= {threshold:g} dB) {rate['success_rate']:.2f} "
        f"[{rate['success_rate_ci_low']:.2f}, {rate['success_rate_ci_high']:.2f}], "
        f"mean PSNR {values.mean():5.1f} dB [{low:5.1f}, {high:5.1f}]"
    )
