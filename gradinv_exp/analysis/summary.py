"""Many run folders -> one table (+ figures): the shared code of sweep summaries and compare.

A run folder is one that Hydra made for a job: it holds ``.hydra/overrides.yaml`` and,
once the run finished, ``metrics.json``. Each becomes one row: the run's overrides (one
column per key), its ``defense`` and ``strength`` (its registered strength field), its
``status`` and every scalar metric, and its flat config (``defense.ratio``, ...). A job
that never wrote metrics.json is a row with status ``missing``, never dropped.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gradinv_exp.analysis import report, uncertainty
from gradinv_exp.analysis.metric_table import METRICS, PRIMARY, names
from gradinv_exp.base.status import FINISHED, Status
from gradinv_exp.defenses import axis
from gradinv_exp.runs import artifacts, folder
from gradinv_exp.runs.resume import RunError, read_metrics

log = logging.getLogger(__name__)

# non-scalar parts of metrics.json (``pool`` reads the per-image values from the folder)
SKIPPED_KEYS = ("config", "per_image", "per_trial", "labels", "recovered_labels")


def find_runs(paths: Iterable[Path]) -> list[Path]:
    """Run folders at or below ``paths`` (a folder holding ``.hydra/`` or ``metrics.json``)."""
    found: dict[Path, None] = {}
    for path in paths:
        marks = [*path.rglob(".hydra/overrides.yaml"), *path.rglob("metrics.json")]
        for mark in sorted(marks):
            found[(mark.parent.parent if mark.parent.name == ".hydra" else mark.parent)] = None
    return list(found)


def load_run(run_dir: Path) -> tuple[dict[str, Any], list[str]]:
    """One table row for ``run_dir`` and its override keys (RunError if its files cannot
    be read)."""
    try:
        overrides = folder.overrides(run_dir)
        metrics = read_metrics(run_dir)
        cfg = folder.run_config(run_dir, metrics)
    except RunError:
        raise
    except Exception as err:  # yaml, omegaconf or override-parser errors: name the folder
        raise RunError(f"{run_dir}: {type(err).__name__}: {err}") from None
    return row(run_dir, overrides, metrics or {}, cfg), list(overrides)


def row(
    run_dir: Path, overrides: dict[str, str], metrics: dict[str, Any], cfg: dict[str, Any]
) -> dict[str, Any]:
    """A run's table row from its overrides, metrics.json ({}: none) and flat config."""
    where = axis(cfg)
    scalars = {k: v for k, v in metrics.items() if k not in SKIPPED_KEYS}
    if "data_source" in metrics:  # True: bundled photos stood in for the configured data
        scalars["offline"] = bool(report.offline_note(metrics, cfg.get("dataset.name")))
    return {
        "run": str(run_dir),
        **overrides,
        "defense": where.defense,
        "strength_key": where.key,
        "strength": where.value if where.key else np.nan,
        "strength_log": where.log_scale,
        "status": Status.MISSING,
        **scalars,
        **{f"config.{k}": v for k, v in cfg.items()},
    }


def collect(paths: Iterable[Path]) -> tuple[pd.DataFrame, list[str]]:
    """All runs at or below ``paths`` as one DataFrame, plus one line per unreadable folder.

    Rows are sorted by defense (``none`` first), strength and folder; ``override_keys``
    in ``frame.attrs`` lists the override columns.
    """
    rows, problems, keys = [], [], {}
    for run_dir in find_runs(paths):
        try:
            found, overrides = load_run(run_dir)
            rows.append(found)
            keys |= dict.fromkeys(overrides)
        except RunError as err:
            problems.append(f"skipped {err}")
    return ordered(pd.DataFrame(rows), list(keys)), problems


