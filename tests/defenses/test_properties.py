"""Property tests (hypothesis): defenses over random gradients. Example counts are modest
so the suite stays fast (config validation over random values: tests/test_config.py).
The contract every defense keeps (input untouched, shapes kept, seeded) runs over every
registered defense, so a new one is checked without being named here."""

import math

import numpy as np
import pytest
import torch
from helpers import lenet_client, typed_config
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gradinv_exp import client, defenses
from gradinv_exp.defenses import DEFENSES
from gradinv_exp.defenses.compression import PruneConfig, QuantizeConfig
from gradinv_exp.defenses.noise import NoiseConfig

FAST = settings(max_examples=40, deadline=None)

tensors = hnp.arrays(
    np.float32,
    hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=6),
    elements=st.floats(-1e3, 1e3, width=32, allow_subnormal=False),
).map(torch.from_numpy)
gradients = st.lists(tensors, min_size=1, max_size=3)
seeds = st.integers(0, 2**32)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def applied(grads, cfg, seed=0):
    """The defense's output, after checking it kept shapes and did not touch its input."""
    before = [g.clone() for g in grads]
    out = defenses.apply(grads, cfg, generator=gen(seed))
    assert all(torch.equal(g, b) for g, b in zip(grads, before))  # no mutation
    assert [o.shape for o in out] == [g.shape for g in grads]
    return out


# what a defense's preset leaves to the user (custom: the user's own function)
REQUIRED = {"custom": ["defense.target=sample_plugins:scale"]}


@pytest.mark.parametrize("name", DEFENSES.names())
@pytest.mark.parametrize("seed", [0, 7])
def test_every_registered_defense_keeps_the_contract(name, seed):
    """Its preset (conf/defense/<name>.yaml) on a real client's gradient, B = 3 so that
    per-example defenses clip examples: the input is not mutated, every shape is kept,
    and the same seed gives the same share."""
    cfg = typed_config(f"defense={name}", *REQUIRED.get(name, [])).defense
    who = lenet_client(batch=3, seed=seed)
    grads = client.gradient(who)
    before = [g.clone() for g in grads]
    first = defenses.apply(grads, cfg, generator=gen(seed), client=who)
    again = defenses.apply(grads, cfg, generator=gen(seed), client=who)
    assert all(torch.equal(g, b) for g, b in zip(grads, before)), "mutated its input"
    assert [o.shape for o in first] == [g.shape for g in grads]
    assert all(torch.equal(a, b) for a, b in zip(first, again)), "not seeded"
    assert all(torch.isfinite(o).all() for o in first)


@FAST
@given(gradients, st.floats(0, 1, exclude_max=True), st.sampled_from(["layer", "global"]))
def test_prune_keeps_signs_and_zeroes_at_most_ratio(grads, ratio, scope):
    out = applied(grads, PruneConfig(ratio=ratio, scope=scope))
    groups = [(grads, out)] if scope == "global" else [([g], [o]) for g, o in zip(grads, out)]
    for gs, os_ in groups:
        g, o = torch.cat([x.flatten() for x in gs]), torch.cat([x.flatten() for x in os_])
        kept = o != 0
        assert torch.equal(o[kept], g[kept])  # kept values and signs unchanged
        zeroed = ~kept & (g != 0)
        assert zeroed.sum() <= math.floor(ratio * g.numel())
        if zeroed.any() and kept.any():
            assert g[zeroed].abs().max() <= g[kept].abs().min()  # the smallest went


@FAST
@given(gradients, st.integers(1, 12), st.booleans(), seeds)
def test_quantize_levels_and_error_bound(grads, bits, stochastic, seed):
    out = applied(grads, QuantizeConfig(bits=bits, stochastic=stochastic), seed)
    for g, q in zip(grads, out):
        scale = g.abs().max().item()
        assert q.unique().numel() <= 2**bits
        step = 2 * scale / (2**bits - 1)
        bound = (step if stochastic else step / 2) + 1e-5 * scale
        assert (q - g).abs().max().item() <= bound
        assert q.abs().max().item() <= scale * (1 + 1e-5)


@FAST
@given(gradients, st.floats(0, 10), st.sampled_from(["gaussian", "laplace"]), seeds)
def test_noise_is_seeded_and_zero_sigma_is_identity(grads, sigma, distribution, seed):
    cfg = NoiseConfig(sigma=sigma, distribution=distribution)
    a, b = applied(grads, cfg, seed), applied(grads, cfg, seed)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert all(torch.isfinite(x).all() for x in a)
    if sigma == 0:
        assert all(torch.equal(x, g) for x, g in zip(a, grads))
