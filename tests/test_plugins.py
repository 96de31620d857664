"""The user's own code, no fork: a defense, a model (or any torchvision architecture), an
objective and a prior named as ``module:function``, and presets on Hydra's search path.
Each runs end to end and a custom defense sits on its declared strength axis; each kind
of bad plugin stops preflight with one line naming it (in-process, as the command line
checks before any job; one case through the command line for the exit code)."""

import re
import shlex
import shutil
import time

import pytest
import torch
from helpers import FAST, REPO, preflight_check, typed_config

from gradinv_exp import experiment, models
from gradinv_exp.analysis import summary
from gradinv_exp.base.options import ConfigError

EXAMPLE = REPO / "scripts" / "plugin_example"
SEARCHPATH = f"hydra.searchpath=[file://{EXAMPLE / 'conf'}]"
SOFT_PRUNE = [
    "defense=custom", "defense.target=my_defenses:soft_prune", "+defense.params.p=0.3",
    "defense.strength=p",
]  # fmt: skip
TINY = [*FAST, "attack.iterations=2", "attack.snapshot_every=1", "dataset.image_size=16"]


@pytest.fixture
def example(monkeypatch):
    """scripts/plugin_example on the path, as its run.sh puts it."""
    monkeypatch.syspath_prepend(str(EXAMPLE))


def test_custom_defense_and_model_run_and_sit_on_the_declared_strength_axis(example, tmp_path):
    args = [*TINY, *SOFT_PRUNE, "model=custom", "model.target=my_models:tiny_cnn"]
    preflight_check(args)
    cfg = typed_config(*args)
    metrics = experiment.run(cfg, tmp_path / "run")
    assert metrics["status"] == "ok" and 0 < metrics["defense_changed"] <= 1
    assert metrics["config"]["defense.params.p"] == 0.3
    frame, problems = summary.collect([tmp_path])
    row = frame.iloc[0]
    assert not problems
    assert (row["defense"], row["strength_key"], row["strength"]) == ("soft_prune", "p", 0.3)
    assert not row["strength_log"]


def test_soft_prune_drops_about_p_of_the_entries_reproducibly(example):
    import my_defenses

    grads = [torch.ones(1000), torch.ones(10, 100)]

    def run(seed):
        gen = torch.Generator().manual_seed(seed)
        return my_defenses.soft_prune(grads, generator=gen, client=None, p=0.3, scale=0.0)

    first = run(0)
    dropped = sum(int((g == 0).sum()) for g in first) / 2000
    assert 0.25 < dropped < 0.35
    assert all(torch.equal(a, b) for a, b in zip(first, run(0)))
    assert not all(torch.equal(a, b) for a, b in zip(first, run(1)))


def test_user_presets_on_the_search_path_plan_the_example_sweep(example):
    plan = preflight_check([SEARCHPATH, "+experiment=soft_prune_sweep", *FAST])
    assert plan is not None and plan.multirun and len(plan.jobs) == 21
    names = {(c.defense.name, getattr(c.defense, "target", None)) for c in plan.configs}
    assert names == {("prune", None), ("noise", None), ("custom", "my_defenses:soft_prune")}
    levels = [c.defense.params["p"] for c in plan.configs if c.defense.name == "custom"]
    assert levels == [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1]
    assert {c.model.target for c in plan.configs} == {"my_models:tiny_cnn"}
    with pytest.raises(ConfigError, match="choose one of .*soft_prune"):
        preflight_check([SEARCHPATH, "defense=soft_prun"])  # the user's presets are options


def test_user_objective_and_prior_and_torchvision_model_run(tmp_path):
    args = [
        *TINY, "attack.objective=sample_plugins:weighted_l2",
        "+attack.priors={sample_plugins.smooth: 0.1}", "model=torchvision",
        "model.target=mnasnet0_5", "attack=idlg",
    ]  # fmt: skip
    preflight_check(args)
    cfg = typed_config(*args)
    assert cfg.attack.priors == {"sample_plugins.smooth": 0.1}
    metrics = experiment.run(cfg, tmp_path / "run")
    assert metrics["status"] == "ok" and metrics["label_acc"] == 1.0  # label recovery works


