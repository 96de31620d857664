"""Every job of a command line is checked before any runs: each bad command line in
scripts/bad_overrides.txt, bad defense settings and bad combinations stop with one line.

Most are checked in-process, exactly as the command line does before Hydra starts
(``preflight.plan``, then ``experiment.check`` per job: fast); a few through the real
command line for the exit code and the single stderr line (each costs a Python start).
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import REPO, compose_config, preflight_check
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from gradinv_exp import config, models
from gradinv_exp.base.options import ConfigError
from gradinv_exp.runs import preflight

LINES = [
    line
    for line in (REPO / "scripts" / "bad_overrides.txt").read_text().splitlines()
    if line.strip() and not line.startswith("#")
]


@pytest.fixture
def scratch(tmp_path) -> Path:
    """A folder with grey.pt: a 1-channel LeNet's state dict (for 3-channel data: mismatch)."""
    grey = models.build(
        "lenet", channels=1, num_classes=100, image_size=32, activation="sigmoid",
        init_range=0.5, generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    torch.save(grey.state_dict(), tmp_path / "grey.pt")
    return tmp_path


def culprit(line: str) -> str:
    """What the message must name: the last override's key (a sweep without -m: the -m
    hint; a new entry of a mapping, ``+attack.priors.NAME=...``: the mapping and the entry)."""
    key, value = line.split()[-1].split("=", 1)
    if "," in value and not value.startswith("[") and "-m" not in line:
        return "add -m (--multirun)"
    if key.startswith("+"):
        mapping, _, entry = key[1:].rpartition(".")
        return f"{mapping}={entry!r}"
    return key


@pytest.mark.parametrize("line", LINES)
def test_bad_line_is_one_config_error(line, scratch):
    with pytest.raises(ConfigError) as info:
        preflight_check(line.replace("{tmp}", str(scratch)).split())
    message = str(info.value)
    assert "\n" not in message and message
    expected = culprit(line)
    assert expected and expected in message


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("dataset=photos model.checkpoint={tmp}/grey.pt",
         "has shape (12, 1, 5, 5) but the model needs (12, 3, 5, 5)"),
    ],
)  # fmt: skip
def test_bad_line_exits_2_with_one_stderr_line(run_cli, scratch, line, expected):
    never = scratch / "never"
    args = line.replace("{tmp}", str(scratch)).split()
    proc = run_cli(*args, f"hydra.run.dir={never}", f"hydra.sweep.dir={never}")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gradinv-exp: error: ") and expected in lines[0]
    assert not never.exists()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["defense=bogus"], "defense=bogus is not an option of 'defense': choose one of chain"),
        (["defense=noise", "defense.sigma=-1"], "defense.sigma=-1.0 is not allowed: must be >= 0"),
        (["defense=prune", "defense.ratio=1.5"], "defense.ratio=1.5 is not allowed: must be in"),
        (["defense=quantize", "defense.bits=0"], "defense.bits=0 is not allowed"),
        (["defense=quantize", "defense.bits=four"], "could not be converted to Integer"),
        (["-m", "defense=prune", "defense.ratio=0.2,2.0"], "defense.ratio=2.0 is not allowed"),
        (["model=vgg"], "model=vgg is not an option of 'model': choose one of convnet, custom"),
        (["defence=noise"], "the config has no key 'defence' (its keys: defense, model,"),
        (["attack.iteration=3"], "attack=dlg has no field 'iteration' (its fields: name,"),
        (["defense=noise", "defense.sigm=0.01"],
         "Could not override 'defense.sigm': defense=noise has no field 'sigm' (its fields: "
         "name, sigma, distribution); did you mean 'defense.sigma'?"),
        (["dataset.batch_size=100000"],
         "dataset.batch_size=100000 is not allowed: the run attacks 100000 distinct images "
         "(trials x clients x dataset.batch_size) and cifar100 has 50000 images and 25000 of "
         "them are the clients'"),
    ],
)  # fmt: skip
def test_bad_input_fails_fast_with_one_line(run_cli, tmp_path, args, expected):
    proc = run_cli(
        *args, f"hydra.run.dir={tmp_path / 'never'}", f"hydra.sweep.dir={tmp_path / 'never'}"
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("gradinv-exp: error: ") and expected in lines[0]
    assert not (tmp_path / "never").exists()  # nothing ran, nothing was written


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["attack=ig", "optimizer=lbfgs"],
         "optimizer='lbfgs' is not allowed: attack=ig sets attack.signed=true and "
         "attack.lr_decay=true, which needs optimizer=adam"),
        (["attack=ig", "attack.labels=oracle"], "attack.labels='oracle' is not allowed"),
        (["dataset=folder", "dataset.root=/no/such/dir"], "dataset.root='/no/such/dir'"),
        (["model=resnet18", "model.init=zeros"], "model.init='zeros' is not allowed"),
    ],
)  # fmt: skip
def test_bad_combinations_fail_in_preflight_with_one_line(args, expected):
    with pytest.raises(ConfigError, match=re.escape(expected)) as err:
        preflight_check(args)  # exactly the command line's checks before any job
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["defense=chain", "defense.steps=[{name: topk, keep: 0}]"],
         "defense.steps[0]: defense.keep=0.0 is not allowed"),
        (["defense=chain", "defense.steps=[{name: prune}, {name: dp}]", "dataset.batch_size=2"],
         "must be the chain's first step"),
        (["defense=dp", "defense.noise_multiplier=-1"], "defense.noise_multiplier=-1.0 is not"),
        (["defense=soteria", "defense.percentile=101"], "defense.percentile=101.0 is not"),
        (["-m", "defense=topk", "defense.keep=0.1,1.5"], "defense.keep=1.5 is not allowed"),
    ],
)  # fmt: skip
def test_bad_defense_settings_fail_in_preflight(args, expected):
    with pytest.raises(ConfigError) as err:
        preflight_check(args)
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_plan_names_every_job_and_the_folder_before_any_runs(tmp_path):
    config.register()
    plan = preflight.plan(["-m", "defense=none,prune", "seed=3", f"hydra.sweep.dir={tmp_path}"])
    assert plan is not None and plan.multirun and plan.folder == tmp_path
    sweep_dir = f"hydra.sweep.dir={tmp_path}"
    assert plan.jobs == [
        ["defense=none", "seed=3", sweep_dir],
        ["defense=prune", "seed=3", sweep_dir],
    ]
    assert [c.defense.name for c in plan.configs] == ["none", "prune"]
    assert all(c.seed == 3 for c in plan.configs)
    single = preflight.plan(["defense=noise", f"hydra.run.dir={tmp_path / 'one'}"])
    assert single is not None and not single.multirun and single.folder == tmp_path / "one"
    assert preflight.plan(["--help"]) is None  # Hydra only prints


