"""Command line: ``python -m gradinv_exp [overrides]`` (or ``gradinv-exp``), Hydra inside.

Before Hydra starts any job, every job's config is composed and checked (``preflight``),
so a typo in a 50-job sweep fails in a second with one line and exit code 2 instead of
after the first 49 jobs. A sweep's folder is fixed before it starts, so that when the
last job returns this process writes the sweep's summary and counts the jobs that did
not finish, whichever launcher ran them. Exit codes: 0 every run finished (ok or
diverged), 1 a run failed (in a sweep: after all jobs ran), 2 bad configuration,
130/143 stopped by SIGINT/SIGTERM.

A bad command line answers before torch loads: the schema modules defer torch
(``lazy.py``), and the experiment (torch, torchvision, matplotlib) is imported only once
every job's config passed the checks that need no tensor.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from gradinv_exp import config
from gradinv_exp.options import ConfigError
from gradinv_exp.runs import faults, preflight, resume

EXIT_CONFIG = 2  # bad input: nothing was run


@hydra.main(version_base="1.3", config_path=str(config.CONF_DIR), config_name="config")
def hydra_main(cfg: DictConfig) -> float:
    """One Hydra job: typed config, run, return PSNR (a value for Hydra sweepers).

    A job that raises has written ``status: failed`` into its metrics.json; in a sweep it
    returns NaN so Hydra goes on with the next job (Hydra would otherwise stop the sweep
    at the end of the batch).
    """
    from gradinv_exp import experiment  # heavy: after the checks (module docstring)

    config.register()  # joblib and submitit workers run jobs in fresh processes
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        typed = experiment.to_config(cfg)
    except ConfigError as err:  # preflight checked every job; only a changed config gets here
        faults.record_failure(run_dir, err, config.flat(cfg))
        return failed(hydra_cfg, err, str(err), EXIT_CONFIG)
    previous = resume.finished_run(run_dir)  # resume: a finished run is never redone
    if previous is not None:
        return previous["psnr"]
    try:
        with faults.interruptible():  # also in joblib workers, where main() does not run
            metrics = experiment.run(typed, run_dir)
    except ConfigError as err:  # e.g. the data set is not on this machine
        return failed(hydra_cfg, err, str(err), EXIT_CONFIG)
    except Exception as err:
        return failed(hydra_cfg, err, faults.error_line(err), faults.EXIT_FAILED)
    return metrics["psnr"]


def failed(hydra_cfg: Any, err: Exception, message: str, code: int) -> float:
    """A job raised: a single run exits with ``code``; a sweep job says so and goes on (its
    metrics.json says ``failed``; the sweep's summary counts it)."""
    if hydra_cfg.mode != RunMode.MULTIRUN:
        fail(message, code)
    print(f"gradinv-exp: job {hydra_cfg.job.num} failed: {faults.error_line(err)}", file=sys.stderr)
    return float("nan")


def fail(message: str, code: int = EXIT_CONFIG) -> None:
    print(f"gradinv-exp: error: {message}", file=sys.stderr)
    sys.exit(code)


def quoted(value: str) -> str:
    """``value`` as a quoted Hydra override value (any character allowed)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def summarise(sweep_dir: Path) -> tuple[list[str], str | None]:
    """Write the sweep's summary.csv and figures. Returns one line per job that did not
    finish, and why the summary could not be written (None when it was): the jobs are
    counted first, so a full disk never hides a failed job."""
    from gradinv_exp.analysis import summary  # pandas, matplotlib: only when a sweep ends

    frame, problems = summary.collect([sweep_dir])
    failures = summary.failures(frame, problems)
    try:
        summary.summarise_sweep(sweep_dir, frame, problems)
    except Exception as err:
        return failures, f"the sweep summary could not be written: {faults.error_line(err)}"
    return failures, None


def main() -> None:
    config.register()
    argv = sys.argv[1:]
    try:
        with faults.interruptible():
            try:
                plan = preflight.plan(argv)
                if plan is not None:
                    from gradinv_exp import experiment  # heavy: after the fast checks

                    preflight.check_jobs(plan, experiment.check)
            except ConfigError as err:
                fail(str(err))
            if (
                plan is not None
                and plan.multirun
                and not any(a.startswith("hydra.sweep.dir=") for a in argv)
            ):
                sys.argv.append(f"hydra.sweep.dir={quoted(str(plan.folder))}")
            hydra_main()
    except faults.Interrupted as stop:
        print(
            f"gradinv-exp: {stop}: stopped; the run in progress saved its results so far "
            "with status: interrupted",
            file=sys.stderr,
        )
        sys.exit(stop.exit_code)
    if plan is None or not plan.multirun:
        return
    failures, unwritten = summarise(plan.folder)
    if unwritten:
        print(f"gradinv-exp: error: {unwritten}", file=sys.stderr)
    if failures:
        fail(
            f"{len(failures)} job(s) failed, the others finished; {failures[0]}", faults.EXIT_FAILED
        )
    if unwritten:
        sys.exit(faults.EXIT_FAILED)


if __name__ == "__main__":
    main()
