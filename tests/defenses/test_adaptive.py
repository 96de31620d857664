"""The adaptive attacker's defense models: zero objective at the truth, naive not."""

import pytest
import torch
from helpers import lenet_client

from gradinv_exp import defenses
from gradinv_exp.attacks.engine import adaptive_objective
from gradinv_exp.attacks.objectives import OBJECTIVES
from gradinv_exp.client import gradient
from gradinv_exp.defenses.chain import ChainConfig
from gradinv_exp.defenses.compression import PruneConfig, QuantizeConfig, TopkConfig
from gradinv_exp.defenses.custom import CustomConfig
from gradinv_exp.defenses.noise import NoiseConfig
from gradinv_exp.defenses.privacy import ClipConfig, DPConfig
from gradinv_exp.defenses.registry import DEFENSES, describe


def grads() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(12, 3, 5, 5, generator=gen), torch.randn(100, generator=gen)]


CASES = [
    PruneConfig(ratio=0.2),
    PruneConfig(ratio=0.9),
    TopkConfig(keep=0.1),
    QuantizeConfig(bits=4),
    QuantizeConfig(bits=2),
    QuantizeConfig(bits=1),
    ChainConfig(steps=[QuantizeConfig(bits=3), PruneConfig(ratio=0.5)]),
]

# Defenses whose schema defaults are not a deterministic config that changes this client's
# gradient, and the one they get below; every other defense runs at its defaults.
CONFIGS = {
    "custom": CustomConfig(target="sample_plugins:drop_small"),
    "chain": ChainConfig(steps=[QuantizeConfig(bits=3), PruneConfig(ratio=0.5)]),
    "clip": ClipConfig(clip=1e-3),  # below the gradient's norm: the clip is active
    "dp": DPConfig(clip=1e-3, noise_multiplier=0.0),  # its deterministic part, the clip
}


def check_models(true: list[torch.Tensor], shared: list[torch.Tensor], cfg, objective: str):
    """The adaptive objective is zero at the truth, the naive one is not, and the adaptive
    one still sees a dummy far from the truth."""
    fn = OBJECTIVES[objective].fn
    adaptive = adaptive_objective(fn, defenses.attacker_model(cfg))
    scale = float(fn([2 * s for s in shared], shared))  # the objective's size at the share
    assert float(adaptive(true, shared)) < 1e-6
    assert float(fn(true, shared)) > 1e-3 * scale
    wrong = [g + g.abs().mean() * torch.linspace(-3, 3, g.numel()).view(g.shape) for g in true]
    assert float(adaptive(wrong, shared)) > 1e-3 * scale


@pytest.mark.parametrize("objective", ["l2", "cosine"])
@pytest.mark.parametrize("cfg", CASES, ids=describe)
def test_adaptive_objective_is_zero_at_the_truth_and_naive_is_not(cfg, objective) -> None:
    true = grads()
    shared = defenses.apply(true, cfg, generator=torch.Generator().manual_seed(1))
    check_models(true, shared, cfg, objective)


@pytest.mark.parametrize("objective", ["l2", "cosine"])
@pytest.mark.parametrize("name", DEFENSES.names())
def test_every_deterministic_defense_is_inverted_exactly(name, objective) -> None:
    """Every registered defense whose output is the same under two random streams and
    differs from the gradient (one image per client: per-example clipping is exact) has
    an adaptive model whose objective is zero at the true image; random ones are not
    required to (noise cannot be inverted)."""
    cfg = CONFIGS.get(name) or DEFENSES[name].schema()
    client = lenet_client(batch=1)
    true = gradient(client)
    shared, again = (
        defenses.apply(true, cfg, generator=torch.Generator().manual_seed(s), client=client)
        for s in (1, 2)
    )
    if not all(torch.equal(a, b) for a, b in zip(shared, again)):
        pytest.skip(f"{describe(cfg)} is random: nothing exact to model")
    if all(torch.equal(a, b) for a, b in zip(shared, true)):
        pytest.skip(f"{describe(cfg)} shares the gradient unchanged")
    check_models(true, shared, cfg, objective)


def test_the_deterministic_defenses_are_the_expected_ones() -> None:
    """The loop above is not vacuous: these defenses are deterministic in it."""
    client = lenet_client(batch=1)
    true = gradient(client)
    deterministic = set()
    for entry in DEFENSES:
        cfg = CONFIGS.get(entry.name) or entry.schema()
        a, b = (
            defenses.apply(true, cfg, generator=torch.Generator().manual_seed(s), client=client)
            for s in (1, 2)
        )
        if all(torch.equal(x, y) for x, y in zip(a, b)):
            deterministic.add(entry.name)
    expected = {"prune", "topk", "quantize", "sign", "clip", "dp", "soteria", "custom", "chain"}
    assert expected <= deterministic


def test_noise_has_nothing_to_invert() -> None:
    cfg = NoiseConfig(sigma=0.1)
    assert defenses.DEFENSES["noise"].model is None
    true = grads()
    assert all(torch.equal(a, b) for a, b in zip(defenses.attacker_model(cfg)(true, true), true))


@pytest.mark.parametrize("cfg", [QuantizeConfig(bits=4), DEFENSES["sign"].schema()], ids=describe)
def test_bin_models_are_differentiable_outside_the_bin(cfg) -> None:
    true = grads()
    shared = defenses.apply(true, cfg, generator=torch.Generator())
    dummy = [(g + 0.5).requires_grad_(True) for g in true]
    loss = adaptive_objective(OBJECTIVES["l2"].fn, defenses.attacker_model(cfg))(dummy, shared)
    assert all(float(g.abs().sum()) > 0 for g in torch.autograd.grad(loss, dummy))


def test_sign_model_is_scale_free() -> None:
    """Sign reveals only directions (and each tensor's mean |g|): a rescaled dummy is the
    same dummy to the adaptive attacker."""
    true = grads()
    cfg = DEFENSES["sign"].schema()
    shared = defenses.apply(true, cfg, generator=torch.Generator())
    objective = adaptive_objective(OBJECTIVES["l2"].fn, defenses.attacker_model(cfg))
    dummy = [g + 0.3 for g in true]
    assert float(objective(dummy, shared)) > 1e-3
    assert float(objective([7.0 * d for d in dummy], shared)) == pytest.approx(
        float(objective(dummy, shared)), rel=1e-5
    )
    assert float(objective([1e-3 * g for g in true], shared)) < 1e-6


def test_clip_model_for_a_batch_is_exact_while_no_example_is_clipped() -> None:
    """B > 1: the client clips each example, the model clips the batch mean; equal when
    no example exceeds the clip norm (documented approximation otherwise)."""
    client = lenet_client(batch=3)
    true = gradient(client)
    cfg = ClipConfig(clip=1e3)
    shared = defenses.apply(true, cfg, generator=torch.Generator(), client=client)
    model = defenses.attacker_model(cfg)(true, shared)
    assert all(torch.allclose(m, s, atol=1e-7) for m, s in zip(model, shared))
