"""The adaptive attacker's defense models: zero objective at the truth, naive not."""

import pytest
import torch

from gradinv_exp import defenses
from gradinv_exp.attacks.engine import adaptive_objective
from gradinv_exp.attacks.objectives import OBJECTIVES
from gradinv_exp.defenses.chain import ChainConfig
from gradinv_exp.defenses.compression import PruneConfig, QuantizeConfig, TopkConfig
from gradinv_exp.defenses.noise import NoiseConfig
from gradinv_exp.defenses.registry import describe


def grads() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(12, 3, 5, 5, generator=gen), torch.randn(100, generator=gen)]


CASES = [
    PruneConfig(ratio=0.2),
    PruneConfig(ratio=0.9),
    TopkConfig(keep=0.1),
    QuantizeConfig(bits=4),
    QuantizeConfig(bits=2),
    ChainConfig(steps=[QuantizeConfig(bits=3), PruneConfig(ratio=0.5)]),
]


@pytest.mark.parametrize("objective", ["l2", "cosine"])
@pytest.mark.parametrize("cfg", CASES, ids=describe)
def test_adaptive_objective_is_zero_at_the_truth_and_naive_is_not(cfg, objective) -> None:
    true = grads()
    shared = defenses.apply(true, cfg, generator=torch.Generator().manual_seed(1))
    fn = OBJECTIVES[objective].fn
    adaptive = adaptive_objective(fn, defenses.attacker_model(cfg))
    assert float(adaptive(true, shared)) < 1e-6
    assert float(fn(true, shared)) > 1e-3
    wrong = [g + 1.0 for g in true]  # far from the truth: the adaptive objective sees it
    assert float(adaptive(wrong, shared)) > 1e-3


def test_noise_has_nothing_to_invert() -> None:
    cfg = NoiseConfig(sigma=0.1)
    assert defenses.DEFENSES["noise"].model is None
    true = grads()
    assert all(torch.equal(a, b) for a, b in zip(defenses.attacker_model(cfg)(true, true), true))


def test_quantize_model_is_differentiable_outside_the_bin() -> None:
    true = grads()
    cfg = QuantizeConfig(bits=4)
    shared = defenses.apply(true, cfg, generator=torch.Generator())
    dummy = [(g + 0.5).requires_grad_(True) for g in true]
    loss = adaptive_objective(OBJECTIVES["l2"].fn, defenses.attacker_model(cfg))(dummy, shared)
    assert all(float(g.abs().sum()) > 0 for g in torch.autograd.grad(loss, dummy))
