"""What the command line prints when a run or a sweep ends: one result line per run (PSNR,
SSIM, label accuracy, success, with 95% intervals where there are several images), and a
sweep's table (one row per job) with the paths of its figures. Plain strings, so the
command line, the tests and a notebook print the same text."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from gradinv_exp.analysis.metric_table import METRICS, Metric

RESULT_METRICS = ("psnr", "ssim", "label_acc")  # the result line's, in the table's terms


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


def shown() -> list[Metric]:
    """The metrics of a result line (``RESULT_METRICS``) as entries of the metric table."""
    return [METRICS[name] for name in RESULT_METRICS]


def unit(text: str) -> str:
    """`` dB`` after a value, or nothing for a unitless metric."""
    return f" {text}" if text else ""


def offline_note(row: Mapping[str, Any], configured: str | None) -> str:
    """``" (offline: bundled photos stand in for cifar100)"`` when the data a run attacked
    is not the data set its config names, else nothing."""
    source = row.get("data_source")
    if not configured or not isinstance(source, str) or source == configured:
        return ""
    return f" (offline: bundled {source} stand in for {configured})"


def stand_in(frame: pd.DataFrame) -> str:
    """``offline: bundled photos stand in for cifar100`` when any run of ``frame`` (rows of
    ``summary.collect``, with ``data_source`` and ``config.dataset.name``) attacked a
    stand-in for its configured data set, else ''; the figures' titles say it."""
    notes = {
        offline_note(row, row.get("config.dataset.name")).strip(" ()")
        for _, row in frame.iterrows()
    }
    return "; ".join(sorted(n for n in notes if n))


def run_title(metrics: Mapping[str, Any]) -> str:
    """reconstruction.png's title: status, PSNR and SSIM, and the offline note."""
    configured = (metrics.get("config") or {}).get("dataset.name")
    return (
        f"{metrics['status']}  PSNR {metrics['psnr']:.2f} dB  SSIM {metrics['ssim']:.3f}"
        + offline_note(metrics, configured)
    )


def _batch(metrics: Mapping[str, Any]) -> int:
    """Images behind one attacked update (clients x batch) in a run's metrics.json."""
    labels = metrics.get("labels") or [[]]
    return len(labels[0])


def result_line(metrics: Mapping[str, Any]) -> str:
    """One line for a finished run's metrics.json: status, PSNR, SSIM, label accuracy and
    success rate (each with its interval when defined), and the offline note."""
    configured = (metrics.get("config") or {}).get("dataset.name")
    parts = [f"{m.title} {_value(metrics, m.name, m.fmt, unit(m.unit))}" for m in shown()]
    parts.append(f"success {_value(metrics, 'success_rate', '.2f')}")
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


def swept_columns(frame: pd.DataFrame) -> list[str]:
    """The config columns of the override keys of a table of runs
    (``frame.attrs["override_keys"]``: what the user set or swept); a group's key
    (``attack``) stands for its option's name (``config.attack.name``)."""
    found = []
    for key in frame.attrs.get("override_keys", []):
        column = next((c for c in (f"config.{key}", f"config.{key}.name") if c in frame), None)
        if column is not None:
            found.append(column)
    return list(dict.fromkeys(found))


def config_columns(frame: pd.DataFrame) -> list[str]:
    """The ``config.*`` columns of a table of runs, its override keys' first."""
    rest = [c for c in frame.columns if c.startswith("config.")]
    return list(dict.fromkeys([*swept_columns(frame), *rest]))


def splitting(frame: pd.DataFrame, by: list[str], candidates: list[str]) -> list[str]:
    """The columns of ``candidates``, in their order, that a reader needs beside ``by`` to
    tell the rows apart: each splits some group of rows that agree on ``by`` and on the
    columns taken before it (so ``optimizer.name``, which follows ``attack.name``, is not
    taken after it). Lists and NaN compare as their text."""
    text = frame.astype(str)
    keys: list[str] = []
    for column in candidates:
        before = text.groupby([*by, *keys], dropna=False).ngroups
        if text.groupby([*by, *keys, column], dropna=False).ngroups > before:
            keys.append(column)
    return keys


def row_keys(frame: pd.DataFrame) -> list[str]:
    """The config columns that tell apart rows of one defense and strength: every swept
    key that differs between such rows (``seed=0,8``, ``attack.adaptive=false,true``),
    then the other config keys that tell apart rows still alike (``splitting``). The sweep
    table, compare's table and the comparison figure's titles show them."""
    if not len(frame):
        return []
    by = ["defense", "strength"]
    swept = [c for c in swept_columns(frame) if splitting(frame, by, [c])]
    rest = [c for c in config_columns(frame) if c not in swept]
    return swept + splitting(frame, [*by, *swept], rest)


def cell(value: Any) -> str:
    """A config value in a table: ``-`` for none, numbers as ``:g``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:g}" if isinstance(value, float) else str(value)


def sweep_table(frame: pd.DataFrame) -> str:
    """A sweep's summary.csv as aligned text: one row per job with its defense, strength
    (``key=value``), the config keys that tell apart jobs of one defense and strength
    (``row_keys``), status, PSNR [interval] and success rate [interval]; sorted by
    defense (``none`` first) and strength by value."""
    order = pd.DataFrame(
        {
            "other": frame["defense"].ne("none"),
            "defense": frame["defense"],
            "strength": pd.to_numeric(frame.get("strength"), errors="coerce"),
        }
    ).sort_values(["other", "defense", "strength"], kind="stable", na_position="first")
    frame = frame.loc[order.index]
    keys = row_keys(frame)
    rows = []
    for _, row in frame.iterrows():
        key, strength = row.get("strength_key"), _number(row.get("strength"))
        label = f"{key}={strength:g}" if isinstance(key, str) and strength is not None else "-"
        configured = row.get("config.dataset.name")
        rows.append(
            {
                "defense": str(row.get("defense", "?")),
                "strength": label,
                **{k.removeprefix("config."): cell(row[k]) for k in keys},
                "status": str(row.get("status", "?")),
                METRICS["psnr"].label: _value(row, "psnr", METRICS["psnr"].fmt),
                "success": _value(row, "success_rate", ".2f"),
                "batch recovered": _value(row, "batch_recovered", ".2f"),
                "data": str(row.get("data_source", "?"))
                + (" (offline)" if offline_note(row, configured) else ""),
            }
        )
    return pd.DataFrame(rows).to_string(index=False)


def sweep_report(sweep_dir: Path, override_keys: Sequence[str] = ()) -> str:
    """The table of ``sweep_dir/summary.csv`` and the paths of the sweep's files;
    ``override_keys``: the keys its jobs' overrides set (a CSV keeps no ``attrs``)."""
    frame = pd.read_csv(sweep_dir / "summary.csv")
    frame.attrs["override_keys"] = list(override_keys)
    lines = [sweep_table(frame), f"summary: {sweep_dir / 'summary.csv'}"]
    figures = [sweep_dir / name for name in ("comparison.png", "curves.png")]
    lines += [f"figure: {path}" for path in figures if path.is_file()]
    return "\n".join(lines)
