"""clip and dp against their definitions (per example with a client), and DP's epsilon:
computed, composed over a chain's steps, recorded by a sweep."""

import json
import math

import pytest
import torch
from helpers import FAST, gen, lenet_client
from scipy.stats import norm

from gradinv_exp import defenses
from gradinv_exp.client import Client, gradient, per_example_gradients
from gradinv_exp.defenses import privacy
from gradinv_exp.defenses.chain import ChainConfig
from gradinv_exp.defenses.compression import TopkConfig
from gradinv_exp.defenses.privacy import ClipConfig, DPConfig

# tinier than FAST: the dp sweep runs 6 attacks; the defense, not the attack, is under test
TINY = [*FAST, "attack.iterations=2", "attack.snapshot_every=2", "dataset.image_size=16"]


def flat(grads) -> torch.Tensor:
    return torch.cat([g.flatten() for g in grads])


def test_clip_scales_to_the_norm_over_all_layers_and_keeps_small_gradients():
    grads = [torch.tensor([3.0]), torch.tensor([[4.0]])]  # norm 5
    out = privacy.clip(grads, ClipConfig(clip=1.0), generator=gen())
    assert out[0].item() == pytest.approx(0.6) and out[1].item() == pytest.approx(0.8)
    same = privacy.clip(grads, ClipConfig(clip=10.0), generator=gen())
    assert all(torch.equal(a, b) for a, b in zip(same, grads))


def test_per_example_gradients_average_to_the_batch_gradient():
    client = lenet_client()
    batch = gradient(client)
    per_example = per_example_gradients(client)
    assert all(torch.allclose(p.mean(0), b, atol=1e-6) for p, b in zip(per_example, batch))


def test_clip_with_a_client_clips_each_example_then_averages():
    client = lenet_client()
    batch = gradient(client)
    expected = []
    for i in range(client.batch_size):
        one = Client(client.model, client.images[i : i + 1], client.targets[i : i + 1])
        g = gradient(one)
        expected.append(flat(g) * min(1.0, 0.5 / flat(g).norm().item()))
    out = privacy.clip(batch, ClipConfig(clip=0.5), generator=gen(), client=client)
    assert torch.allclose(flat(out), torch.stack(expected).mean(0), atol=1e-6)


def test_dp_adds_noise_of_std_multiplier_times_clip_over_batch():
    client = lenet_client(batch=2)
    batch = gradient(client)
    clipped = privacy.clip(batch, ClipConfig(clip=0.5), generator=gen(), client=client)
    cfg = DPConfig(clip=0.5, noise_multiplier=0.8)
    noisy = privacy.dp(batch, cfg, generator=gen(1), client=client)
    diff = flat(noisy) - flat(clipped)
    assert diff.numel() > 5000
    assert diff.std().item() == pytest.approx(0.8 * 0.5 / 2, rel=0.05)
    silent = privacy.dp(batch, DPConfig(clip=0.5, noise_multiplier=0.0), generator=gen(1))
    assert flat(silent).norm().item() == pytest.approx(0.5)  # B = 1 without a client


def test_epsilon_decreases_with_noise_and_matches_the_analytic_gaussian_mechanism():
    multipliers = [0.5, 1.0, 2.0, 4.0]
    eps = [privacy.epsilon([z], 1e-5, "prv")[0] for z in multipliers]
    assert all(math.isfinite(e) for e in eps) and eps == sorted(eps, reverse=True)
    assert eps[1] < privacy.epsilon([1.0], 1e-5, "rdp")[0]  # RDP is the looser bound

    def delta(e: float, sigma: float) -> float:  # Balle & Wang 2018, sensitivity 1
        return norm.cdf(0.5 / sigma - e * sigma) - math.exp(e) * norm.cdf(-0.5 / sigma - e * sigma)

    for z, e in zip(multipliers, eps):  # an upper bound on the exact epsilon, and close to it
        assert delta(e, z) <= 1e-5 < delta(0.97 * e, z)
    assert privacy.epsilon([0.0], 1e-5, "prv")[0] == math.inf
    tiny = privacy.epsilon([0.01], 1e-5, "prv")  # PRV fails numerically; RDP steps in
    assert tiny[1] == "rdp" and math.isfinite(tiny[0]) and tiny[0] > eps[0]


def test_report_records_epsilon_and_composes_dp_steps_of_a_chain():
    one = defenses.report(DPConfig(noise_multiplier=1.0))
    assert one["defense_steps"] == "dp(clip=1.0, noise_multiplier=1.0, delta=1e-05, accountant=prv)"
    assert one["delta"] == 1e-5 and 4 < one["epsilon"] < 5
    two = defenses.report(ChainConfig(steps=[{"name": "dp"}, {"name": "dp"}]))
    assert two["epsilon"] > one["epsilon"]
    assert "epsilon" not in defenses.report(TopkConfig())


def test_chained_dp_steps_report_the_smallest_delta_and_the_first_steps_accountant():
    """Two Gaussian releases of noise multipliers 1 and 2 compose to one of multiplier
    1/sqrt(1 + 1/4) (RDP adds alpha / (2 z^2) per release): the chain's epsilon is that one's."""
    first = {"name": "dp", "noise_multiplier": 1.0, "delta": 1e-5, "accountant": "rdp"}
    second = {"name": "dp", "noise_multiplier": 2.0, "delta": 1e-6, "accountant": "prv"}
    report = defenses.report(ChainConfig(steps=[first, {"name": "prune"}, second]))
    assert report["delta"] == 1e-6 and report["accountant"] == "rdp"
    z = 1 / math.sqrt(1.25)
    assert report["epsilon"] == pytest.approx(privacy.epsilon([z], 1e-6, "rdp")[0], rel=1e-9)
    assert report["epsilon"] > privacy.epsilon([1.0], 1e-6, "rdp")[0]  # both releases count
    reverse = defenses.report(ChainConfig(steps=[second, first]))
    assert reverse["delta"] == 1e-6 and reverse["accountant"] == "prv"
    assert reverse["epsilon"] == pytest.approx(privacy.epsilon([z], 1e-6, "prv")[0], rel=0.01)
    assert reverse["epsilon"] < report["epsilon"]  # PRV is the tighter accountant


@pytest.mark.slow
def test_dp_sweep_preset_records_epsilon_falling_with_noise(run_cli, tmp_path):
    sweep = tmp_path / "dp"
    proc = run_cli(*TINY, "+experiment=dp_sweep", f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 0, proc.stderr
    runs = [json.loads((sweep / str(i) / "metrics.json").read_text()) for i in range(6)]
    multipliers = [r["config"]["defense.noise_multiplier"] for r in runs]
    assert multipliers == [0.01, 0.03, 0.1, 0.3, 1.0, 3.0]
    eps = [r["epsilon"] for r in runs]
    assert all(e is not None and e > 0 for e in eps) and eps == sorted(eps, reverse=True)
    assert 4 < eps[4] < 5 and runs[4]["delta"] == 1e-5  # noise multiplier 1.0
    assert all(r["status"] == "ok" and r["defense_changed"] == 1.0 for r in runs)
