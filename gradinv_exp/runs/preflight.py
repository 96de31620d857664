"""Check every job of a command line before Hydra runs any of them.

Hydra reports composition errors as several lines of text and only when the job that
holds them starts; here each job's config (the command's sweeps times an experiment
preset's ``hydra.sweeper.params``) is composed and converted up front, and the first
problem becomes a one-line ``ConfigError``. ``plan`` does what needs no torch (option
names, types, ranges, rules across groups, the output folders); ``check_jobs`` then runs
the per-job checks that need torch or the disk.
"""

from __future__ import annotations

import difflib
import itertools
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra._internal.utils import get_args_parser
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from gradinv_exp.config import CONF_DIR, Config
from gradinv_exp.options import ConfigError
from gradinv_exp.runs import resume

JOB_NUM = "${hydra.job.num}"  # the default sweep subdir: job folders are job numbers
GROUPS = (
    "defense", "model", "dataset", "client", "optimizer", "attack", "server", "tracking",
    "experiment", "defense_level",
)  # fmt: skip
OPTIONAL = ("experiment", "defense_level")  # groups without a default: +GROUP=NAME selects


BASIC_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
BATCHED_LAUNCHER = "hydra_plugins.gradinv_exp_batched.BatchedLauncher"  # runs/batched.py
# launchers that run the jobs from this process (the batched one may fork workers, which
# it watches itself: runs/pool.py)
IN_PROCESS = (BASIC_LAUNCHER, BATCHED_LAUNCHER)


@dataclass(frozen=True)
class Plan:
    """What a command line will run: one job (``multirun`` false) or a sweep.

    ``folder`` is the run folder or the sweep folder, resolved (``${now:...}`` filled in);
    ``jobs`` holds each job's overrides, ``configs`` each job's checked config,
    ``job_dirs`` each job's folder (None where a custom ``hydra.sweep.subdir`` is known only
    when the job runs).
    ``in_process``: the jobs run in this process (a single run, the basic launcher), not
    in processes of a launcher (joblib workers, submitit tasks).
    """

    multirun: bool
    folder: Path
    jobs: list[list[str]]
    configs: list[Config]
    job_dirs: list[Path | None]
    in_process: bool

    @property
    def folder_key(self) -> str:
        """The override that sets ``folder``."""
        return "hydra.sweep.dir" if self.multirun else "hydra.run.dir"


def in_process(hydra_cfg: DictConfig, multirun: bool) -> bool:
    """Whether the jobs of ``hydra_cfg`` (a composed ``hydra`` node) run in the process
    that Hydra starts in: a single run, or a sweep under the basic or batched launcher."""
    return not multirun or hydra_cfg.launcher.get("_target_") in IN_PROCESS


def options(group: str, overrides: Sequence[str] = ()) -> list[str]:
    """The options of a config group: the YAML files in ``conf/<group>/`` and in the same
    folder of every config folder on ``hydra.searchpath`` (the user's presets; set in
    ``overrides``), as Hydra will find them."""
    hydra = GlobalHydra.instance()
    if not hydra.is_initialized():
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return options(group, overrides)
    loader = hydra.config_loader()
    return sorted(loader.get_group_options(group, config_name="config", overrides=list(overrides)))


def hydra_message(err: BaseException) -> str:
    """First line of an exception and of its causes, joined: Hydra's messages are long."""
    parts: list[str] = []
    current: BaseException | None = err
    while current is not None:
        text = str(current).strip()
        parts.append(text.splitlines()[0] if text else type(current).__name__)
        current = current.__cause__
    return ": ".join(dict.fromkeys(parts))


def keys(node: object, prefix: str = "") -> Iterator[str]:
    """Every dotted key of a config container (``attack``, ``attack.iterations``, ...)."""
    if isinstance(node, dict):
        for name, child in node.items():
            key = f"{prefix}{name}"
            yield key
            yield from keys(child, f"{key}.")


def suggestion(message: str) -> str:
    """``; did you mean 'defense'?`` when ``message`` is Hydra's for an override of an
    unknown key (``defence``, ``attack.iteration``) one typo away from a config group or a
    key of the default config; else nothing."""
    found = re.match(r"Could not override '([^']+)'", message)
    if found is None:
        return ""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        known = [*GROUPS, *keys(OmegaConf.to_container(compose("config")))]
    close = difflib.get_close_matches(found.group(1), known, n=1, cutoff=0.8)
    return f"; did you mean '{close[0]}'?" if close else ""


def values(override: Override) -> list[str]:
    """The values an override takes in a sweep (one value when it is not a sweep)."""
    if override.is_sweep_override():
        return list(override.sweep_string_iterator())
    return [override.get_value_element_as_str()] if not override.is_delete() else []


