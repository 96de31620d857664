"""Check every job of a command line before Hydra runs any of them.

Hydra reports composition errors as several lines of text and only when the job that
holds them starts; here each job's config (the command's sweeps times an experiment
preset's ``hydra.sweeper.params``) is composed and converted up front, and the first
problem becomes a one-line ``ConfigError``. ``plan`` does what needs no torch (option
names, types, ranges, rules across groups, the output folders); ``check_jobs`` then runs
the per-job checks that need torch or the disk.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import itertools
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.utils import get_args_parser
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException
from hydra.types import HydraContext, RunMode
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from gradinv_exp import config
from gradinv_exp.base.options import ConfigError, require
from gradinv_exp.config import CONF_DIR, Config
from gradinv_exp.runs import resume
from gradinv_exp.runs.cluster import CLUSTERS

JOB_NUM = "${hydra.job.num}"  # the default sweep subdir: job folders are job numbers
OPTIONAL = ("experiment", "defense_level")  # groups without a default: +GROUP=NAME selects


BASIC_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
OURS = "hydra_plugins.gradinv_exp_batched."  # the sweeper and launcher of runs/
BATCHED_LAUNCHER = OURS + "BatchedLauncher"  # runs/batched.py
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
    ``warnings``: settings of the command line that it ignores (``hydra.sweep.dir`` on a
    single run), one line each.
    """

    multirun: bool
    folder: Path
    jobs: list[list[str]]
    configs: list[Config]
    job_dirs: list[Path | None]
    in_process: bool
    warnings: list[str] = field(default_factory=list)

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


def explain(message: str, job: Sequence[str]) -> str:
    """Hydra's ``message`` for an override of a key the config lacks (``Could not override
    'defense.sigm'``), said in terms of the option the job chose: ``defense=noise has no
    field 'sigm' (its fields: name, sigma, distribution); did you mean 'defense.sigma'?``.
    The fields are those of the config that the job ``job`` (override lines) composes with
    its group choices, so a key that other options have but the chosen one lacks
    (``attack=imprint attack.iterations=3``) is named as missing there, never suggested as
    itself. Any other message is returned as it is."""
    found = re.match(r"Could not override '([^']+)'", message)
    if found is None:
        return message
    key = found.group(1)
    choices = [o.input_line for o in parse(list(job)) if o.key_or_group in config.GROUPS]
    try:
        cfg = compose("config", overrides=choices, return_hydra_config=True)
    except (HydraException, OmegaConfBaseException):  # choices that fail: the defaults'
        cfg = compose("config", return_hydra_config=True)
    node = OmegaConf.to_container(cfg, resolve=False)
    if not key.startswith("hydra."):  # Hydra's own settings are not the experiment's keys
        del node["hydra"]
    *parents, missing = key.lstrip("+~").split(".")
    path: list[str] = []  # the deepest node of the key that exists
    for part in parents:
        if not isinstance(node.get(part), dict):
            missing = part
            break
        node, path = node[part], [*path, part]
    owner = ".".join(path)
    chosen = cfg.hydra.runtime.choices.get(owner)
    where = f"{owner}={chosen}" if chosen else owner or "the config"
    kind = "field" if owner else "key"
    close = difflib.get_close_matches(missing, list(node), n=1, cutoff=0.8)
    guess = f"; did you mean '{'.'.join([*path, close[0]])}'?" if close else ""
    listed = f"its {kind}s: {', '.join(node)}"
    return f"Could not override '{key}': {where} has no {kind} '{missing}' ({listed}){guess}"


def check_added(job: list[str], typed: Config) -> None:
    """ConfigError for a key the job adds (``+defense.sigm=3``) that its typed config has
    no place for: Hydra adds it to the composed config, and the conversion to the chosen
    option's schema would drop it without a word."""
    for o in parse(job):
        if not (o.is_add() or o.is_force_add()) or o.is_hydra_override():
            continue
        if o.key_or_group not in config.GROUPS and not holds(typed, o.key_or_group.split(".")):
            raise ConfigError(explain(f"Could not override '{o.key_or_group}'", job))


def holds(node: object, path: list[str]) -> bool:
    """Whether the typed config ``node`` (dataclasses and dicts) has the key ``path``."""
    for part in path:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif dataclasses.is_dataclass(node) and part in {f.name for f in dataclasses.fields(node)}:
            node = getattr(node, part)
        else:
            return False
    return True


def values(override: Override) -> list[str]:
    """The values an override takes in a sweep (one value when it is not a sweep), as
    Hydra's basic sweeper writes them into a job's overrides."""
    if override.is_sweep_override():
        return list(override.sweep_string_iterator())
    return [override.get_value_element_as_str()]