def ordered(frame: pd.DataFrame, override_keys: list[str]) -> pd.DataFrame:
    """Rows sorted by defense (``none`` first), strength (by value) and folder (job 2
    before job 10); ``override_keys`` in ``frame.attrs``."""
    if not frame.empty:
        frame["strength"] = pd.to_numeric(frame["strength"], errors="coerce")
        order = frame["defense"].fillna("").ne("none")
        digits = frame["run"].str.replace(r"\d+", lambda m: m.group().zfill(12), regex=True)
        frame = (
            frame.assign(_order=order, _run=digits)
            .sort_values(["_order", "defense", "strength", "_run"], na_position="first")
            .drop(columns=["_order", "_run"])
            .reset_index(drop=True)
        )
    frame.attrs["override_keys"] = override_keys
    return frame


def with_planned(
    frame: pd.DataFrame, planned: list[tuple[Path, list[str], dict[str, Any]]]
) -> pd.DataFrame:
    """``frame`` (of ``collect``) with a ``missing`` row, error ``never started``, for
    each planned job (its folder, overrides and flat config) that has no row: a job that
    never started has no folder to find."""
    found = set(frame["run"]) if len(frame) else set()
    keys = dict.fromkeys(frame.attrs.get("override_keys", []))
    rows = []
    for run_dir, lines, cfg in planned:
        if str(run_dir) not in found:
            overrides = folder.task_overrides(lines)
            keys |= dict.fromkeys(overrides)
            rows.append(row(run_dir, overrides, {"error": "never started"}, cfg))
    if not rows:
        return frame
    return ordered(pd.concat([frame, pd.DataFrame(rows)], ignore_index=True), list(keys))


def counts(frame: pd.DataFrame) -> dict[str, int]:
    """How many rows are finished (ok or diverged), interrupted, failed and missing."""
    status = frame["status"] if len(frame) else pd.Series(dtype=str)
    return {
        "finished": int(status.isin(FINISHED).sum()),
        Status.INTERRUPTED: int((status == Status.INTERRUPTED).sum()),
        Status.FAILED: int((status == Status.FAILED).sum()),
        Status.MISSING: int((status == Status.MISSING).sum()),
    }


def line_keys(frame: pd.DataFrame) -> list[str]:
    """The config columns that tell apart runs of one defense and strength, one curve per
    combination of their values in ``curves.png``, so that a point never pools two
    different settings (e.g. Gaussian and Laplacian noise of one ``sigma``, or FedAvg's
    local steps). Not split: ``seed`` (repetitions, pooled by design) and ``tags.*``
    (labels). A column that changes only with the strength (the strength's own field,
    ``defense.params.p`` of a user's defense) splits no point: a defense's sweep is one
    line. A column that splits no group the earlier ones did not split already
    (``optimizer.name`` beside ``attack.name``) is left out, so legends stay short;
    override keys come first."""
    candidates = [
        c
        for c in report.config_columns(frame)
        if c != "config.seed" and not c.startswith("config.tags.")
    ]
    return report.splitting(frame, ["defense", "strength"], candidates)


def label(row: pd.Series, keys: list[str]) -> str:
    """A run's name in figures: defense and strength, then its values of ``keys`` (config
    columns, ``report.row_keys``) that tell it apart from runs of the same setting."""
    first = str(row.get("defense") or Path(row["run"]).name)
    if pd.notna(row.get("strength")):
        first += f" {row['strength_key']}={row['strength']:g}"
    others = [f"{k.removeprefix('config.')}={report.cell(row.get(k))}" for k in keys]
    return "\n".join([first, *others])


def short_names(runs: pd.Series) -> pd.Series:
    """Run folders relative to the folder that holds them all ("a/3", "b/0")."""
    base = Path(os.path.commonpath(list(runs)))
    if all(Path(r) == base for r in runs):
        base = base.parent
    return runs.map(lambda r: os.path.relpath(r, base))


