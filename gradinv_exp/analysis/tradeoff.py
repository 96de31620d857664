"""Privacy against utility: attack quality and test accuracy of the same defense settings.

The attack side is a compare table (one row per run, ``defense`` + ``strength``); the
utility side is ``utility.csv`` from ``python -m gradinv_exp.utility`` (one row per
defense, its settings as metrics.json's flat ``defense.*`` keys). A defense setting is
its name plus the value of its strength field (``defenses.axis``); runs of the same
setting (seeds, images) are averaged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from gradinv_exp.analysis import metric_table
from gradinv_exp.defenses import axis

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def setting(name: str, strength: float | None) -> str:
    """``prune(0.2)``, ``none``: the key both sides are joined on and the plot's label."""
    if strength is None or pd.isna(strength):
        return str(name)
    return f"{name}({float(strength):g})"


def join(runs: pd.DataFrame, utility: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One row per defense setting found on both sides: ``metric`` (mean over its runs,
    and the number of runs) beside the utility run's test ``accuracy``."""
    attack = runs.assign(setting=[setting(d, s) for d, s in zip(runs["defense"], runs["strength"])])
    attack = attack.groupby("setting")[metric].agg(["mean", "count"]).reset_index()
    attack.columns = ["setting", metric, "runs"]
    return attack.merge(accuracy(utility), on="setting")


def accuracy(utility: pd.DataFrame) -> pd.DataFrame:
    """The utility runs keyed by defense setting, one row each: ``setting``, test
    ``accuracy`` (mean over the setting's runs: seeds of the utility experiment, their
    utility.csv files concatenated), ``accuracy_low``/``accuracy_high`` (their range),
    ``seeds`` (how many) and ``epsilon`` where recorded."""
    places = [axis(row.dropna().to_dict()) for _, row in utility.iterrows()]
    kept = [c for c in ("accuracy", "epsilon") if c in utility]  # not its 1000s of rounds
    acc = utility[kept].assign(setting=[setting(a.defense, a.value) for a in places])
    grouped = acc.groupby("setting", sort=False)
    table = grouped["accuracy"].agg(["mean", "min", "max", "count"]).reset_index()
    table.columns = ["setting", "accuracy", "accuracy_low", "accuracy_high", "seeds"]
    if "epsilon" in acc:
        table = table.merge(grouped["epsilon"].first().reset_index(), on="setting")
    return table


def figure(joined: pd.DataFrame, metric: str) -> Figure:
    """Attack ``metric`` (x) against test accuracy (y), one labelled point per setting:
    a good defense sits top-left for PSNR/SSIM (low leakage, high accuracy)."""
    from matplotlib.figure import Figure  # only to draw: compare answers before it loads

    fig = Figure(figsize=(6, 4.5))
    ax = fig.subplots()
    ax.scatter(joined[metric], joined["accuracy"])
    for _, row in joined.iterrows():
        text = row["setting"]
        if pd.notna(row.get("epsilon")):
            text += f", eps {row['epsilon']:.3g}"
        ax.annotate(text, (row[metric], row["accuracy"]), fontsize=7, xytext=(3, 3),
                    textcoords="offset points")  # fmt: skip
    ax.set(xlabel=f"attack {metric_table.axis_label(metric)}", ylabel="test accuracy (utility)",
           title="privacy vs utility per defense")  # fmt: skip
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