def test_torchvision_model_fits_the_channels_and_loads_a_checkpoint(tmp_path):
    net = models.build(
        "torchvision", target="resnet18", channels=1, num_classes=10, image_size=16,
        activation=None, init="default", generator=torch.Generator().manual_seed(1),
    )  # fmt: skip
    assert net.conv1.in_channels == 1 and net.fc.out_features == 10
    torch.save(net.state_dict(), tmp_path / "r18.pt")
    base = ["model=torchvision", "model.target=resnet18", "dataset=mnist", "dataset.num_classes=10"]
    cfg = typed_config(*base, "dataset.image_size=16", f"model.checkpoint={tmp_path / 'r18.pt'}")
    loaded = experiment.build_model(cfg).state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in net.state_dict().items())


BAD = [
    ("defense=custom defense.target=sample_plugins:nope", "has no attribute 'nope'"),
    ("defense=custom defense.target=no_such_module:fn", "cannot import no_such_module"),
    ("defense=custom defense.target=sample_plugins:not_a_function", "is not callable (int)"),
    ("defense=custom defense.target=sample_plugins:defense_without_keywords",
     "which its signature (grads) does not accept"),
    ("defense=custom defense.target=sample_plugins:scale +defense.params.fctor=2",
     "unexpected keyword argument 'fctor'"),
    ("defense=custom defense.target=sample_plugins:defense_reshaping",
     "its tensor 0 must have shape (12, 3, 5, 5), not (900,)"),
    ("defense=custom defense.target=sample_plugins:defense_nan", "holds NaN or inf"),
    ("defense=custom defense.target=sample_plugins:defense_in_place", "changed its input"),
    ("defense=custom defense.target=sample_plugins:scale defense.strength=factor",
     "defense.strength='factor' is not allowed: must name a key of defense.params"),
    ("defense=custom defense.target=not-a-name", "must name a Python function as module:function"),
    ("model=custom model.target=sample_plugins:model_two_arguments",
     "called as fn(channels, num_classes, image_size)"),
    ("model=custom model.target=sample_plugins:model_not_a_module", "must return an nn.Module"),
    ("model=custom model.target=sample_plugins:model_wrong_logits", "logits of shape (1, 101)"),
    ("model=custom model.target=sample_plugins:model_nan", "logits on a probe image are not"),
    ("model=custom model.target=sample_plugins:model_without_linear attack=idlg",
     "reads the gradient of its last nn.Linear"),
    ("model=custom model.target=sample_plugins:linear_model model.activation=relu",
     "model.activation='relu' is not allowed: must be null"),
    ("model=lenet model.target=sample_plugins:linear_model", "model.target='sample_plugins:"),
    ("model=torchvision model.target=resnet1", "model.target='resnet1' is not allowed: choose"),
    ("model=torchvision model.target=mobilenet_v3_small",  # no double backward of hardsigmoid
     "the attack cannot differentiate its gradient (RuntimeError: derivative for"),
    ("attack.objective=sample_plugins:objective_per_layer", "returned shape (10,)"),
    ("attack.objective=sample_plugins:objective_detached", "has no gradient"),
    ("attack.objective=sample_plugins:objective_item", "raised RuntimeError: vmap"),
    ("attack.objective=l3", "choose one of cosine, l2 or your own function as module:function"),
    ("'+attack.priors={sample_plugins.prior_two_arguments: 1}'",
     "attack.priors='sample_plugins.prior_two_arguments' is not allowed: it is called as fn("),
]  # fmt: skip


@pytest.mark.parametrize(("line", "expected"), BAD, ids=[b[0].split(":")[-1] for b in BAD])
def test_each_bad_plugin_is_one_line_naming_it(line, expected):
    with pytest.raises(ConfigError) as info:
        preflight_check([*FAST, *shlex.split(line)])
    message = str(info.value)
    assert "\n" not in message and expected in message, message
    assert re.match(r"^(defense|model|attack)\.\w+", message), message


def test_a_bad_plugin_exits_2_before_any_job(run_cli, tmp_path):
    shutil.copy(REPO / "tests" / "sample_plugins.py", tmp_path)  # beside the command
    never = tmp_path / "never"
    start = time.perf_counter()
    proc = run_cli(
        "-m", "defense=custom", "defense.target=sample_plugins:defense_nan", "seed=0,1",
        f"hydra.sweep.dir={never}", "dataset=photos",
    )  # fmt: skip
    elapsed = time.perf_counter() - start
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "defense.target='sample_plugins:defense_nan'" in lines[0]
    assert not never.exists()
    print(f"bad plugin answered in {elapsed:.1f} s")  # `pytest -s` shows it
