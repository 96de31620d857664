"""Additive noise: the asked standard deviation, seeded, Gaussian or Laplace."""

import pytest
import torch
from helpers import gen

from gradinv_exp.defenses import noise
from gradinv_exp.defenses.noise import NoiseConfig


@pytest.mark.parametrize("distribution", ["gaussian", "laplace"])
def test_noise_has_the_asked_std_and_is_seeded(distribution):
    grads = [torch.zeros(400_000), torch.ones(10)]
    cfg = NoiseConfig(sigma=0.01, distribution=distribution)
    a = noise.noise(grads, cfg, generator=gen(7))
    b = noise.noise(grads, cfg, generator=gen(7))
    c = noise.noise(grads, cfg, generator=gen(8))
    assert a[0].std().item() == pytest.approx(0.01, rel=0.01)
    assert a[0].mean().item() == pytest.approx(0.0, abs=1e-4)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0])
    # Laplace has heavier tails than a Gaussian (kurtosis 6 vs 3)
    z = a[0] / a[0].std()
    kurtosis = (z**4).mean().item()
    assert kurtosis == pytest.approx(6.0 if distribution == "laplace" else 3.0, rel=0.1)