def check_groups(overrides: list[Override]) -> None:
    """Unknown option of a config group -> one line listing the valid ones."""
    plain = [o.input_line for o in overrides if not o.is_sweep_override()]  # hydra.searchpath
    for o in overrides:
        group = o.key_or_group
        if group not in GROUPS or o.package is not None:
            continue
        known = options(group, plain)
        for value in values(o):
            if value not in known:
                raise ConfigError(
                    f"{o.get_key_element()}={value} is not an option of '{group}': choose one "
                    f"of {', '.join(known)}"
                )


def jobs(overrides: list[Override], preset_sweeps: dict[str, str]) -> Iterator[list[str]]:
    """Each job's override list, as Hydra's basic sweeper would form it."""
    axes: dict[str, list[str]] = {}
    for key, value in preset_sweeps.items():
        parsed = OverridesParser.create().parse_overrides([f"{key}={value}"])[0]
        axes[parsed.get_key_element()] = [f"{parsed.get_key_element()}={v}" for v in values(parsed)]
    fixed = []
    for o in overrides:
        if o.is_sweep_override():
            axes[o.get_key_element()] = [f"{o.get_key_element()}={v}" for v in values(o)]
        else:
            fixed.append(o.input_line)
    for combo in itertools.product(*axes.values()):
        yield fixed + list(combo)


def quoted(value: str) -> str:
    """``value`` as a quoted Hydra override value (any character allowed)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def to_config(job: list[str]) -> Config:
    """The typed, range-checked config of one job (ConfigError on the first problem)."""
    typed = OmegaConf.to_object(compose("config", overrides=job))
    assert isinstance(typed, Config)
    return typed


def parse(lines: list[str]) -> list[Override]:
    """The override lines, parsed (a one-line ConfigError for bad syntax)."""
    try:
        return OverridesParser.create().parse_overrides(lines)
    except HydraException as err:
        raise ConfigError(hydra_message(err)) from None


def job_folder(job: list[str], num: int, sweep_dir: Path, hydra_cfg: DictConfig) -> Path | None:
    """The folder sweep job ``num`` (overrides ``job``) will write to: ``hydra.sweep.subdir``
    resolved with the job's own config and number, as Hydra resolves it when the job
    starts (``${hydra.job.num}`` by default, or e.g. ``${defense.name}``); None when it
    cannot be resolved before then (the ``hydra:`` resolver)."""
    if OmegaConf.to_container(hydra_cfg.sweep, resolve=False).get("subdir") == JOB_NUM:
        return sweep_dir / str(num)  # the default, without composing the job again
    cfg = compose("config", overrides=job, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.job.num = num
    try:
        return sweep_dir / str(cfg.hydra.sweep.subdir)
    except OmegaConfBaseException:
        return None


def plan(argv: list[str]) -> Plan | None:
    """Compose and check every job of this command line; None when Hydra only prints
    (``--help``, ``--cfg`` ...). Raises ConfigError for the first bad job."""
    args = get_args_parser().parse_args(argv)
    if args.help or args.hydra_help or args.cfg or args.info or args.shell_completion:
        return None
    overrides = parse(args.overrides)
    plain = [o.input_line for o in overrides if not o.is_sweep_override()]
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            check_groups(overrides)
            first = compose("config", overrides=plain, return_hydra_config=True)
            params = first.hydra.sweeper.get("params")
            preset = OmegaConf.to_container(params) if params else {}
            multirun = args.multirun or str(first.hydra.mode) == "RunMode.MULTIRUN"
            if not multirun and (preset or len(plain) < len(overrides)):
                raise ConfigError("this command sweeps over values: add -m (--multirun)")
            every = list(jobs(overrides, preset)) if multirun else [plain]
            configs = [to_config(job) for job in every]
            folder = Path(first.hydra.sweep.dir if multirun else first.hydra.run.dir)
            dirs = (
                [job_folder(job, num, folder, first.hydra) for num, job in enumerate(every)]
                if multirun
                else [folder]
            )
            # Resume: never let Hydra overwrite a finished run made with other overrides.
            for run_dir, job in zip(dirs, every):
                if run_dir is not None:
                    resume.check_folder(run_dir, job)
            local = in_process(first.hydra, multirun)
            if multirun and first.hydra.launcher.get("_target_") == BATCHED_LAUNCHER:
                from gradinv_exp.runs import batched

                launcher = first.hydra.launcher
                batched.check(launcher.max_problems, launcher.workers, launcher.get("cluster"))
    except ConfigError:
        raise
    except (HydraException, OmegaConfBaseException, ValueError) as err:
        message = hydra_message(err)
        raise ConfigError(message + suggestion(message)) from None
    return Plan(multirun, folder, every, configs, dirs, local)


def check_jobs(plan: Plan, check: Callable[[Config], None]) -> None:
    """Run ``check`` (the checks that need torch or the disk) on every job's config; jobs
    with equal configs are checked once."""
    seen: set[str] = set()
    for cfg in plan.configs:
        if repr(cfg) not in seen:
            check(cfg)
            seen.add(repr(cfg))
