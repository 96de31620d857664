"""Property tests (hypothesis): defenses over random gradients, config validation over
random values. Example counts are modest so the suite stays fast."""

import dataclasses
import math
import typing

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gradinv_exp import config, defenses
from gradinv_exp.checks import ConfigError
from gradinv_exp.defense_config import NoiseConfig, PruneConfig, QuantizeConfig

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


# --- config validation -----------------------------------------------------------------

SCHEMAS = [("", config.Config)] + [
    (group, cls) for group, schemas in config.SCHEMAS.items() for cls in schemas.values()
]
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
            cls(**{name: value})
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
    (config.LBFGSConfig, "lr", "optimizer.lr", st.floats(1e-12, 1e6),
     st.floats(max_value=0) | st.just(math.nan)),
    (config.AdamConfig, "lr", "optimizer.lr", st.floats(1e-12, 1e6), st.floats(max_value=0)),
    (config.LBFGSConfig, "max_iter", "optimizer.max_iter", st.integers(1, 10**6),
     st.integers(max_value=0)),
    (config.DLGConfig, "iterations", "attack.iterations", st.integers(1, 10**6),
     st.integers(max_value=0)),
    (config.DatasetConfig, "batch_size", "dataset.batch_size", st.integers(1, 10**4),
     st.integers(max_value=0)),
    (config.DatasetConfig, "index", "dataset.index", st.integers(0, 10**9),
     st.integers(max_value=-1)),
    (config.ModelConfig, "pretrain_steps", "model.pretrain_steps", st.integers(0, 10**6),
     st.integers(max_value=-1)),
    (config.ModelConfig, "pretrain_lr", "model.pretrain_lr", st.floats(1e-9, 1e3),
     st.floats(max_value=0) | st.sampled_from([math.inf, math.nan])),
    (config.Config, "trials", "trials", st.integers(1, 10**4), st.integers(max_value=0)),
    (config.Config, "seed", "seed", st.integers(0, 2**63 - 1),
     st.integers(max_value=-1) | st.integers(min_value=2**63)),
]  # fmt: skip


@pytest.mark.parametrize(
    ("cls", "name", "key", "good", "bad"), RANGES, ids=[r[2] + "/" + r[0].__name__ for r in RANGES]
)
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_values_out_of_range_always_fail_and_in_range_never(cls, name, key, good, bad, data):
    cls(**{name: data.draw(good, label="allowed")})  # must not raise
    value = data.draw(bad, label="not allowed")
    with pytest.raises(ConfigError) as info:
        cls(**{name: value})
    assert str(info.value).startswith(f"{key}=") and "\n" not in str(info.value)
