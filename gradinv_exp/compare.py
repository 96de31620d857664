"""``python -m gradinv_exp.compare PATH [PATH ...]``: one table over any run or sweep folders.

Folders may come from different days and sweeps; every run below them becomes a row
(see ``summary.collect``). Unreadable run folders are skipped with one line each.

``--help`` and the errors about the command line answer before pandas, torch and
matplotlib load: the analysis modules are imported once the folders hold runs.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from gradinv_exp.analysis import metric_table, uncertainty

if TYPE_CHECKING:
    import pandas as pd


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m gradinv_exp.compare",
        description="Compare gradinv_exp runs: one table sorted by defense and strength.",
    )
    parser.add_argument("paths", nargs="+", type=Path, help="run folders and/or sweep folders")
    parser.add_argument(
        "--metric",
        default=metric_table.PRIMARY,
        choices=metric_table.names(),
        help="metric of the table's first columns and of the curves",
    )
    parser.add_argument(
        "--group-by", help="config key, e.g. model.name or seed: one curve per value"
    )
    parser.add_argument(
        "--pool",
        metavar="KEY",
        help="pool runs that differ only in this config key (e.g. seed) into one row: "
        "every metric's mean, 95%% interval and success rate over all their trials",
    )
    parser.add_argument("--out", type=Path, help="write compare.csv, summary.md and figures")
    parser.add_argument(
        "--utility",
        type=Path,
        help="utility.csv of `python -m gradinv_exp.utility`: also join the attack metric "
        "with test accuracy per defense setting (privacy_utility.csv/.png with --out)",
    )
    parser.add_argument(
        "--verdict",
        action="store_true",
        help="write verdict.csv and verdict.md (into --out, else here): per defense setting "
        "and attack, the naive and adaptive attackers' success with 95%% intervals, the "
        "strongest, and whether the defense stops it (docs/adaptive_attacks.md)",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=uncertainty.VERDICT_THRESHOLD,
        help="--verdict: the defense stops an attack when the upper end of the strongest "
        "attacker's success interval is at most this (default %(default)s)",
    )
    args = parser.parse_args(argv)
    if not 0 <= args.threshold < 1:
        parser.error(f"--threshold {args.threshold}: must be in [0, 1)")
    return args


def error(message: str) -> int:
    """Print compare's one-line error; the exit code of a bad command line."""
    print(f"compare: error: {message}", file=sys.stderr)
    return 2


def no_key(option: str, key: str, frame: pd.DataFrame) -> str:
    """The error for ``--pool KEY`` or ``--group-by KEY`` naming no config key of the runs:
    the closest key, and every key they have."""
    known = sorted(c.removeprefix("config.") for c in frame.columns if c.startswith("config."))
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.8)
    guess = f"; did you mean '{close[0]}'?" if close else ""
    listed = ", ".join(known)
    return f"{option} {key}: no such config key in these runs (their keys: {listed}){guess}"


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    missing = [str(p) for p in [*args.paths, *([args.utility] if args.utility else [])]
               if not p.exists()]  # fmt: skip
    if missing:
        return error(f"no such folder: {', '.join(missing)}")
    from gradinv_exp.analysis import summary  # pandas: once the folders exist

    frame, problems = summary.collect(args.paths)
    for line in problems:
        print(f"compare: {line}", file=sys.stderr)
    if frame.empty:
        folders = ", ".join(map(str, args.paths))
        return error(f"no runs in {folders} (a run folder holds metrics.json or .hydra/)")
    if args.pool:
        if f"config.{args.pool}" not in frame:
            return error(no_key("--pool", args.pool, frame))
        frame = summary.pool(frame, summary.setting_columns(frame, args.pool))
        if frame.empty:
            print("compare: error: no finished run to pool", file=sys.stderr)
            return 1
    group_by = args.group_by
    if group_by and group_by not in frame:
        group_by = f"config.{group_by}" if f"config.{group_by}" in frame else None
        if group_by is None:
            return error(no_key("--group-by", args.group_by, frame))
    return report(frame, args, group_by)


def report(frame: pd.DataFrame, args: argparse.Namespace, group_by: str | None) -> int:
    """Print the table (and write it with ``--out``), the verdicts and the privacy-utility
    join that ``args`` ask for; the exit code."""
    import pandas as pd

    from gradinv_exp.analysis import summary

    with pd.option_context("display.width", 200, "display.max_columns", None):
        print(summary.table(frame, args.metric, group_by).to_string(index=False))
    if args.out:
        written = summary.write(
            frame, args.out, metric=args.metric, group_by=group_by, csv_name="compare.csv",
            markdown=True,
        )  # fmt: skip
        print("wrote " + ", ".join(str(p) for p in written))
    utility = pd.read_csv(args.utility) if args.utility else None
    if args.verdict:
        verdicts(frame, args.threshold, utility, args.out or Path("."))
    if utility is not None:
        return privacy_utility(frame, utility, args.metric, args.out)
    return 0


def verdicts(
    frame: pd.DataFrame, threshold: float, utility: pd.DataFrame | None, out: Path
) -> None:
    """Print the verdict table and write verdict.csv and verdict.md into ``out``."""
    from gradinv_exp.analysis import verdict

    table = verdict.verdict(frame, threshold, utility)
    if table.empty:
        print("compare: no finished run to judge: no verdict written", file=sys.stderr)
        return
    print(verdict.markdown(table))
    print("wrote " + ", ".join(str(p) for p in verdict.write(table, out)))


def privacy_utility(
    frame: pd.DataFrame, utility: pd.DataFrame, metric: str, out: Path | None
) -> int:
    """Print (and with ``out`` write) attack ``metric`` beside utility per defense setting."""
    from gradinv_exp.analysis import tradeoff
    from gradinv_exp.runs import artifacts

    joined = tradeoff.join(frame, utility, metric)
    if joined.empty:
        print(
            "compare: error: no defense setting is in both the runs and --utility", file=sys.stderr
        )
        return 1
    print(joined.to_string(index=False))
    if out:
        artifacts.write_csv(out / "privacy_utility.csv", joined)
        artifacts.save_figure(out / "privacy_utility.png", tradeoff.figure(joined, metric))
        print(f"wrote {out / 'privacy_utility.csv'}, {out / 'privacy_utility.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
