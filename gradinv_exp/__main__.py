"""Command line: ``python -m gradinv_exp [overrides]`` (or ``gradinv-exp``), Hydra inside.

Before Hydra starts any job, every job's config is composed and checked (``preflight``),
so a typo in a 50-job sweep fails in a second with one line and exit code 2 instead of
after the first 49 jobs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from gradinv_exp import config, preflight, resume
from gradinv_exp.run import run, to_config

EXIT_CONFIG = 2  # bad input: nothing was run


@hydra.main(version_base="1.3", config_path=str(preflight.CONF_DIR), config_name="config")
def hydra_main(cfg: DictConfig) -> float:
    """One Hydra job: typed config, run, return PSNR (a value for Hydra sweepers)."""
    try:
        typed = to_config(cfg)
    except config.ConfigError as err:
        fail(str(err))
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    previous = resume.finished_run(run_dir)  # resume: a finished run is never redone
    if previous is not None:
        return previous["psnr"]
    summary = run(typed, run_dir)
    return summary["psnr"]


def fail(message: str) -> None:
    print(f"gradinv-exp: error: {message}", file=sys.stderr)
    sys.exit(EXIT_CONFIG)


def main() -> None:
    config.register()
    try:
        preflight.check(sys.argv[1:])
    except config.ConfigError as err:
        fail(str(err))
    hydra_main()


if __name__ == "__main__":
    main()