def check_groups(overrides: list[Override]) -> None:
    """Unknown option of a config group -> one line listing the valid ones."""
    plain = [o.input_line for o in overrides if not o.is_sweep_override()]  # hydra.searchpath
    for o in overrides:
        group = o.key_or_group
        if group not in config.GROUPS or o.package is not None or o.is_delete():
            continue
        known = options(group, plain)
        for value in values(o):
            if value not in known:
                raise ConfigError(
                    f"{o.get_key_element()}={value} is not an option of '{group}': choose one "
                    f"of {', '.join(known)}"
                )


def jobs(overrides: list[Override], preset_sweeps: dict[str, str]) -> Iterator[list[str]]:
    """Each job's override lines, as Hydra's basic sweeper forms them: the preset's swept
    keys first, then the command's overrides, one axis per key, where a command-line value
    of a key replaces the preset's (``+experiment=dp_sweep defense.noise_multiplier=0.5``
    is one job); then the command's ``hydra`` overrides, which Hydra applies to every job.
    """
    lines = [f"{key}={value}" for key, value in preset_sweeps.items()]
    preset = OverridesParser.create().parse_overrides(lines)
    axes: dict[str, list[str]] = {}
    for o in [*preset, *overrides]:
        if not o.is_hydra_override():
            key = o.get_key_element()
            axes[key] = [f"{key}={v}" for v in values(o)]
    every = [o.input_line for o in overrides if o.is_hydra_override()]
    for combo in itertools.product(*axes.values()):
        yield list(combo) + every


