"""What every defense shares: the registry and its facts, apply (never mutates), cost,
and every defense run end to end through the command line."""

import dataclasses
import json
import math

import pytest
import torch
from helpers import FAST, gen, lenet_client, random_grads

from gradinv_exp import defenses
from gradinv_exp.client import gradient
from gradinv_exp.defenses import DEFENSES, noise
from gradinv_exp.defenses.chain import ChainConfig
from gradinv_exp.defenses.compression import PruneConfig, QuantizeConfig, SignConfig, TopkConfig
from gradinv_exp.defenses.noise import NoiseConfig
from gradinv_exp.defenses.privacy import ClipConfig, DPConfig
from gradinv_exp.defenses.registry import Defense, NoneConfig
from gradinv_exp.defenses.soteria import SoteriaConfig

# tinier than FAST: these run 5 attacks; the defenses, not the attack, are under test
TINY = [*FAST, "attack.iterations=2", "attack.snapshot_every=2", "dataset.image_size=16"]


def test_a_defense_is_registered_once():
    # conf/defense/*.yaml against the registry, and unknown names: tests/test_config.py
    with pytest.raises(ValueError, match="already registered"):
        DEFENSES.add(Defense("noise", noise.noise, NoiseConfig))


def test_every_defense_names_a_real_strength_field():
    for entry in DEFENSES:
        key = defenses.axis({"defense.name": entry.name}).key
        assert key is None or key in {f.name for f in dataclasses.fields(entry.schema)}, key
    prune = defenses.axis({"defense.name": "prune", "defense.ratio": 0.3})
    assert prune == defenses.Axis("prune", "ratio", 0.3, log_scale=False)
    assert defenses.axis({"defense.name": "noise"}).log_scale
    assert defenses.axis({"defense.name": "unknown"}) == defenses.Axis("unknown")


@pytest.mark.parametrize(
    "cfg",
    [PruneConfig(ratio=0.3), QuantizeConfig(bits=3, stochastic=True), NoiseConfig(sigma=0.1)],
    ids=lambda c: c.name,
)
def test_defenses_never_mutate_their_input(cfg):
    grads = random_grads(2)
    before = [g.clone() for g in grads]
    out = defenses.apply(grads, cfg, generator=gen())
    assert all(torch.equal(g, b) for g, b in zip(grads, before))
    assert all(o.data_ptr() != g.data_ptr() for o, g in zip(out, grads))
    # applying twice from the same input gives the same result: nothing stacks
    again = defenses.apply(grads, cfg, generator=gen())
    assert all(torch.equal(x, y) for x, y in zip(out, again))


def test_cost_of_none_and_of_noise():
    grads = random_grads(3)
    same = defenses.cost(grads, defenses.apply(grads, NoneConfig(), generator=gen()))
    assert same == {
        "defense_rel_error": 0.0,
        "defense_cosine": pytest.approx(1.0),
        "defense_changed": 0.0,
    }
    noisy = noise.noise(grads, NoiseConfig(sigma=1.0), generator=gen())
    n = sum(g.numel() for g in grads)
    norm = math.sqrt(sum((g**2).sum().item() for g in grads))
    cost = defenses.cost(grads, noisy)
    assert cost["defense_rel_error"] == pytest.approx(math.sqrt(n) / norm, rel=0.02)
    assert cost["defense_changed"] == 1.0


@pytest.mark.parametrize(
    "cfg",
    [
        DPConfig(), ClipConfig(clip=0.1), TopkConfig(keep=0.2), SignConfig(),
        SoteriaConfig(percentile=50), ChainConfig(steps=[{"name": "dp"}, {"name": "topk"}]),
    ],
    ids=lambda c: c.name,
)  # fmt: skip
def test_new_defenses_never_mutate_and_report_their_cost(cfg):
    client = lenet_client(batch=2)
    grads = gradient(client)
    before = [g.clone() for g in grads]
    params = [p.detach().clone() for p in client.model.parameters()]
    out = defenses.apply(grads, cfg, generator=gen(), client=client)
    again = defenses.apply(grads, cfg, generator=gen(), client=client)
    assert all(torch.equal(g, b) for g, b in zip(grads, before))
    assert all(torch.equal(p, q) for p, q in zip(client.model.parameters(), params))
    assert all(torch.equal(x, y) for x, y in zip(out, again))
    assert [o.shape for o in out] == [g.shape for g in grads]
    cost = defenses.cost(grads, out)
    assert 0 < cost["defense_changed"] <= 1 and cost["defense_rel_error"] > 0
    if isinstance(cfg, TopkConfig):  # layer scope keeps ceil(0.2 n) per tensor
        for g, o in zip(grads, out):
            assert int((o != 0).sum()) <= math.ceil(0.2 * g.numel())
            assert torch.equal(o[o != 0], g[o != 0])


@pytest.mark.slow
def test_topk_sign_soteria_clip_and_chain_run_end_to_end(run_cli, tmp_path):
    sweep = tmp_path / "more"
    proc = run_cli("-m", *TINY, "defense=topk,sign,soteria,clip,chain", f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 0, proc.stderr
    runs = [json.loads((sweep / str(i) / "metrics.json").read_text()) for i in range(5)]
    assert [r["defense_steps"] for r in runs] == [
        "topk(keep=0.1, scope=layer)",
        "sign()",
        "soteria(percentile=40.0)",
        "clip(clip=1.0)",
        "prune(ratio=0.2, scope=layer) -> noise(sigma=0.01, distribution=gaussian)",
    ]
    assert all(r["status"] == "ok" and 0 < r["defense_changed"] <= 1 for r in runs)
    assert runs[0]["defense_changed"] >= 0.85  # topk keeps about 10% of the entries