def table(frame: pd.DataFrame, metric: str = PRIMARY, group_by: str | None = None) -> pd.DataFrame:
    """The columns a reader compares: the run, the config keys that tell apart runs of one
    defense and strength (``report.row_keys``: a swept seed, ``attack.adaptive`` ...),
    defense, strength, status, the metric with its 95% interval, the success rate with its
    interval, the other metrics. Config columns are named without ``config.``."""
    frame = frame.assign(run=short_names(frame["run"].map(os.path.abspath)))
    front = ["run", *report.row_keys(frame)]
    if group_by:
        front.append(group_by)
    interval = [f"{metric}_ci_low", f"{metric}_ci_high"]
    rate = ["success_rate", "success_rate_ci_low", "success_rate_ci_high"]
    rate += ["batch_recovered", "batch_recovered_min", "batch_recovered_max"]
    others = [m for m in names() if m != metric]
    columns = [*front, "defense", "strength_key", "strength", "status", "runs", "trials"]
    columns += [metric, *interval, *rate, *others, "wall_s"]
    columns = [c for c in dict.fromkeys(columns) if c in frame]
    shown = frame[columns]
    short = {c: c.removeprefix("config.") for c in columns}
    named = {c: name for c, name in short.items() if name not in columns}
    return shown.rename(columns=named)


def per_image(run_dir: str) -> tuple[dict[str, np.ndarray], np.ndarray] | None:
    """A finished run's per-image values ``(T, B)`` per metric and which images count as
    reconstructed under the run's own success criterion; None for a run without them."""
    try:
        metrics = read_metrics(Path(run_dir))
    except RunError:
        return None
    if not metrics or "per_image" not in metrics:
        return None
    values = {
        k: np.array(v, dtype=float)  # JSON null (NaN) -> nan
        for k, v in metrics["per_image"].items()
        if k in METRICS
    }
    cfg = metrics.get("config", {})
    key = cfg.get("metrics.success_metric", PRIMARY)
    threshold = cfg.get("metrics.success_threshold", 20.0)
    if key not in METRICS:  # a criterion this version does not know: nothing passes
        return values, np.zeros(np.shape(values.get(PRIMARY, [[0]])), dtype=bool)
    chosen = values.get(key, np.full((1, 1), np.nan))
    return values, METRICS[key].passes(chosen, threshold)


def distinct(folders: list[str]) -> list[str]:
    """``folders`` without the runs that repeat an earlier one: a finished run whose flat
    config (``tags.*`` aside: labels) equals an earlier run's attacked the same (image,
    model) pairs, every draw being seeded by the config; e.g. one sweep copied into two
    folders that a command reads. Pooled statistics and verdicts count each pair once."""
    seen: set[str] = set()
    kept = []
    for run in dict.fromkeys(folders):
        try:
            cfg = (read_metrics(Path(run)) or {}).get("config")
        except RunError:
            cfg = None
        if cfg:
            same = json.dumps({k: v for k, v in cfg.items() if not k.startswith("tags.")},
                              sort_keys=True, default=str)  # fmt: skip
            if same in seen:
                continue
            seen.add(same)
        kept.append(run)
    return kept


def members(row: pd.Series) -> list[str]:
    """The run folders behind a row: its ``pooled_runs`` (";"-joined) or its ``run``."""
    pooled = row.get("pooled_runs")
    return pooled.split(";") if isinstance(pooled, str) else [row["run"]]