def quoted(value: str) -> str:
    """``value`` as a quoted Hydra override value (any character allowed)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def to_config(job: list[str]) -> Config:
    """The typed, range-checked config of one job (ConfigError on the first problem)."""
    return config.to_config(compose("config", overrides=job))


class Composer:
    """Each job's task config as Hydra composes it, with the defaults composed once per
    set of choices.

    Hydra composes a job in two parts: its defaults list (the config-group choices, and
    Hydra's own overrides, which may move the search path) into one config, then its value
    overrides applied to that config (``ConfigLoaderImpl._apply_overrides_to_config``). The
    jobs of a sweep mostly differ in values only, so the first part is made once per set of
    choices (``compose``: 0.1-0.5 s) and copied for each job (a copy and its values: a few
    ms): a sweep of 1,000 jobs is planned in seconds. A job whose values Hydra refuses is
    composed whole, so that its error is Hydra's own.
    """

    def __init__(self, compose: Callable[[list[str]], DictConfig]) -> None:
        self.compose = compose  # override lines -> the task config (no ``hydra`` node)
        self.composed: dict[tuple[str, ...], DictConfig] = {}

    def __call__(self, job: Sequence[str]) -> DictConfig:
        parsed = parse(list(job))
        choice = [choosing(o) for o in parsed]
        key = tuple(o.input_line for o, c in zip(parsed, choice) if c)
        if key not in self.composed:
            self.composed[key] = self.compose(list(key))
        cfg = copy.deepcopy(self.composed[key])
        try:
            ConfigLoaderImpl._apply_overrides_to_config(
                [o for o, c in zip(parsed, choice) if not c], cfg
            )
        except (HydraException, OmegaConfBaseException):
            return self.compose(list(job))  # raises Hydra's own error
        return cfg


def sweep_job(master: DictConfig, context: HydraContext, overrides: list[str]) -> DictConfig:
    """Job ``overrides`` of the sweep whose composed config is ``master``, with its Hydra
    node, composed under the sweep's own Hydra overrides as Hydra's
    ``ConfigLoader.load_sweep_config`` composes it (the sweeper's check, the launcher's
    plan)."""
    hydra = list(OmegaConf.to_container(master.hydra.overrides.hydra))
    return context.config_loader.load_configuration(
        config_name=master.hydra.job.config_name,
        overrides=[*hydra, *overrides],
        run_mode=RunMode.RUN,
    )


def choosing(override: Override) -> bool:
    """Whether ``override`` takes part in composing the defaults: a config group's choice
    (``defense=prune``, ``+experiment=x``, ``hydra/launcher=batched``), a deletion, or one
    of Hydra's own settings (``hydra.searchpath`` finds the user's presets)."""
    group = override.key_or_group
    return (
        group in config.GROUPS
        or "/" in group
        or override.is_delete()
        or override.is_hydra_override()
    )


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
    # the job being composed (at first: the first value of each sweep), whose choices
    # explain an unknown key
    current = [*plain, *(f"{o.get_key_element()}={values(o)[0]}" for o in overrides
                         if o.is_sweep_override())]  # fmt: skip
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        try:
            check_groups(overrides)
            first = compose("config", overrides=plain, return_hydra_config=True)
            params = first.hydra.sweeper.get("params")
            preset = OmegaConf.to_container(params) if params else {}
            multirun = args.multirun or str(first.hydra.mode) == "RunMode.MULTIRUN"
            if not multirun and (preset or len(plain) < len(overrides)):
                raise ConfigError("this command sweeps over values: add -m (--multirun)")
            every = list(jobs(overrides, preset)) if multirun else [plain]
            composer = Composer(lambda job: compose("config", overrides=job))
            configs = []
            for current in every:
                configs.append(config.to_config(composer(current)))
                check_added(current, configs[-1])
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
            if multirun:
                check_plugins(first.hydra)
        except ConfigError:
            raise
        except (HydraException, OmegaConfBaseException, ValueError) as err:
            raise ConfigError(explain(hydra_message(err), current)) from None
    notes = [] if multirun else [single_run_note(o, folder) for o in overrides if sweep_only(o)]
    return Plan(multirun, folder, every, configs, dirs, local, notes)


# what only a sweep (-m) reads: its folder, sweeper and launcher
SWEEP_ONLY = ("hydra.sweep.", "hydra.sweeper.", "hydra.launcher.", "hydra/launcher",
              "hydra/sweeper")  # fmt: skip


def sweep_only(override: Override) -> bool:
    """Whether ``override`` sets something only a sweep (``-m``) reads."""
    return override.key_or_group.startswith(SWEEP_ONLY)


def single_run_note(override: Override, folder: Path) -> str:
    """The warning for a sweep-only ``override`` on a single run, which Hydra ignores."""
    return (
        f"{override.input_line} applies to sweeps (-m) only: this single run writes to "
        f"{folder} (set hydra.run.dir to choose its folder)"
    )


def check_plugins(hydra_cfg: DictConfig) -> None:
    """ConfigError unless Hydra's plugin scan finds the sweep's sweeper and launcher
    classes (an install that hides ``hydra_plugins/gradinv_exp_batched`` from it fails
    here, before any job or file, not when the sweep ends); the batched launcher's
    settings are checked too."""
    from hydra.core.plugins import Plugins
    from hydra.plugins.launcher import Launcher
    from hydra.plugins.sweeper import Sweeper

    for group, kind in (("hydra/sweeper", Sweeper), ("hydra/launcher", Launcher)):
        target = hydra_cfg[group.split("/")[1]].get("_target_")
        found = sorted(f"{c.__module__}.{c.__name__}" for c in Plugins.instance().discover(kind))
        if target in found:
            continue
        hint = (
            ": the installed gradinv_exp does not show its hydra_plugins/ folder to Hydra; "
            "install it again (make install, or pip install -e . in the checkout)"
            if target.startswith(OURS)
            else f"; Hydra finds {', '.join(found)}"
        )
        choice, what = hydra_cfg.runtime.choices.get(group), kind.__name__.lower()
        raise ConfigError(f"{group}={choice}: Hydra finds no {what} {target}{hint}")
    if hydra_cfg.launcher.get("_target_") == BATCHED_LAUNCHER:
        launcher = hydra_cfg.launcher
        check_batched(launcher.max_problems, launcher.workers, launcher.get("cluster"))


def check_batched(max_problems: Any, workers: Any, cluster: Any = None) -> None:
    """The batched launcher's settings (``conf/hydra/launcher/batched.yaml``, any type as
    they come from a command line): ConfigError naming the bad one, before any job."""
    for key, value, least, allowed in (
        ("max_problems", max_problems, 0, "an integer >= 0 (0 = no cap)"),
        ("workers", workers, 1, "an integer >= 1 (1 = in this process)"),
    ):
        whole = isinstance(value, int) and not isinstance(value, bool)
        require(whole and value >= least, f"hydra.launcher.{key}", value, allowed)
    allowed = "null (forked local workers) or one of " + ", ".join(CLUSTERS)
    require(cluster is None or cluster in CLUSTERS, "hydra.launcher.cluster", cluster, allowed)


def check_jobs(plan: Plan, check: Callable[[Config], None]) -> None:
    """Run ``check`` (the checks that need torch or the disk) on every job's config; jobs
    whose configs differ only in their seed or tags (which those checks do not read) are
    checked once."""
    seen: set[str] = set()
    for cfg in plan.configs:
        key = repr(dataclasses.replace(cfg, seed=0, tags={}))
        if key not in seen:
            check(cfg)
            seen.add(key)
