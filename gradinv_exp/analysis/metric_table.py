"""The one table of reconstruction metrics: each metric's name (its key in metrics.json,
history.csv and summary.csv), how it reads (title, unit, number format), its direction
(is higher better?) and whether it is a proportion (a per-image 0/1 outcome).

Everything that lists, orders, labels or judges metrics reads this table: the run's
metrics.json (``experiment``), the intervals (``uncertainty``: a proportion gets a Wilson
interval), the success criterion (``config.MetricsConfig``), sweep summaries and compare
(``summary``, ``compare --metric``), result lines (``report``) and figure axes
(``figures``, ``tradeoff``). Each entry names its per-image function (``fn``, a
``module:function`` taking a ``metrics.Scored`` pair and returning ``(B,)`` values), which
``metrics.evaluate`` calls in the table's order: a new metric is one entry here and its
function.

No torch, numpy only: ``config`` checks ``metrics.success_metric`` against this table
before the command line loads torch (see ``__main__``); so ``fn`` is a name, imported
when a run first scores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from gradinv_exp.base.options import Registry


@dataclass(frozen=True)
class Metric:
    """One per-image metric (values of shape ``(T, B)`` per run, see ``metrics.evaluate``)."""

    name: str  # the key in metrics.json, history.csv, summary.csv
    title: str  # how a reader calls it: "PSNR"
    higher_is_better: bool
    fn: str  # its per-image function, module:function (metrics.Scored -> (B,) values)
    unit: str = ""  # "dB"; "" for unitless
    proportion: bool = False  # a 0/1 outcome per image: its interval is Wilson's
    criterion: bool = True  # may decide ``success_rate`` (``metrics.success_metric``)
    fmt: str = ".3f"  # how one value prints in a result line or a table
    # the values it can take on [0, 1] images (PSNR: capped for an exact reconstruction);
    # an interval drawn in a figure is clipped to them
    bounds: tuple[float, float] = (-math.inf, math.inf)

    @property
    def label(self) -> str:
        """The axis label: ``PSNR [dB]``, ``SSIM``."""
        return f"{self.title} [{self.unit}]" if self.unit else self.title

    @property
    def direction(self) -> str:
        """``higher = more leakage`` or ``lower = more leakage``, for axes: a better
        reconstruction is a worse defense, so "better" alone reads both ways."""
        return f"{'higher' if self.higher_is_better else 'lower'} = more leakage"

    def passes(self, values: np.ndarray, threshold: float) -> np.ndarray:
        """Elementwise: does each value meet ``threshold`` in this metric's direction
        (``>=`` when higher is better, else ``<=``)? A NaN value (not computed) never does."""
        values = np.asarray(values, dtype=float)
        with np.errstate(invalid="ignore"):
            ok = values >= threshold if self.higher_is_better else values <= threshold
        return ok & ~np.isnan(values)

    def sign(self) -> str:
        """The comparison ``passes`` makes: ``>=`` or ``<=``."""
        return ">=" if self.higher_is_better else "<="


PRIMARY = "psnr"  # what success, tables, curves and a sweep's return value read by default
METRICS: Registry[Metric] = Registry("metric")
PSNR_CAP_DB = 100.0  # the PSNR reported for an exact reconstruction instead of +inf
_FN = "gradinv_exp.analysis.metrics:"
METRICS.add(Metric(PRIMARY, "PSNR", True, _FN + "psnr_of", unit="dB", fmt=".1f",
                   bounds=(0.0, PSNR_CAP_DB)))  # fmt: skip
METRICS.add(Metric("ssim", "SSIM", True, _FN + "ssim_of", bounds=(-1.0, 1.0)))
METRICS.add(Metric("mse", "MSE", False, _FN + "mse_of", fmt=".4f", bounds=(0.0, 1.0)))
METRICS.add(Metric("lpips", "LPIPS", False, _FN + "lpips_of", bounds=(0.0, math.inf)))
METRICS.add(Metric("label_acc", "label acc", True, _FN + "label_acc_of", proportion=True,
                   criterion=False, fmt=".2f", bounds=(0.0, 1.0)))  # fmt: skip


def names() -> tuple[str, ...]:
    """Every metric's name in the table's order (the order of columns and of metrics.json)."""
    return tuple(m.name for m in METRICS)


def criteria() -> tuple[str, ...]:
    """The metrics a success criterion may use (``metrics.success_metric``)."""
    return tuple(m.name for m in METRICS if m.criterion)


def label(name: str) -> str:
    """``name``'s axis label (``PSNR [dB]``); a name not in the table labels itself."""
    return METRICS[name].label if name in METRICS else name


def axis_label(name: str) -> str:
    """``PSNR [dB] (higher = more leakage)``: ``name``'s label and which way leaks more."""
    return f"{label(name)} ({METRICS[name].direction})" if name in METRICS else name
