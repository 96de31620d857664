"""What the command line prints when a run or a sweep ends: one result line per run (PSNR,
SSIM, label accuracy, success, with 95% intervals where there are several images), and a
sweep's table (one row per job) with the paths of its figures. Plain strings, so the
command line, the tests and a notebook print the same text."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd


def _number(value: Any) -> float | None:
    """``value`` as a finite float, or None (missing, NaN, not a number)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _interval(row: Mapping[str, Any], key: str, fmt: str) -> str:
    """`` [low, high]`` of ``key``'s 95% interval, or nothing when it is not defined."""
    low, high = _number(row.get(f"{key}_ci_low")), _number(row.get(f"{key}_ci_high"))
    return "" if low is None or high is None else f" [{low:{fmt}}, {high:{fmt}}]"


def _value(row: Mapping[str, Any], key: str, fmt: str, unit: str = "") -> str:
    """``key``'s value with its unit and interval, or ``n/a``."""
    value = _number(row.get(key))
    return "n/a" if value is None else f"{value:{fmt}}{unit}{_interval(row, key, fmt)}"


def offline_note(row: Mapping[str, Any], configured: str | None) -> str:
    """``" (offline: bundled photos stand in for cifar100)"`` when the data a run attacked
    is not the data set its config names, else nothing."""
    source = row.get("data_source")
    if not configured or not isinstance(source, str) or source == configured:
        return ""
    return f" (offline: bundled {source} stand in for {configured})"


def _batch(metrics: Mapping[str, Any]) -> int:
    """Images behind one attacked update (clients x batch) in a run's metrics.json."""
    labels = metrics.get("labels") or [[]]
    return len(labels[0])


def result_line(metrics: Mapping[str, Any]) -> str:
    """One line for a finished run's metrics.json: status, PSNR, SSIM, label accuracy and
    success rate (each with its interval when defined), and the offline note."""
    configured = (metrics.get("config") or {}).get("dataset.name")
    parts = [
        f"PSNR {_value(metrics, 'psnr', '.1f', ' dB')}",
        f"SSIM {_value(metrics, 'ssim', '.3f')}",
        f"label acc {_value(metrics, 'label_acc', '.2f')}",
        f"success {_value(metrics, 'success_rate', '.2f')}",
    ]
    if _number(metrics.get("batch_recovered_min")) is not None and _batch(metrics) > 1:
        worst, best = metrics["batch_recovered_min"], metrics["batch_recovered_max"]
        parts.append(
            f"of a batch recovered {_value(metrics, 'batch_recovered', '.2f')} "
            f"(worst {worst:.2f}, best {best:.2f})"
        )
    criterion = metrics.get("success_criterion")
    tail = f" ({criterion})" if criterion else ""
    status = metrics.get("status", "?")
    return f"result: {status}: " + ", ".join(parts) + tail + offline_note(metrics, configured)


def sweep_table(frame: pd.DataFrame) -> str:
    """A sweep's summary.csv as aligned text: one row per job with its defense, strength
    (``key=value``), status, PSNR [interval] and success rate [interval]."""
    rows = []
    for _, row in frame.iterrows():
        key, strength = row.get("strength_key"), _number(row.get("strength"))
        label = f"{key}={strength:g}" if isinstance(key, str) and strength is not None else "-"
        configured = row.get("config.dataset.name")
        rows.append(
            {
                "defense": str(row.get("defense", "?")),
                "strength": label,
                "status": str(row.get("status", "?")),
                "PSNR [dB]": _value(row, "psnr", ".1f"),
                "success": _value(row, "success_rate", ".2f"),
                "batch recovered": _value(row, "batch_recovered", ".2f"),
                "data": str(row.get("data_source", "?"))
                + (" (offline)" if offline_note(row, configured) else ""),
            }
        )
    table = pd.DataFrame(rows).sort_values(["defense", "strength"], kind="stable")
    return table.to_string(index=False)


def sweep_report(sweep_dir: Path) -> str:
    """The table of ``sweep_dir/summary.csv`` and the paths of the sweep's files."""
    frame = pd.read_csv(sweep_dir / "summary.csv")
    lines = [sweep_table(frame), f"summary: {sweep_dir / 'summary.csv'}"]
    figures = [sweep_dir / name for name in ("comparison.png", "curves.png")]
    lines += [f"figure: {path}" for path in figures if path.is_file()]
    return "\n".join(lines)
