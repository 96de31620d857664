"""Command line: ``python -m gradinv_exp [overrides]`` (or ``gradinv-exp``), Hydra inside.

Before Hydra starts any job, every job's config is composed and checked (``preflight``),
so a typo in a 50-job sweep fails in a second with one line and exit code 2 instead of
after the first 49 jobs. Exit codes: 0 every run finished (ok or diverged), 1 a run failed
(in a sweep: after all jobs ran), 2 bad configuration, 130/143 stopped by SIGINT/SIGTERM.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from gradinv_exp import callbacks, checks, config, faults, preflight, resume
from gradinv_exp.run import identity, run, to_config

EXIT_CONFIG = 2  # bad input: nothing was run


@hydra.main(version_base="1.3", config_path=str(preflight.CONF_DIR), config_name="config")
def hydra_main(cfg: DictConfig) -> float:
    """One Hydra job: typed config, run, return PSNR (a value for Hydra sweepers).

    A job that raises has written ``status: failed`` into its metrics.json; in a sweep it
    returns NaN so Hydra goes on with the next job (Hydra would otherwise stop the sweep
    at the end of the batch and skip the callbacks that write the summary).
    """
    hydra = HydraConfig.get()
    try:
        typed = to_config(cfg)
    except checks.ConfigError as err:  # only jobs beyond preflight.MAX_JOBS_CHECKED get here
        faults.record_failure(Path(hydra.runtime.output_dir), err, identity(cfg))
        return failed(hydra, err, str(err), EXIT_CONFIG)
    run_dir = Path(hydra.runtime.output_dir)
    previous = resume.finished_run(run_dir)  # resume: a finished run is never redone
    if previous is not None:
        return previous["psnr"]
    try:
        with faults.interruptible():  # also in joblib workers, where main() does not run
            summary = run(typed, run_dir)
    except checks.ConfigError as err:  # e.g. the data set is not on this machine
        return failed(hydra, err, str(err), EXIT_CONFIG)
    except Exception as err:
        return failed(hydra, err, faults.one_line(err), faults.EXIT_FAILED)
    return summary["psnr"]


def failed(hydra: Any, err: Exception, message: str, code: int) -> float:
    """A job raised: a single run exits with ``code``; a sweep job says so and goes on (its
    metrics.json says ``failed``; the sweep's summary counts it, see ``callbacks``)."""
    if hydra.mode != RunMode.MULTIRUN:
        fail(message, code)
    print(f"gradinv-exp: job {hydra.job.num} failed: {faults.one_line(err)}", file=sys.stderr)
    return float("nan")


def fail(message: str, code: int = EXIT_CONFIG) -> None:
    print(f"gradinv-exp: error: {message}", file=sys.stderr)
    sys.exit(code)


def main() -> None:
    config.register()
    callbacks.FAILURES.clear()
    try:
        with faults.interruptible():
            try:
                preflight.check(sys.argv[1:])
            except checks.ConfigError as err:
                fail(str(err))
            hydra_main()
    except faults.Interrupted as stop:
        print(
            f"gradinv-exp: {stop}: stopped; the run in progress saved its results so far "
            "with status: interrupted",
            file=sys.stderr,
        )
        sys.exit(stop.exit_code)
    if failures := callbacks.FAILURES:
        fail(
            f"{len(failures)} job(s) failed, the others finished; {failures[0]}", faults.EXIT_FAILED
        )


if __name__ == "__main__":
    main()
