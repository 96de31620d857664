"""Verdicts: does a defense stop the strongest attacker measured against it?

One row per defense setting (defense and strength) and attack family (``attack.name``:
dlg, idlg, ig ...), pooling every finished run of that setting: per attacker, the naive
one (matching the share as if it were the true gradient) and the adaptive one
(``attack.adaptive=true``: the known defense modelled, docs/adaptive_attacks.md), the
success rate over all (image, model) pairs with its 95% Wilson interval
(``uncertainty.success``) and the mean PSNR. The strongest attacker is the one with the
higher success rate (ties: higher mean PSNR); the verdict is measured against it only:

- ``stops it``: the upper end of its interval is <= ``threshold``;
- ``does not stop it``: the lower end is above ``threshold``;
- ``inconclusive``: the interval contains ``threshold`` (more pairs would decide).

``uncertainty.VERDICT_THRESHOLD`` = 0.05: a defense "stops" an attack only if, at 95%
confidence, fewer than 1 in 20 of the client's images can be reconstructed; the issue's
goal (the strength at which adaptive DLG's success drops to <= 0.05) uses the same bound.
A Wilson interval of 0 successes in n pairs ends at z^2 / (n + z^2), so 0/n meets it from
n = 73 on (0/20 ends at 0.16: inconclusive, not "stopped"). With one attacker measured,
the verdict is against that one and ``against`` says the other was not measured.

The defense's cost, where recorded: ``defense_rel_error`` and ``defense_cosine`` of
metrics.json (mean over the setting's runs) and, given a utility.csv, its test accuracy
(mean and range over the utility runs' seeds) and the privacy-utility figure.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from gradinv_exp.analysis import summary, tradeoff, uncertainty
from gradinv_exp.attacks import ATTACKS
from gradinv_exp.base.status import FINISHED
from gradinv_exp.defenses import DEFENSES
from gradinv_exp.runs import artifacts

if TYPE_CHECKING:
    from matplotlib.figure import Figure

ATTACKERS = ("naive", "adaptive")
COSTS = ("defense_rel_error", "defense_cosine", "epsilon")
STOPS, NOT_STOPPED, INCONCLUSIVE = "stops it", "does not stop it", "inconclusive"


def attacker(adaptive: Any, family: Any = None) -> str:
    """``adaptive`` or ``naive`` from a run's ``config.attack.adaptive``; a family without
    that option is what its registry entry says (``Attack.models_defense``: the learned
    attacker trains on the defense's outputs, so it is adaptive; runs from before
    adaptive attacks existed: naive)."""
    if pd.isna(adaptive) and isinstance(family, str) and family in ATTACKS:
        try:
            adaptive = ATTACKS[family].models_defense(None)
        except AttributeError:  # the entry reads an option the run's config lacks
            adaptive = False
    return "adaptive" if adaptive is True or str(adaptive).lower() == "true" else "naive"


def measured(folders: list[str]) -> dict[str, float] | None:
    """One attacker's record over these run folders: successes and pairs (images), the
    success rate with its 95% Wilson interval, and the mean PSNR over all images, each
    pair counted once (a run found twice, e.g. in two folders given to compare, counts
    once: ``summary.distinct``); None when none of them has per-image values."""
    loaded = [p for p in map(summary.per_image, summary.distinct(folders)) if p is not None]
    if not loaded:
        return None
    passed = np.concatenate([ok.ravel() for _, ok in loaded])
    psnr = np.concatenate([v["psnr"].ravel() for v, _ in loaded if "psnr" in v])
    rate = uncertainty.success(passed)
    return {
        "success": rate["success_rate"],
        "low": rate["success_rate_ci_low"],
        "high": rate["success_rate_ci_high"],
        "successes": int(passed.sum()),
        "pairs": int(passed.size),
        "psnr": float(np.nanmean(psnr)) if psnr.size else np.nan,
    }


def judge(record: dict[str, float], threshold: float) -> str:
    """The verdict on one attacker's record (see the module docstring)."""
    if record["high"] <= threshold:
        return STOPS
    return NOT_STOPPED if record["low"] > threshold else INCONCLUSIVE


