"""The typed configs: every group's YAML files against its registry, every schema's range
checks (hypothesis over random values), the rules across groups that run when a Config is
built, the data sets' sizes, flat tables."""

import dataclasses
import math
import typing

import pytest
from helpers import typed_config
from hypothesis import given, settings
from hypothesis import strategies as st

from gradinv_exp import config, data, models
from gradinv_exp.attacks import OPTIMIZERS, AttackConfig
from gradinv_exp.attacks.optimizers import AdamConfig, LBFGSConfig
from gradinv_exp.base.options import ConfigError
from gradinv_exp.config import Config
from gradinv_exp.data import DatasetConfig, check_range
from gradinv_exp.defenses import DEFENSES
from gradinv_exp.defenses.compression import PruneConfig, QuantizeConfig
from gradinv_exp.defenses.noise import NoiseConfig
from gradinv_exp.defenses.registry import NoneConfig
from gradinv_exp.models import ModelConfig
from gradinv_exp.runs import folder, preflight
from gradinv_exp.servers.honest import HonestConfig


def groups() -> dict[str, object]:
    """Valid group configs for building a ``Config`` by hand (its rules span the groups)."""
    return {
        "defense": NoneConfig(),
        "model": ModelConfig(name="lenet"),
        "dataset": DatasetConfig(name="photos"),  # size null: no range check
        "optimizer": LBFGSConfig(),
        "attack": AttackConfig(name="dlg"),
        "server": HonestConfig(),
    }


def make(cls, **values):
    """``cls(**values)``; a ``Config`` gets valid groups first."""
    return cls(**(groups() if cls is Config else {}), **values)


# --- every group's options -------------------------------------------------------------


@pytest.mark.parametrize(
    ("group", "registry"),
    [(g, r) for g, r in config.GROUPS.items() if r is not None and g != "attack"]
    + [("model", models.MODELS), ("dataset", data.DATASETS)],
)  # fmt: skip
def test_each_groups_yaml_files_and_registry_name_the_same_options(group, registry):
    assert preflight.options(group) == registry.names()  # conf/<group>/<name>.yaml
    with pytest.raises(ConfigError) as info:
        registry["bogus"]
    assert str(info.value).startswith(f"{group}.name='bogus' is not allowed: choose one of ")
    assert ", ".join(registry.names()) in str(info.value)


def test_attack_presets_are_one_schema_and_name_themselves():
    for name in preflight.options("attack"):
        server = ["server=imprint"] if name == "imprint" else []  # it reads imprinted bins
        assert typed_config(f"attack={name}", *server).attack.name == name


# --- every schema's ranges -------------------------------------------------------------

SCHEMAS = (
    [("", Config)]
    + [("defense", entry.schema) for entry in DEFENSES]
    + [("model", ModelConfig), ("dataset", DatasetConfig), ("attack", AttackConfig)]
    + [("optimizer", entry.schema) for entry in OPTIMIZERS]
)
NUMERIC = [
    (f"{group}.{f.name}" if group else f.name, cls, f.name, hint)
    for group, cls in SCHEMAS
    for f in dataclasses.fields(cls)
    for hint in [typing.get_type_hints(cls)[f.name]]
    if hint in (int, float)
]
CANDIDATES = {
    int: [-(10**12), -1, 0, 10**12],
    float: [math.nan, math.inf, -math.inf, -1e12, -1.0, 0.0, 1e12],
}


@pytest.mark.parametrize(("key", "cls", "name", "hint"), NUMERIC, ids=[n[0] for n in NUMERIC])
def test_every_numeric_field_of_every_schema_has_a_range_check(key, cls, name, hint):
    messages = []
    for value in CANDIDATES[hint]:
        try:
            make(cls, **{name: value})
        except ConfigError as err:
            messages.append(str(err))
    assert messages, f"{cls.__name__}.{name} accepts all of {CANDIDATES[hint]}"
    assert all(m.startswith(f"{key}=") and "\n" not in m for m in messages)


