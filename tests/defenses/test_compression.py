"""prune, topk, quantize and sign against their definitions, on hand-made and random
gradients."""

import pytest
import torch
from helpers import gen, random_grads

from gradinv_exp.defenses import compression
from gradinv_exp.defenses.compression import PruneConfig, QuantizeConfig, SignConfig, TopkConfig


def test_prune_exact_on_hand_made_gradient():
    g = [torch.tensor([0.5, -0.1, 0.3, -0.7, 0.05])]
    (out,) = compression.prune(g, PruneConfig(ratio=0.4), generator=gen())
    assert out.tolist() == pytest.approx([0.5, 0.0, 0.3, -0.7, 0.0])


@pytest.mark.parametrize("ratio", [0.1, 0.2, 0.5, 0.9])
def test_prune_layer_zeroes_ratio_per_tensor_and_keeps_signs(ratio):
    grads = random_grads()
    out = compression.prune(grads, PruneConfig(ratio=ratio), generator=gen())
    for g, o in zip(grads, out):
        zero = o == 0
        assert zero.sum().item() == int(ratio * g.numel())
        # the zeroed entries are the smallest ones
        assert g[zero].abs().max() <= g[~zero].abs().min()
        assert torch.equal(o[~zero], g[~zero])  # kept values and their signs unchanged


def test_prune_global_uses_one_threshold_over_all_tensors():
    grads = [torch.tensor([1.0, 2.0, 3.0]), torch.tensor([10.0, -20.0, 30.0])]
    out = compression.prune(grads, PruneConfig(ratio=0.5, scope="global"), generator=gen())
    assert out[0].tolist() == [0.0, 0.0, 0.0]
    assert out[1].tolist() == [10.0, -20.0, 30.0]
    layer = compression.prune(grads, PruneConfig(ratio=0.5, scope="layer"), generator=gen())
    assert layer[0].tolist() == [0.0, 2.0, 3.0]


def test_topk_exact_per_layer_and_global():
    g = [torch.tensor([0.5, -0.1, 0.3, -0.7, 0.05])]
    (out,) = compression.topk(g, TopkConfig(keep=0.4), generator=gen())
    assert out.tolist() == pytest.approx([0.5, 0.0, 0.0, -0.7, 0.0])  # ceil(0.4 * 5) = 2 kept
    grads = [torch.tensor([1.0, 2.0, 3.0]), torch.tensor([10.0, -20.0, 30.0])]
    out = compression.topk(grads, TopkConfig(keep=0.5, scope="global"), generator=gen())
    assert [o.tolist() for o in out] == [[0.0, 0.0, 0.0], [10.0, -20.0, 30.0]]


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
@pytest.mark.parametrize("stochastic", [False, True])
def test_quantize_levels_and_error_bound(bits, stochastic):
    grads = random_grads(1)
    out = compression.quantize(
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
    # scale 1: the original notebook's round(g*15)/15 would zero 0.01, four bits must not all
    g[0][0] = 1.0
    (q, _) = compression.quantize(g, QuantizeConfig(bits=4), generator=gen())
    assert (q != 0).all()  # 0 is not one of the 16 levels on [-1, 1]
    levels = torch.linspace(-1, 1, 16)
    assert torch.isclose(q[1:], levels[(levels - 0.01).abs().argmin()]).all()


def test_quantize_stochastic_is_unbiased():
    g0 = torch.cat([torch.full((200_000,), 0.3), torch.tensor([1.0])])
    (q,) = compression.quantize([g0], QuantizeConfig(bits=2, stochastic=True), generator=gen(3))
    assert q[:-1].mean().item() == pytest.approx(0.3, abs=5e-3)


def test_quantize_zero_tensor_stays_zero():
    (q,) = compression.quantize([torch.zeros(5)], QuantizeConfig(bits=3), generator=gen())
    assert torch.equal(q, torch.zeros(5))


def test_sign_is_sign_times_mean_magnitude_per_tensor():
    grads = [torch.tensor([0.5, -0.1, 0.0, -0.4]), torch.tensor([[2.0, -4.0]])]
    out = compression.sign(grads, SignConfig(), generator=gen())
    assert out[0].tolist() == pytest.approx([0.25, -0.25, 0.0, -0.25])
    assert out[1].tolist() == [[3.0, -3.0]]
