"""The new defenses and their sweep presets through the command line and its checks."""

import json

import pytest
from conftest import FAST, compose_config

from gradinv_exp import preflight
from gradinv_exp.checks import ConfigError
from gradinv_exp.run import to_config

# tinier than FAST: these run 11 attacks; the defenses, not the attack, are under test
TINY = [*FAST, "attack.iterations=2", "attack.snapshot_every=2", "dataset.image_size=16"]


def metrics(folder):
    return json.loads((folder / "metrics.json").read_text())


@pytest.mark.slow
def test_dp_sweep_preset_records_epsilon_falling_with_noise(run_cli, tmp_path):
    sweep = tmp_path / "dp"
    proc = run_cli(*TINY, "+experiment=dp_sweep", f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 0, proc.stderr
    runs = [metrics(sweep / str(i)) for i in range(6)]
    multipliers = [r["config"]["defense.noise_multiplier"] for r in runs]
    assert multipliers == [0.01, 0.03, 0.1, 0.3, 1.0, 3.0]
    eps = [r["epsilon"] for r in runs]
    assert all(e is not None and e > 0 for e in eps) and eps == sorted(eps, reverse=True)
    assert 4 < eps[4] < 5 and runs[4]["delta"] == 1e-5  # noise multiplier 1.0
    assert all(r["status"] == "ok" and r["defense_changed"] == 1.0 for r in runs)


@pytest.mark.slow
def test_topk_sign_soteria_clip_and_chain_run_end_to_end(run_cli, tmp_path):
    sweep = tmp_path / "more"
    proc = run_cli("-m", *TINY, "defense=topk,sign,soteria,clip,chain", f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 0, proc.stderr
    runs = [metrics(sweep / str(i)) for i in range(5)]
    assert [r["defense_steps"] for r in runs] == [
        "topk(keep=0.1, scope=layer)",
        "sign()",
        "soteria(percentile=40.0)",
        "clip(clip=1.0)",
        "prune(ratio=0.2, scope=layer) -> noise(sigma=0.01, distribution=gaussian)",
    ]
    assert all(r["status"] == "ok" and 0 < r["defense_changed"] <= 1 for r in runs)
    assert runs[0]["defense_changed"] >= 0.85  # topk keeps about 10% of the entries


def test_topk_sweep_preset_sweeps_keep():
    cfg = compose_config("+experiment=topk_sweep", hydra=True)
    assert cfg.defense.name == "topk" and str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    assert cfg.hydra.sweeper.params["defense.keep"] == "0.01,0.03,0.1,0.3,1.0"
    preflight.check(["+experiment=topk_sweep"])  # every job's config is valid


def test_chain_steps_from_the_command_line():
    steps = "defense.steps=[{name: prune, ratio: 0.5}, {name: dp, noise_multiplier: 2.0}]"
    cfg = to_config(compose_config("defense=chain", steps))
    assert [s.name for s in cfg.defense.steps] == ["prune", "dp"]
    assert cfg.defense.steps[0].ratio == 0.5 and cfg.defense.steps[1].noise_multiplier == 2.0
    assert cfg.defense.steps[1].clip == 1.0  # unset fields take the step's defaults


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
        preflight.check(args)
    assert expected in str(err.value) and "\n" not in str(err.value)
