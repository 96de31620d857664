"""Uncertainty over trials: confidence intervals of means and of success rates.

A single attack run on these models is a coin toss (the model init alone moves a
reconstruction from failure to success), so every aggregated number comes with a 95%
interval over its trials:

- a metric's mean: Student's t interval, mean +- t(0.975, n-1) * s / sqrt(n). It is
  exact for normal values and needs no resampling, so it is deterministic and defined
  for the small n of a quick run (n >= 2); for the bimodal PSNR of attacks that either
  succeed or fail it leans on the central limit theorem, so use tens of trials for a
  claim. One trial has no interval (null).
- a success rate: the Wilson score interval for a binomial proportion, which stays
  inside [0, 1] and has a width at 0/n and n/n (the normal "Wald" interval collapses to
  a point there), the usual choice for small n.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

LEVEL = 0.95


def mean_interval(values: np.ndarray) -> tuple[float, float]:
    """95% t interval of the mean of ``values`` (1-D); (nan, nan) for fewer than 2."""
    values = np.asarray(values, dtype=float)
    n = len(values)
    if n < 2:
        return math.nan, math.nan
    mean, sem = float(values.mean()), float(values.std(ddof=1) / math.sqrt(n))
    half = float(stats.t.ppf(0.5 + LEVEL / 2, n - 1)) * sem
    return mean - half, mean + half


def rate_interval(successes: int, n: int) -> tuple[float, float]:
    """95% Wilson score interval of a proportion ``successes / n``; (nan, nan) for n = 0."""
    if n == 0:
        return math.nan, math.nan
    z = float(stats.norm.ppf(0.5 + LEVEL / 2))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    low = 0.0 if successes == 0 else max(0.0, centre - half)  # exact ends, no rounding dust
    return low, 1.0 if successes == n else min(1.0, centre + half)


def summary(name: str, values: np.ndarray) -> dict[str, float]:
    """``name`` (the mean over trials), ``name_std``, ``_min``, ``_max`` and the 95%
    interval of the mean, ``name_ci_low`` / ``name_ci_high``; NaN values (a metric that
    could not be computed) make every entry NaN."""
    values = np.asarray(values, dtype=float)
    low, high = mean_interval(values)
    return {
        name: float(values.mean()),
        f"{name}_std": float(values.std()),
        f"{name}_min": float(values.min()),
        f"{name}_max": float(values.max()),
        f"{name}_ci_low": low,
        f"{name}_ci_high": high,
    }


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