# (schema, field, key, allowed, not allowed): random values on both sides of each range
RANGES = [
    (PruneConfig, "ratio", "defense.ratio", st.floats(0, 1, exclude_max=True),
     st.floats(1, 1e9) | st.floats(max_value=0, exclude_max=True) | st.just(math.nan)),
    (QuantizeConfig, "bits", "defense.bits", st.integers(1, 24),
     st.integers(max_value=0) | st.integers(min_value=25)),
    (NoiseConfig, "sigma", "defense.sigma", st.floats(0, 1e6),
     st.floats(max_value=0, exclude_max=True) | st.sampled_from([math.inf, math.nan])),
    (LBFGSConfig, "lr", "optimizer.lr", st.floats(1e-12, 1e6),
     st.floats(max_value=0) | st.just(math.nan)),
    (AdamConfig, "lr", "optimizer.lr", st.floats(1e-12, 1e6), st.floats(max_value=0)),
    (LBFGSConfig, "max_iter", "optimizer.max_iter", st.integers(1, 10**6),
     st.integers(max_value=0)),
    (AttackConfig, "iterations", "attack.iterations", st.integers(1, 10**6),
     st.integers(max_value=0)),
    (AttackConfig, "restarts", "attack.restarts", st.integers(1, 10**4),
     st.integers(max_value=0)),
    (DatasetConfig, "batch_size", "dataset.batch_size", st.integers(1, 10**4),
     st.integers(max_value=0)),
    (DatasetConfig, "index", "dataset.index", st.integers(0, 10**9),
     st.integers(max_value=-1)),
    (ModelConfig, "pretrain_steps", "model.pretrain_steps", st.integers(0, 10**6),
     st.integers(max_value=-1)),
    (ModelConfig, "pretrain_lr", "model.pretrain_lr", st.floats(1e-9, 1e3),
     st.floats(max_value=0) | st.sampled_from([math.inf, math.nan])),
    (Config, "trials", "trials", st.integers(1, 10**4), st.integers(max_value=0)),
    (Config, "seed", "seed", st.integers(0, 2**63 - 1),
     st.integers(max_value=-1) | st.integers(min_value=2**63)),
]  # fmt: skip


@pytest.mark.parametrize(
    ("cls", "name", "key", "good", "bad"), RANGES, ids=[r[2] + "/" + r[0].__name__ for r in RANGES]
)
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_values_out_of_range_always_fail_and_in_range_never(cls, name, key, good, bad, data):
    make(cls, **{name: data.draw(good, label="allowed")})  # must not raise
    value = data.draw(bad, label="not allowed")
    with pytest.raises(ConfigError) as info:
        make(cls, **{name: value})
    assert str(info.value).startswith(f"{key}=") and "\n" not in str(info.value)


@settings(max_examples=25, deadline=None)
@given(
    good=st.floats(0, 1e6),
    bad=st.floats(max_value=0, exclude_max=True) | st.sampled_from([math.inf, math.nan]),
)
def test_prior_weights_out_of_range_always_fail_and_in_range_never(good, bad):
    # was IGConfig.tv_weight: a prior's weight is now attack.priors.<name>
    AttackConfig(name="ig", priors={"tv": good})
    with pytest.raises(ConfigError) as info:
        AttackConfig(name="ig", priors={"tv": bad})
    assert str(info.value).startswith("attack.priors.tv=") and "\n" not in str(info.value)


