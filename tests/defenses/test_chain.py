"""chain: steps applied in order, typed and checked (also from the command line), and the
rule that a per-example step comes first."""

import pytest
import torch
from helpers import gen, typed_config

from gradinv_exp import defenses
from gradinv_exp.base.options import ConfigError
from gradinv_exp.defenses import chain
from gradinv_exp.defenses.chain import ChainConfig, defense_from
from gradinv_exp.defenses.compression import PruneConfig
from gradinv_exp.defenses.noise import NoiseConfig


def test_chain_applies_steps_in_order():
    grads = [torch.tensor([0.5, -0.1, 0.3, -0.7, 0.05])]
    steps = [{"name": "prune", "ratio": 0.4}, {"name": "sign"}]
    out = chain.chain(grads, ChainConfig(steps=steps), generator=gen())
    assert out[0].tolist() == pytest.approx([0.3, 0.0, 0.3, -0.3, 0.0])  # mean|.| after prune
    reverse = chain.chain(grads, ChainConfig(steps=steps[::-1]), generator=gen())
    assert reverse[0].tolist() == pytest.approx([0.33, -0.33, 0.33, -0.33, 0.33])  # all tie
    assert defenses.report(ChainConfig(steps=steps))["defense_steps"] == (
        "prune(ratio=0.4, scope=layer) -> sign()"
    )


def test_chain_steps_are_typed_and_checked():
    cfg = ChainConfig(steps=[{"name": "prune"}, {"name": "noise", "sigma": 0.5}])
    assert cfg.steps == [PruneConfig(), NoiseConfig(sigma=0.5)]
    for steps, message in [
        ([{"name": "prune", "ratio": 2.0}], "defense.steps[0]: defense.ratio=2.0"),
        ([{"name": "bogus"}], "defense.steps[0].name='bogus' is not allowed"),
        ([{"name": "noise", "sigmaa": 1}], "defense.steps[0]: Key 'sigmaa' not in"),
        ([{"name": "chain"}], "a step cannot itself be a chain"),
    ]:
        with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
            ChainConfig(steps=steps)
    late_dp = ChainConfig(steps=[{"name": "prune"}, {"name": "dp"}])
    defenses.check_order(late_dp, batch_size=1)
    with pytest.raises(ConfigError, match="must be the chain's first step"):
        defenses.check_order(late_dp, batch_size=2)


def test_defense_from_keeps_typed_configs_and_fills_defaults():
    typed = NoiseConfig(sigma=0.2)
    assert defense_from(typed, "x") is typed
    assert defense_from({"name": "prune", "scope": "global"}, "x") == PruneConfig(scope="global")


def test_chain_steps_from_the_command_line():
    steps = "defense.steps=[{name: prune, ratio: 0.5}, {name: dp, noise_multiplier: 2.0}]"
    cfg = typed_config("defense=chain", steps)
    assert [s.name for s in cfg.defense.steps] == ["prune", "dp"]
    assert cfg.defense.steps[0].ratio == 0.5 and cfg.defense.steps[1].noise_multiplier == 2.0
    assert cfg.defense.steps[1].clip == 1.0  # unset fields take the step's defaults