def pool(frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """One row per group of finished runs that agree on the ``by`` columns, with every
    metric's mean and 95% interval and the success rate recomputed over all their trials;
    ``runs`` and ``trials`` count them, ``pooled_runs`` lists their folders (";"-joined),
    ``run`` is the first (its images stand for the group in figures). Rows may themselves
    be pooled. Runs without per-image values, and repeats of a run (``distinct``), are
    left out."""
    done = frame[frame["status"].isin(FINISHED)]
    rows = []
    for _, group in done.groupby(by, dropna=False, sort=False):
        folders = distinct([f for _, row in group.iterrows() for f in members(row)])
        loaded = [p for p in map(per_image, folders) if p is not None]
        if not loaded:
            continue
        row = group.iloc[0].to_dict()
        row |= {"runs": len(loaded), "trials": sum(len(v["psnr"]) for v, _ in loaded)}
        row["pooled_runs"] = ";".join(folders)
        for metric in names():
            if all(metric in values for values, _ in loaded):
                blocks = [v[metric] for v, _ in loaded]  # (T, B) per run
                row |= uncertainty.per_image_summary(metric, *blocks)
        row |= uncertainty.success(np.concatenate([ok.ravel() for _, ok in loaded]))
        recovered = np.concatenate([ok.mean(1) for _, ok in loaded])  # per trial's batch
        row |= uncertainty.summary("batch_recovered", recovered)
        if Status.DIVERGED in set(group["status"]):
            row["status"] = Status.DIVERGED
        rows.append(row)
    pooled = pd.DataFrame(rows)
    pooled.attrs = dict(frame.attrs)
    return pooled


def setting_columns(frame: pd.DataFrame, key: str) -> list[str]:
    """The config columns that define a setting, all but ``config.<key>`` (``--pool seed``:
    runs that differ only in the seed are one setting)."""
    return [c for c in frame.columns if c.startswith("config.") and c != f"config.{key}"]


def write(
    frame: pd.DataFrame,
    out_dir: Path,
    *,
    metric: str = PRIMARY,
    group_by: str | None = None,
    csv_name: str = "summary.csv",
    markdown: bool = False,
) -> list[Path]:
    """CSV (every column), optional Markdown (the readable table) and both figures; the
    CSV last, so that its presence means the others were written (a full disk stops
    before it). Returns the paths, the CSV first."""
    from gradinv_exp.analysis import figures  # torch, matplotlib: only to draw

    written = []
    if markdown:
        text = table(frame, metric, group_by).to_markdown(index=False, floatfmt=".4g") + "\n"
        written.append(out_dir / "summary.md")
        artifacts.write_text(written[-1], text)
    keys = report.row_keys(frame)
    labels = [label(row, keys) for _, row in frame.iterrows()]
    written.append(out_dir / "comparison.png")
    note = report.stand_in(frame)  # the figures' titles say when photos stood in
    artifacts.save_figure(written[-1], figures.comparison(frame, labels, note=note))
    written.append(out_dir / "curves.png")
    lines = [group_by] if group_by else line_keys(frame)
    points = pool(frame, ["defense", "strength", *lines])
    artifacts.save_figure(written[-1], figures.curves(points, metric, lines, note=note))
    artifacts.write_csv(out_dir / csv_name, frame)
    return [out_dir / csv_name, *written]


def failures(frame: pd.DataFrame, problems: list[str]) -> list[str]:
    """One line per job that did not finish, in job order: ``job <folder>: <error>`` for a
    failed run, a note for an interrupted one and for a folder without metrics.json
    (crashed or killed), and the ``problems`` of ``collect`` (unreadable folders)."""
    ended = (Status.FAILED, Status.INTERRUPTED, Status.MISSING)
    unfinished = frame[frame["status"].isin(ended)] if len(frame) else frame
    notes = {}
    for _, row in unfinished.iterrows():
        error = row.get("error")
        if row["status"] == Status.INTERRUPTED:
            error = f"interrupted by {row.get('signal')}"
        elif not isinstance(error, str):
            error = "no error recorded" if row["status"] == Status.FAILED else "no metrics.json"
        notes[Path(row["run"]).name] = error
    jobs = sorted(notes, key=lambda name: (len(name), name))  # "2" before "10"
    return [f"job {name}: {notes[name]}" for name in jobs] + list(problems)


def summarise_sweep(sweep_dir: Path, frame: pd.DataFrame, problems: list[str]) -> None:
    """Write summary.csv, comparison.png and curves.png of ``collect([sweep_dir])`` into the
    finished sweep's folder."""
    for line in problems:
        log.warning(line)
    if frame.empty:
        log.warning("no runs found in %s: no summary written", sweep_dir)
        return
    write(frame, sweep_dir)
    counts = frame["status"].value_counts().to_dict()
    log.info("sweep summary: %d jobs %s -> %s/summary.csv", len(frame), counts, sweep_dir)