# --- rules across groups, run when a Config is built -----------------------------------


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["attack=ig", "optimizer=lbfgs"],
         "optimizer='lbfgs' is not allowed: attack=ig sets attack.signed=true and "
         "attack.lr_decay=true, which needs optimizer=adam"),
        (["dataset=photos", "dataset.index=10"],
         "dataset.index=10 is not allowed: photos has 10 images, so it must be null or < 10"),
        (["dataset=photos", "dataset.batch_size=9"],
         "dataset.batch_size=9 is not allowed: the run attacks 9 distinct images (trials x "
         "clients x dataset.batch_size) and photos has 10 images and 8 of them are the "
         "clients' (dataset.server_fraction=0.2)"),
        (["dataset=photos", "trials=100000"],
         "trials=100000 is not allowed: the run attacks 100000 distinct images (trials x "
         "clients x dataset.batch_size=1) and photos has 10 images and 8 of them are the "
         "clients' (dataset.server_fraction=0.2), so at most 8 batches"),
        (["dataset=photos", "model.pretrain_steps=1", "model.pretrain_images=3"],
         "model.pretrain_images=3 is not allowed: photos has 10 images and 2 of them are the "
         "server's own (dataset.server_fraction=0.2), so at most 2"),
        (["server=imprint", "attack=imprint", "dataset=lfw", "server.public_images=101"],
         "server.public_images=101 is not allowed: lfw has 200 images and 100 of them are the "
         "server's own (dataset.server_fraction=0.5), so at most 100"),
        (["defense=chain", "defense.steps=[{name: prune}, {name: clip}]", "dataset.batch_size=2"],
         "defense.steps: clip clips per example (dataset.batch_size=2) so it must be the "
         "chain's first step"),
    ],
    ids=["ig-lbfgs", "index", "batch-size", "trials", "pretrain-images", "public-images",
         "chain-order"],
)  # fmt: skip
def test_rules_across_groups_fail_when_the_config_is_built(overrides, expected):
    with pytest.raises(ConfigError) as info:
        typed_config(*overrides)
    assert str(info.value) == expected


def test_pretraining_images_are_only_checked_when_pretraining():
    assert typed_config("dataset=photos", "model.pretrain_images=10").model.pretrain_steps == 0


@pytest.mark.parametrize(
    ("name", "size"),
    [("photos", 10), ("crops", 4096), ("lfw", 200), ("cifar100", 50_000), ("cifar10", 50_000),
     ("mnist", 60_000), ("fashion_mnist", 60_000), ("folder", None)],
)  # fmt: skip
def test_each_dataset_yaml_states_its_size(name, size):
    assert typed_config(f"dataset={name}").dataset.size == size


def test_check_range_uses_the_given_size_else_the_datasets():
    ds = DatasetConfig(name="mine", index=3, size=5)  # 2 of 5 the server's, 3 the clients'
    check_range(ds, 3)
    with pytest.raises(ConfigError, match=r"trials=4 is not allowed: the run attacks 4 distinct"):
        check_range(ds, 4)
    check_range(ds, 4, size=8)  # the size found on disk wins: 4 of 8 are the clients'
    with pytest.raises(ConfigError, match=r"dataset.index=3 is not allowed: mine has 3 images"):
        check_range(ds, 1, size=3)
    check_range(DatasetConfig(name="mine", index=10**6), 10**6)  # size unknown: no check


def test_flat_config_has_one_key_per_field():
    cfg = typed_config("defense=prune", "defense.ratio=0.3", "+tags.level=2")
    flat = folder.flat(cfg)
    assert flat["defense.name"] == "prune" and flat["defense.ratio"] == 0.3
    assert flat["attack.name"] == "dlg" and flat["optimizer.name"] == "lbfgs"
    assert flat["tags.level"] == 2 and flat["dataset.size"] == 50_000
    assert all("." in key or not isinstance(value, dict) for key, value in flat.items())


PRESET_JOBS = {  # conf/experiment/<name>.yaml -> the number of jobs its sweep runs
    "all_defenses": 21,
    "defense_audit": 72,
    "dlg_defenses": 16,
    "dp_sweep": 6,
    "fedavg_sweep": 16,
    "idlg_labels": 2,
    "noise_sweep": 10,
    "prune_sweep": 9,
    "quantize_sweep": 16,
    "seed_defenses": 4,
    "topk_sweep": 5,
}


def test_every_preset_passes_the_command_lines_checks_with_its_number_of_jobs(tmp_path):
    """A preset that the command line would refuse (a bad value, an image range beyond the
    data, a model that cannot take the images) fails here, not in a user's sweep."""
    from helpers import preflight_check

    names = sorted(p.stem for p in (config.CONF_DIR / "experiment").glob("*.yaml"))
    assert names == sorted(PRESET_JOBS)
    for name in names:
        plan = preflight_check([f"+experiment={name}", f"hydra.sweep.dir={tmp_path / name}"])
        assert plan is not None and plan.multirun, name
        assert len(plan.jobs) == PRESET_JOBS[name], name
