"""Each defense against its definition in DESIGN.md, on hand-made and random gradients."""

import math

import pytest
import torch

from gradinv_exp import defenses
from gradinv_exp.defense_config import NoiseConfig, NoneDefenseConfig, PruneConfig, QuantizeConfig


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_grads(seed: int = 0) -> list[torch.Tensor]:
    g = gen(seed)
    return [
        torch.randn(12, 3, 5, 5, generator=g),
        torch.randn(12, generator=g),
        torch.randn(100, 768, generator=g),
    ]


def test_prune_exact_on_hand_made_gradient():
    g = [torch.tensor([0.5, -0.1, 0.3, -0.7, 0.05])]
    (out,) = defenses.prune(g, PruneConfig(ratio=0.4), generator=gen())
    assert out.tolist() == pytest.approx([0.5, 0.0, 0.3, -0.7, 0.0])


@pytest.mark.parametrize("ratio", [0.1, 0.2, 0.5, 0.9])
def test_prune_layer_zeroes_ratio_per_tensor_and_keeps_signs(ratio):
    grads = random_grads()
    out = defenses.prune(grads, PruneConfig(ratio=ratio), generator=gen())
    for g, o in zip(grads, out):
        zero = o == 0
        assert zero.sum().item() == int(ratio * g.numel())
        # the zeroed entries are the smallest ones
        assert g[zero].abs().max() <= g[~zero].abs().min()
        assert torch.equal(o[~zero], g[~zero])  # kept values and their signs unchanged


def test_prune_global_uses_one_threshold_over_all_tensors():
    grads = [torch.tensor([1.0, 2.0, 3.0]), torch.tensor([10.0, -20.0, 30.0])]
    out = defenses.prune(grads, PruneConfig(ratio=0.5, scope="global"), generator=gen())
    assert out[0].tolist() == [0.0, 0.0, 0.0]
    assert out[1].tolist() == [10.0, -20.0, 30.0]
    layer = defenses.prune(grads, PruneConfig(ratio=0.5, scope="layer"), generator=gen())
    assert layer[0].tolist() == [0.0, 2.0, 3.0]


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
@pytest.mark.parametrize("stochastic", [False, True])
def test_quantize_levels_and_error_bound(bits, stochastic):
    grads = random_grads(1)
    out = defenses.quantize(
        grads, QuantizeConfig(bits=bits, stochastic=stochastic), generator=gen()
    )
    for g, q in zip(grads, out):
        scale = g.abs().max()
        step = 2 * scale / (2**bits - 1)
        assert q.unique().numel() <= 2**bits
        bound = step if stochastic else step / 2
        assert (q - g).abs().max() <= bound * (1 + 1e-5)
        assert q.abs().max() <= scale * (1 + 1e-6)


def test_quantize_is_not_the_seeds_round_g_times_15():
    g = [torch.full((1000,), 0.01), torch.tensor([1.0])]
    g[0][0] = 1.0  # scale 1: the seed's round(g*15)/15 would zero 0.01, four bits must not all
    (q, _) = defenses.quantize(g, QuantizeConfig(bits=4), generator=gen())
    assert (q != 0).all()  # 0 is not one of the 16 levels on [-1, 1]
    levels = torch.linspace(-1, 1, 16)
    assert torch.isclose(q[1:], levels[(levels - 0.01).abs().argmin()]).all()


def test_quantize_stochastic_is_unbiased():
    g0 = torch.cat([torch.full((200_000,), 0.3), torch.tensor([1.0])])
    (q,) = defenses.quantize([g0], QuantizeConfig(bits=2, stochastic=True), generator=gen(3))
    assert q[:-1].mean().item() == pytest.approx(0.3, abs=5e-3)


def test_quantize_zero_tensor_stays_zero():
    (q,) = defenses.quantize([torch.zeros(5)], QuantizeConfig(bits=3), generator=gen())
    assert torch.equal(q, torch.zeros(5))


@pytest.mark.parametrize("distribution", ["gaussian", "laplace"])
def test_noise_has_the_asked_std_and_is_seeded(distribution):
    grads = [torch.zeros(400_000), torch.ones(10)]
    cfg = NoiseConfig(sigma=0.01, distribution=distribution)
    a = defenses.noise(grads, cfg, generator=gen(7))
    b = defenses.noise(grads, cfg, generator=gen(7))
    c = defenses.noise(grads, cfg, generator=gen(8))
    assert a[0].std().item() == pytest.approx(0.01, rel=0.01)
    assert a[0].mean().item() == pytest.approx(0.0, abs=1e-4)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0])
    # Laplace has heavier tails than a Gaussian (kurtosis 6 vs 3)
    z = a[0] / a[0].std()
    kurtosis = (z**4).mean().item()
    assert kurtosis == pytest.approx(6.0 if distribution == "laplace" else 3.0, rel=0.1)


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
    same = defenses.cost(grads, defenses.apply(grads, NoneDefenseConfig(), generator=gen()))
    assert same == {
        "defense_rel_error": 0.0,
        "defense_cosine": pytest.approx(1.0),
        "defense_changed": 0.0,
    }
    noisy = defenses.noise(grads, NoiseConfig(sigma=1.0), generator=gen())
    n = sum(g.numel() for g in grads)
    norm = math.sqrt(sum((g**2).sum().item() for g in grads))
    cost = defenses.cost(grads, noisy)
    assert cost["defense_rel_error"] == pytest.approx(math.sqrt(n) / norm, rel=0.02)
    assert cost["defense_changed"] == 1.0