def setting_keys(done: pd.DataFrame) -> list[str]:
    """The columns a verdict row is split by beyond defense, strength and attack family:
    the config keys that tell runs of one defense apart (``summary.line_keys``: noise
    distribution, model, trials ...) except the attack's and optimiser's own, which the
    family and the attacker already stand for."""
    return [
        k
        for k in summary.line_keys(done)
        if not k.startswith(("config.attack.", "config.optimizer."))
    ]


def unmeasured(records: dict[str, Any], defense: str, option: bool = True) -> str:
    """What ``against`` adds about an attacker not measured: `` (adaptive not measured)``,
    or, for a defense with nothing to model (``Defense.model`` None: noise), that the
    adaptive attacker is the naive one; nothing for a family without the naive/adaptive
    ``option`` (the learned attacker is adaptive only)."""
    missing = [a for a in ATTACKERS if a not in records]
    if not missing or not option:
        return ""
    if missing == ["adaptive"] and defense in DEFENSES and DEFENSES[defense].model is None:
        return " (= adaptive: nothing to model)"
    return f" ({missing[0]} not measured)"


def verdict(
    frame: pd.DataFrame,
    threshold: float = uncertainty.VERDICT_THRESHOLD,
    utility: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One verdict row per defense setting x attack family over the finished runs of
    ``frame`` (``summary.collect``); ``utility``: a utility.csv whose test accuracy joins
    by defense setting. Columns: defense, strength_key, strength, attack, the split keys,
    per attacker ``<a>_success``/``_low``/``_high``/``_successes``/``_pairs``/``_psnr``
    (NaN when not measured), ``strongest``, ``verdict``, ``against``, the costs."""
    done = frame[frame["status"].isin(FINISHED)] if len(frame) else frame
    if done.empty:
        return pd.DataFrame()
    adaptive = done.get("config.attack.adaptive", pd.Series(np.nan, index=done.index))
    family = done.get("config.attack.family", pd.Series(np.nan, index=done.index))
    name = done.get("config.attack.name", pd.Series("unknown", index=done.index))
    who = [attacker(a, f) for a, f in zip(adaptive, family)]
    done = done.assign(attack=name.fillna("unknown").astype(str), attacker=who)
    keys = ["defense", "strength_key", "strength", "attack", *setting_keys(done)]
    rows = []
    for values, group in done.groupby(keys, dropna=False, sort=False):
        row: dict[str, Any] = dict(zip(keys, values))
        records = {}
        for name in ATTACKERS:
            folders = [f for _, r in group[group["attacker"] == name].iterrows()
                       for f in summary.members(r)]  # fmt: skip
            record = measured(folders) if folders else None
            if record is not None:
                records[name] = record
            for field in ("success", "low", "high", "successes", "pairs", "psnr"):
                row[f"{name}_{field}"] = np.nan if record is None else record[field]
        if not records:
            continue
        strongest = max(records, key=lambda a: (records[a]["success"], records[a]["psnr"]))
        row["strongest"] = strongest
        row["verdict"] = judge(records[strongest], threshold)
        option = group.get("config.attack.adaptive", pd.Series(dtype=object)).notna().any()
        row["against"] = f"{strongest} {row['attack']}" + unmeasured(
            records, row["defense"], option
        )
        for cost in COSTS:
            if cost in group:
                row[cost] = pd.to_numeric(group[cost], errors="coerce").mean()
        rows.append(row)
    table = pd.DataFrame(rows)
    if utility is not None and not table.empty:
        table = with_accuracy(table, utility)
    table.attrs["threshold"] = threshold
    return table


def with_accuracy(table: pd.DataFrame, utility: pd.DataFrame) -> pd.DataFrame:
    """``table`` with the utility runs' test ``accuracy`` of each defense setting, mean
    over their seeds, with its range ``accuracy_low``/``_high`` and ``seeds`` (NaN where
    the utility experiment has no such setting)."""
    columns = ["setting", "accuracy", "accuracy_low", "accuracy_high", "seeds"]
    acc = tradeoff.accuracy(utility)[columns]
    keyed = table.assign(
        setting=[tradeoff.setting(d, s) for d, s in zip(table["defense"], table["strength"])]
    )
    return keyed.merge(acc, on="setting", how="left").drop(columns="setting")


def rate(row: pd.Series, name: str) -> str:
    """``0.60 [0.39, 0.78] (12/20)``, or ``not measured``."""
    if pd.isna(row.get(f"{name}_pairs")):
        return "not measured"
    return (
        f"{row[f'{name}_success']:.2f} [{row[f'{name}_low']:.2f}, {row[f'{name}_high']:.2f}] "
        f"({int(row[f'{name}_successes'])}/{int(row[f'{name}_pairs'])})"
    )


def accuracy(row: pd.Series) -> str:
    """``0.714``, or over several seeds ``0.70 [0.69, 0.71] (2 seeds)`` (mean, range)."""
    if row.get("seeds", 1) > 1:
        return (
            f"{row['accuracy']:.2f} [{row['accuracy_low']:.2f}, {row['accuracy_high']:.2f}] "
            f"({int(row['seeds'])} seeds)"
        )
    return f"{row['accuracy']:.3f}"


def markdown(table: pd.DataFrame) -> str:
    """The verdict table for a reader: success with interval and counts per attacker,
    mean PSNR, the strongest attacker, the verdict and the costs."""
    threshold = table.attrs.get("threshold", uncertainty.VERDICT_THRESHOLD)
    extra = [c for c in table.columns if c.startswith("config.")]
    lines = []
    for _, row in table.iterrows():
        strength = "" if pd.isna(row["strength"]) else f"{row['strength_key']}={row['strength']:g}"
        cells = {
            "defense": row["defense"],
            "strength": strength,
            "attack": row["attack"],
            **{c.removeprefix("config."): row[c] for c in extra},
            "naive success": rate(row, "naive"),
            "adaptive success": rate(row, "adaptive"),
            "PSNR naive / adaptive (dB)": " / ".join(
                "-" if pd.isna(row[f"{a}_psnr"]) else f"{row[f'{a}_psnr']:.1f}" for a in ATTACKERS
            ),
            "verdict against": row["against"],
            f"verdict (bound {threshold:g})": row["verdict"],
            **{cost: f"{row[cost]:.4g}" for cost in COSTS if cost in row and pd.notna(row[cost])},
            **({"accuracy": accuracy(row)} if pd.notna(row.get("accuracy")) else {}),
        }
        lines.append(cells)
    head = (
        f"Verdict against the strongest attacker measured: stops it = the upper end of its "
        f"95% Wilson interval <= {threshold:g}; does not stop it = the lower end > "
        f"{threshold:g}; else inconclusive. Success: PSNR >= the runs' threshold.\n\n"
    )
    return head + pd.DataFrame(lines).fillna("").to_markdown(index=False) + "\n"


def strongest(table: pd.DataFrame) -> pd.DataFrame:
    """Per defense setting with a test accuracy, the verdict row of its strongest attack
    family (highest success of its strongest attacker; ties: higher mean PSNR), with
    ``success``/``low``/``high``: that attacker's rate and 95% interval."""
    if "accuracy" not in table:
        return pd.DataFrame()
    rows = table[table["accuracy"].notna()].copy()
    for field in ("success", "low", "high", "psnr"):
        rows[field] = [r[f"{r['strongest']}_{field}"] for _, r in rows.iterrows()]
    rows = rows.sort_values(["success", "psnr"], ascending=False)
    return rows.drop_duplicates(["defense", "strength"]).sort_values("accuracy")


MARKERS = "os^Dv<>p*"  # one per attack family in the figure, in order of appearance


def figure(table: pd.DataFrame) -> Figure:
    """The privacy-utility figure: one point per defense setting, x its test accuracy
    (bar: the range over seeds), y the success rate of the strongest attacker measured
    against it with its 95% Wilson interval; filled green where it "stops it", red where
    it does not, hollow grey where inconclusive; the marker names the attack family of
    that attacker; the dashed line is the verdict's bound. A good defense sits
    bottom-right (nothing recovered, accuracy kept). A label goes left of its point when
    a point further right is close, so two close points' labels face away from each
    other."""
    from matplotlib.figure import Figure  # only to draw: compare answers before it loads
    from matplotlib.lines import Line2D

    points = strongest(table).sort_values(["accuracy", "success"])
    threshold = table.attrs.get("threshold", uncertainty.VERDICT_THRESHOLD)
    fig = Figure(figsize=(7.5, 5))
    ax = fig.subplots()
    styles = {STOPS: ("tab:green", "tab:green"), NOT_STOPPED: ("tab:red", "tab:red"),
              INCONCLUSIVE: ("none", "tab:gray")}  # fmt: skip
    families = list(dict.fromkeys(points["attack"]))
    marker = {f: MARKERS[i % len(MARKERS)] for i, f in enumerate(families)}
    for _, row in points.iterrows():
        face, edge = styles[row["verdict"]]
        acc, rate = row["accuracy"], row["success"]
        ax.errorbar(
            [acc], [rate], yerr=[[rate - row["low"]], [row["high"] - rate]],
            xerr=[[acc - row["accuracy_low"]], [row["accuracy_high"] - acc]],
            fmt=marker[row["attack"]], mfc=face, mec=edge, ecolor=edge, capsize=3,
        )  # fmt: skip
    spots = list(zip(points["accuracy"], points["success"]))
    for k, (_, row) in enumerate(points.iterrows()):
        # a label goes left of its point when a point further right is close
        left = any(0 <= x - spots[k][0] < 0.08 and abs(y - spots[k][1]) < 0.08
                   for x, y in spots[k + 1 :])  # fmt: skip
        ax.annotate(tradeoff.setting(row["defense"], row["strength"]), spots[k], fontsize=7,
                    xytext=(-5 if left else 5, 4), ha="right" if left else "left",
                    textcoords="offset points")  # fmt: skip
    handles = [Line2D([], [], ls="none", marker="o", mfc=face, mec=edge, label=judged)
               for judged, (face, edge) in styles.items()
               if (points["verdict"] == judged).any()]  # fmt: skip
    handles += [Line2D([], [], ls="none", marker=marker[f], color="k", mfc="none",
                       label=f"strongest: {f}") for f in families]  # fmt: skip
    handles.append(ax.axhline(threshold, color="k", ls="--", lw=0.8,
                              label=f"verdict bound {threshold:g}"))  # fmt: skip
    ax.set(xlabel="test accuracy of federated training under the defense (utility)",
           ylabel="attack success rate, strongest attacker (95% interval)",
           ylim=(-0.03, 1.03), title="privacy vs utility per defense setting")  # fmt: skip
    ax.legend(handles=handles, fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def write(table: pd.DataFrame, out_dir: Path) -> list[Path]:
    """verdict.csv (every column) and verdict.md (the readable table) into ``out_dir``;
    with test accuracies joined (``utility``), verdict.png (``figure``) too."""
    written = [out_dir / "verdict.csv", out_dir / "verdict.md"]
    artifacts.write_csv(written[0], table)
    artifacts.write_text(written[1], markdown(table))
    if not strongest(table).empty:
        written.append(out_dir / "verdict.png")
        artifacts.save_figure(written[-1], figure(table))
    return written