@pytest.mark.parametrize(
    ("args", "count"),
    [
        (["+experiment=dp_sweep", "hydra/launcher=basic", "defense.noise_multiplier=0.5"], 1),
        (["+experiment=fedavg_sweep", "client.local_batch=null"], 8),
        (["+experiment=seed_defenses", "seed=0,8"], 8),
        (["+experiment=quantize_sweep", "defense.bits=2,4"], 2),
        (["-m", "defense=none,prune", "seed=3", "defense=noise"], 1),
    ],
)
def test_the_jobs_are_those_hydras_basic_sweeper_runs(tmp_path, args, count):
    """A command-line value of a key replaces a preset's (or an earlier) sweep of it, as
    in Hydra's basic sweeper: the plan's jobs (and so the sweep's summary rows) are the
    sweeper's own job lists, the same overrides in the same order."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    config.register()
    plan = preflight.plan([*args, f"hydra.sweep.dir={tmp_path}"])
    assert plan is not None and plan.multirun and len(plan.jobs) == count
    first = compose_config(*[a for a in args if a != "-m" and "," not in a], hydra=True)
    params = [f"{k}={v}" for k, v in (first.hydra.sweeper.get("params") or {}).items()]
    task = [a for a in args if a != "-m" and not a.startswith("hydra")]
    parsed = OverridesParser.create().parse_overrides([*params, *task])
    (hydras,) = BasicSweeper.split_arguments(parsed, None)
    assert [job[: len(hydras[0])] for job in plan.jobs] == hydras
    assert all(job[len(hydras[0]) :] == [a for a in args if a.startswith("hydra")]
               + [f"hydra.sweep.dir={tmp_path}"] for job in plan.jobs)  # fmt: skip


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["server=imprint", "attack=imprint", "attack.iterations=3"],
         "Could not override 'attack.iterations': attack=imprint has no field 'iterations' "
         "(its fields: name, family, min_bias_grad)"),
        (["defense=noise", "defense.sigm=0.01"],
         "defense=noise has no field 'sigm' (its fields: name, sigma, distribution); did you "
         "mean 'defense.sigma'?"),
        (["-m", "defense=noise,prune", "defense.sigm=0.01"],  # the first job's choice
         "defense=noise has no field 'sigm' (its fields: name, sigma, distribution); did you "
         "mean 'defense.sigma'?"),
        (["+experiment=dp_sweep", "defense.sigma=0.1"],
         "defense=dp has no field 'sigma' (its fields: name, clip, noise_multiplier, delta, "
         "accountant)"),
        (["defense=noise", "defense.extra.x=3"], "defense=noise has no field 'extra' ("),
        (["hydra.sweep.dirr=x"],
         "hydra.sweep has no field 'dirr' (its fields: dir, subdir); did you mean "
         "'hydra.sweep.dir'?"),
        (["defense=noise", "+defense.sigm=3"],  # added: schema conversion would drop it
         "defense=noise has no field 'sigm' (its fields: name, sigma, distribution); did you "
         "mean 'defense.sigma'?"),
        (["metrics.success_thresh=3"],
         "metrics has no field 'success_thresh' (its fields: lpips, success_metric, "
         "success_threshold); did you mean 'metrics.success_threshold'?"),
        (["sed=3"],
         "the config has no key 'sed' (its keys: defense, model, dataset, client, optimizer, "
         "attack, server, clients, tracking, seed,"),
    ],
)  # fmt: skip
def test_an_unknown_key_is_named_with_the_fields_of_the_chosen_option(args, expected):
    config.register()
    with pytest.raises(ConfigError) as err:
        preflight.plan(args)
    message = str(err.value)
    assert expected in message and "\n" not in message
    guess = {"attack.iterations=3": None, "defense.sigma=0.1": None, "defense.extra.x=3": None,
             "sed=3": "; did you mean 'seed'?"}.get(args[-1], "did you mean")  # fmt: skip
    assert (guess is None and "did you mean" not in message) or (guess and guess in message)


def test_a_sweep_only_setting_on_a_single_run_is_warned(tmp_path):
    config.register()
    one = tmp_path / "one"
    plan = preflight.plan([f"hydra.sweep.dir={tmp_path / 's'}", f"hydra.run.dir={one}"])
    assert plan is not None and not plan.multirun
    assert plan.warnings == [
        f"hydra.sweep.dir={tmp_path / 's'} applies to sweeps (-m) only: this single run "
        f"writes to {one} (set hydra.run.dir to choose its folder)"
    ]
    swept = preflight.plan(["-m", "seed=0,1", f"hydra.sweep.dir={tmp_path / 's'}"])
    assert swept is not None and swept.warnings == []


@pytest.mark.parametrize(
    "hidden, choice", [("BatchedLauncher", "hydra/launcher=batched"),
                       ("ComposedSweeper", "hydra/sweeper=composed")],
)  # fmt: skip
def test_a_plugin_that_hydra_cannot_find_stops_the_plan(tmp_path, monkeypatch, hidden, choice):
    """An install that hides hydra_plugins/gradinv_exp_batched from Hydra's plugin scan
    (the editable install did, before pyproject.toml listed the namespace) fails in
    preflight, before any job or file, not when the sweep ends."""
    from hydra.core.plugins import Plugins

    config.register()
    plugins = Plugins.instance()
    found = plugins.discover
    monkeypatch.setattr(
        plugins,
        "discover",
        lambda kind=None: [c for c in found(kind) if c.__name__ != hidden],
    )
    with pytest.raises(ConfigError) as err:
        preflight.plan(["+experiment=seed_defenses", f"hydra.sweep.dir={tmp_path / 's'}"])
    kind = "launcher" if "launcher" in choice else "sweeper"
    assert str(err.value).startswith(
        f"{choice}: Hydra finds no {kind} hydra_plugins.gradinv_exp_batched.{hidden}: the "
        "installed gradinv_exp does not show its hydra_plugins/ folder to Hydra"
    )
    assert not (tmp_path / "s").exists()


def test_an_unknown_launcher_class_is_one_line_and_exit_2_before_any_file(run_cli, tmp_path):
    sweep = tmp_path / "sweep"
    target = "hydra.launcher._target_=hydra_plugins.nowhere.Launcher"
    proc = run_cli("-m", "seed=0,1", target, f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "gradinv-exp: error: hydra/launcher=basic: Hydra finds no launcher "
        "hydra_plugins.nowhere.Launcher; Hydra finds "
    )
    assert "hydra_plugins.gradinv_exp_batched.BatchedLauncher" in lines[0]
    assert not sweep.exists()


def test_check_jobs_checks_each_distinct_config_once(tmp_path):
    config.register()
    args = ["-m", "defense=none,none,prune", "seed=0,1", f"hydra.sweep.dir={tmp_path}"]
    plan = preflight.plan(args)
    seen = []
    preflight.check_jobs(plan, lambda cfg: seen.append(cfg.defense.name))
    assert seen == ["none", "prune"]  # seeds are not what the checks read


def test_hydra_message_joins_the_first_line_of_each_cause():
    try:
        try:
            raise RuntimeError("inner\nmore")
        except RuntimeError as inner:
            raise ValueError("outer\ndetail") from inner
    except ValueError as err:
        assert preflight.hydra_message(err) == "outer: inner"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["hydra.run.dir=/proc/forbidden/x"],
         "hydra.run.dir=/proc/forbidden/x cannot be created or written: No such file or "
         "directory (/proc/forbidden)"),
        (["-m", "seed=0,1", "hydra.sweep.dir={tmp}/file/sweep"],
         "hydra.sweep.dir={tmp}/file/sweep cannot be created or written: Not a directory"),
    ],
)  # fmt: skip
def test_an_output_folder_that_cannot_be_made_is_one_line_before_any_job(
    run_cli, tmp_path, args, expected
):
    (tmp_path / "file").write_text("a file where a folder should be")
    proc = run_cli(*[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gradinv-exp: error: ")
    assert expected.replace("{tmp}", str(tmp_path)) in lines[0]
    assert proc.stdout == ""  # no job started: Hydra logged nothing


def test_config_checks_run_before_torch_is_imported():
    """Every check that needs no tensor answers without loading torch (~1.5 s): the
    command line's one-line errors come back at once (scripts/bench_startup.py times them)."""
    code = (
        "import sys\n"
        "from gradinv_exp import config\n"
        "from gradinv_exp.base.options import ConfigError\n"
        "from gradinv_exp.runs import preflight\n"
        "config.register()\n"
        "for argv in (['defense=prune', 'defense.ratio=1.5'], ['attack=ig', 'optimizer=lbfgs'],\n"
        "             ['client=fedavg', 'client.local_steps=0'], ['dataset.batch_size=100000']):\n"
        "    try:\n"
        "        preflight.plan(argv)\n"
        "    except ConfigError:\n"
        "        pass\n"
        "    else:\n"
        "        raise SystemExit(f'{argv} passed')\n"
        "assert preflight.plan(['attack=ig', 'client=fedavg', 'defense=chain']) is not None\n"
        "heavy = ('torch', 'torchvision', 'matplotlib', 'PIL', 'skimage')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    env = os.environ | {"PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "args",
    [
        ["+experiment=defense_audit"],  # group choices (levels, attacks) and a value axis
        [
            "-m",
            "defense=noise",
            "defense.sigma=0.1,0.2",
            "seed=4,5",
            "+tags.level=3",
            "model.init_range=0.3",
            "hydra.sweep.dir=x",
        ],  # fmt: skip
    ],
    ids=["audit", "values"],
)
def test_the_composer_gives_each_job_the_config_hydra_composes(args):
    """``preflight.Composer`` composes the defaults once per set of choices and applies the
    values to a copy: each job's config equals Hydra's composition of the job."""
    jobs = preflight.plan(args).jobs
    with initialize_config_dir(config_dir=str(config.CONF_DIR), version_base="1.3"):
        composer = preflight.Composer(lambda job: compose("config", overrides=job))
        for job in jobs[:8]:
            mine = OmegaConf.to_container(composer(job), resolve=True)
            assert mine == OmegaConf.to_container(compose("config", overrides=job), resolve=True)
    assert len(composer.composed) < len(jobs[:8])  # some were copies
    with pytest.raises(ConfigError, match="has no field 'sigm'"):
        preflight.plan(["-m", "defense=noise", "defense.sigm=0.1,0.2"])  # Hydra's own error
