"""Command line: ``python -m gradinv_exp [overrides]`` (or ``gradinv-exp``), Hydra inside.

Before Hydra starts any job, every job's config is composed and checked (``preflight``),
so a typo in a 50-job sweep fails in a second with one line and exit code 2 instead of
after the first 49 jobs; the output folder is then created and locked (a second command
into it stops with one line). A sweep's folder and jobs are fixed before it starts, so
that when the sweep ends, however it ends, this process writes the sweep's summary (a
row per planned job) and counts the jobs that did not finish, whichever launcher ran
them. A stop signal is handled where the jobs run (``runs.faults``); if a launcher's
worker process dies, the command line records its job as failed and runs the others
again (``runs.workers``). Exit codes: 0 every run finished (ok or diverged), 1 a run
failed (in a sweep: after all jobs ran), 2 bad configuration, 130/143 stopped by
SIGINT/SIGTERM.

A bad command line answers before torch loads: the schema modules defer torch
(``base/lazy.py``), and the experiment (torch, torchvision, matplotlib) is imported only once
every job's config passed the checks that need no tensor.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from gradinv_exp import config
from gradinv_exp.analysis.metric_table import PRIMARY
from gradinv_exp.base.options import ConfigError
from gradinv_exp.base.status import Status
from gradinv_exp.runs import faults, folder, locks, preflight, resume, workers
from gradinv_exp.runs import job as runs_job

log = logging.getLogger(__name__)

EXIT_CONFIG = 2  # bad input: nothing was run


@hydra.main(version_base="1.3", config_path=str(config.CONF_DIR), config_name="config")
def hydra_main(cfg: DictConfig) -> float:
    """One Hydra job: typed config, run, return PSNR (a value for Hydra sweepers).

    A job that raises has written ``status: failed`` into its metrics.json; in a sweep it
    returns NaN so Hydra goes on with the next job (Hydra would otherwise stop the sweep
    at the end of the batch). In a launcher's process (joblib worker, submitit task) a
    stop signal ends the job with its results saved, the job returns NaN, and the process
    starts no further job; in this process (a single run, the basic launcher) the
    ``Interrupted`` goes on to ``main``.
    """
    config.register()  # joblib and submitit workers run jobs in fresh processes
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    if preflight.in_process(hydra_cfg, multirun):
        return job(cfg, hydra_cfg)
    stop = faults.job_process()
    if stop.signum is not None:
        log.warning("job %s not started: this process was stopped", hydra_cfg.job.num)
        return math.nan
    if hydra_cfg.job.num in workers.skipped():
        log.warning("job %s not run again: it ended in this command", hydra_cfg.job.num)
        return math.nan
    with stop.acting(faults.Action.RAISE):
        try:
            return job(cfg, hydra_cfg)
        except faults.Interrupted:
            return math.nan  # saved as interrupted; the command line counts it


def job(cfg: DictConfig, hydra_cfg: Any) -> float:
    """Run the job in ``hydra_cfg.runtime.output_dir`` unless it finished before (the
    steps the Python API shares: ``runs.job``)."""
    run_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        metrics, ran = runs_job.run(cfg, run_dir)
    except ConfigError as err:  # a config changed since preflight; the data set not here
        return failed(hydra_cfg, err, str(err), EXIT_CONFIG)
    except Exception as err:
        return failed(hydra_cfg, err, faults.error_line(err), faults.EXIT_FAILED)
    if ran and hydra_cfg.mode != RunMode.MULTIRUN:  # a sweep prints its table when it ends
        from gradinv_exp.analysis import report

        print(f"run folder: {run_dir}\n{report.result_line(metrics)}", flush=True)
    return metrics[PRIMARY]


def failed(hydra_cfg: Any, err: Exception, message: str, code: int) -> float:
    """A job raised: a single run exits with ``code``; a sweep job says so and goes on (its
    metrics.json says ``failed``; the sweep's summary counts it)."""
    if hydra_cfg.mode != RunMode.MULTIRUN:
        fail(message, code)
    print(f"gradinv-exp: job {hydra_cfg.job.num} failed: {faults.error_line(err)}", file=sys.stderr)
    return math.nan


def fail(message: str, code: int = EXIT_CONFIG) -> None:
    print(f"gradinv-exp: error: {message}", file=sys.stderr)
    sys.exit(code)


def summarise(
    sweep_dir: Path, planned: list[tuple[Path, list[str], dict[str, Any]]] | None = None
) -> tuple[list[str], str | None, dict[str, int]]:
    """Write the sweep's verdict (verdict.csv/.md), figures and summary.csv, that last,
    with a ``missing`` row for each planned job (folder, overrides, flat config) that never
    started. Returns one line per job that did not finish, why the summary could not be
    written (None when it was), and the jobs' counts by outcome: the jobs are counted
    first, so a full disk never hides a failed job. A summary.csv that could not be
    written anew is removed (an older one would list other jobs as they were)."""
    from gradinv_exp.analysis import summary, verdict  # pandas, matplotlib: when a sweep ends

    frame, problems = summary.collect([sweep_dir])
    frame = summary.with_planned(frame, planned or [])
    failures = summary.failures(frame, problems)
    counts = summary.counts(frame)
    try:
        judged = verdict.verdict(frame)
        if not judged.empty:
            verdict.write(judged, sweep_dir)
        summary.summarise_sweep(sweep_dir, frame, problems)
    except Exception as err:
        (sweep_dir / "summary.csv").unlink(missing_ok=True)
        return failures, f"the sweep summary could not be written: {faults.error_line(err)}", counts
    return failures, None, counts


def launch(plan: preflight.Plan, stop: faults.Stop) -> Exception | None:
    """Let Hydra run the jobs. While a launcher's processes run them, a stop signal is
    forwarded to those processes. If a worker process dies, its job is recorded as failed
    and Hydra runs the sweep again for the others (finished jobs are skipped, interrupted
    ones continue from their checkpoints), at most once per job. Returns the launcher's
    error when that did not help (None: the sweep ended, or was stopped)."""
    action = faults.Action.RAISE if plan.in_process else faults.Action.FORWARD
    error = None
    for _ in plan.jobs:
        since = time.time() - 1.0  # file times come from a coarser clock
        try:
            with stop.acting(action), workers.gentle_pool_shutdown():
                hydra_main()
            return None
        except Exception as err:
            if stop.signum is not None:
                return None  # the launcher ended because its jobs were stopped
            if plan.in_process or None in plan.job_dirs:  # a folder known only at run time
                return err
            error = err
        dead, failed_now = workers.ended([d for d in plan.job_dirs if d is not None], since)
        if not dead:
            return error
        for num, run_dir in dead.items():
            print(f"gradinv-exp: job {num} failed: {faults.DIED}", file=sys.stderr)
            faults.record_death(run_dir, folder.flat(plan.configs[num]))
        workers.skip(set(dead) | failed_now)
        log.warning("running the jobs again that did not end (finished ones are skipped)")
    return error


def groups_help() -> str:
    """The ``--help`` page's list of every group's options (``${gradinv_groups:}`` in
    conf/hydra/help/gradinv.yaml), as Hydra finds them with this command's overrides (the
    user's ``hydra.searchpath`` included); the current choice is marked."""
    hydra_cfg = HydraConfig.get()
    overrides = [*hydra_cfg.overrides.hydra, *hydra_cfg.overrides.task]
    lines = []
    for group in (*config.GROUPS, "hydra/launcher"):
        chosen = hydra_cfg.runtime.choices.get(group)
        names = [f"{n} (now)" if n == chosen else n for n in preflight.options(group, overrides)]
        key = f"+{group}" if group in preflight.OPTIONAL else group
        lines += textwrap.wrap(
            ", ".join(names), width=92, initial_indent=f"{key:<16}", subsequent_indent=" " * 16
        )
    return "\n".join(lines)


def group_page(argv: list[str]) -> str | None:
    """``--help GROUP`` (or ``--help run``): that group's page (``group_help``); None when
    ``--help`` is not followed by a group's name (Hydra's own ``--help`` page)."""
    if "--help" not in argv:
        return None
    at = argv.index("--help") + 1
    if at >= len(argv) or "=" in argv[at] or argv[at].startswith("-"):
        return None
    group = argv[at].lstrip("+")
    from gradinv_exp.base.options import one_of
    from gradinv_exp.cli import group_help

    one_of("--help GROUP", group, [*config.GROUPS, group_help.TOP])
    return group_help.page(group, argv[: at - 1] + argv[at + 1 :])


def main() -> None:
    config.register()
    OmegaConf.register_new_resolver("gradinv_groups", groups_help, replace=True)
    argv = sys.argv[1:]
    try:
        page = group_page(argv)
    except ConfigError as err:
        fail(str(err))
    if page is not None:
        print(page)
        return
    with faults.interruptible() as stop:
        try:
            plan = preflight.plan(argv)
            if plan is not None:
                from gradinv_exp import experiment  # heavy: after the fast checks

                preflight.check_jobs(plan, experiment.check)
                held = locks.claim(plan.folder, plan.folder_key)
        except ConfigError as err:
            fail(str(err))
        except faults.Interrupted as err:
            print(f"gradinv-exp: {err}: stopped before any job started", file=sys.stderr)
            sys.exit(err.exit_code)
        if plan is None:  # Hydra only prints (--help, --cfg ...)
            hydra_main()
            return
        for line in plan.warnings:
            print(f"gradinv-exp: warning: {line}", file=sys.stderr)
        if not any(a.startswith(f"{plan.folder_key}=") for a in argv):  # ${now:} resolved once
            sys.argv.append(f"{plan.folder_key}={preflight.quoted(str(plan.folder))}")
        os.environ["HYDRA_FULL_ERROR"] = "1"  # a launcher's error comes to launch()
        with held:
            try:
                error = launch(plan, stop)
            except faults.Interrupted:
                error = None
            try:
                if plan.multirun:
                    end_sweep(plan, stop, error)
                elif stop.signum is not None:
                    stopped_run(plan, stop.signum)
            except faults.Interrupted as err:  # the jobs had ended; a repeat is ignored
                print(f"gradinv-exp: {err} while the summary was written", file=sys.stderr)
                sys.exit(err.exit_code)


def stopped_run(plan: preflight.Plan, signum: int) -> None:
    """A single run was stopped: say what it saved and how to continue; exit 128 + signum."""
    saved = resume.status(plan.folder) == Status.INTERRUPTED
    print(
        f"gradinv-exp: interrupted by {signal.Signals(signum).name}: "
        + (f"the run saved its results so far with status: interrupted in {plan.folder}; "
           if saved else "")
        + f"run it again with hydra.run.dir={plan.folder} to continue from its last checkpoint",
        file=sys.stderr,
    )  # fmt: skip
    sys.exit(128 + signum)


def end_sweep(plan: preflight.Plan, stop: faults.Stop, error: Exception | None) -> None:
    """Write the summary and end with the sweep's outcome: the counts after a stop signal
    (exit 128 + signal), else the jobs that did not finish (exit 1) or nothing (exit 0)."""
    flats = [folder.flat(c) for c in plan.configs]
    planned = [p for p in zip(plan.job_dirs, plan.jobs, flats) if p[0] is not None]
    failures, unwritten, counts = summarise(plan.folder, planned)
    if unwritten:
        print(f"gradinv-exp: error: {unwritten}", file=sys.stderr)
    elif (plan.folder / "summary.csv").is_file():
        from gradinv_exp import tracking
        from gradinv_exp.analysis import report

        lines = list(dict.fromkeys(line for job in plan.jobs for line in job))  # few distinct
        keys = [o.get_key_element().lstrip("+~") for o in preflight.parse(lines)
                if not o.is_hydra_override()]  # fmt: skip
        print(report.sweep_report(plan.folder, list(dict.fromkeys(keys))), flush=True)
        tracking.log_sweep(plan.configs[0].tracking, plan.folder)  # tracking=mlflow|...
    if stop.signum is not None:
        failed = f", {counts[Status.FAILED]} failed" if counts[Status.FAILED] else ""
        elsewhere = (
            ""
            if plan.in_process or stop.forwarded
            else (" (jobs running outside this machine's processes, e.g. on SLURM, go on)")
        )
        print(
            f"gradinv-exp: interrupted by {signal.Signals(stop.signum).name}: "
            f"{counts['finished']} job(s) finished, {counts['interrupted']} interrupted "
            f"(saved with status: interrupted){failed}, {counts['missing']} never "
            f"started{elsewhere}; run the same command again to finish the sweep",
            file=sys.stderr,
        )
        sys.exit(128 + stop.signum)
    if error is not None:
        fail(f"the launcher stopped: {faults.error_line(error)}", faults.EXIT_FAILED)
    if failures:
        fail(
            f"{len(failures)} job(s) failed, the others finished; {failures[0]}",
            faults.EXIT_FAILED,
        )
    if unwritten:
        sys.exit(faults.EXIT_FAILED)


if __name__ == "__main__":
    main()
