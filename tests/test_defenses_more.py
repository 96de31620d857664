"""dp, clip, topk, sign, soteria and chain against their definitions; DP's epsilon."""

import math

import pytest
import torch
from scipy.stats import norm
from torch import nn

from gradinv_exp import defenses, privacy, soteria
from gradinv_exp.attacks import gradient
from gradinv_exp.checks import ConfigError
from gradinv_exp.clients import Client, per_example_gradients
from gradinv_exp.defense_config import (
    ChainConfig,
    ClipConfig,
    DPConfig,
    PruneConfig,
    SignConfig,
    SoteriaConfig,
    TopkConfig,
)
from gradinv_exp.models import build


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def lenet_client(batch: int = 3, seed: int = 0) -> Client:
    model = build(
        "lenet", channels=1, num_classes=4, image_size=8, activation="sigmoid",
        init_range=0.5, generator=gen(seed),
    )  # fmt: skip
    images = torch.rand(batch, 1, 8, 8, generator=gen(seed + 1))
    targets = nn.functional.one_hot(torch.arange(batch) % 4, 4).float()
    return Client(model, images, targets)


def flat(grads) -> torch.Tensor:
    return torch.cat([g.flatten() for g in grads])


def test_topk_exact_per_layer_and_global():
    g = [torch.tensor([0.5, -0.1, 0.3, -0.7, 0.05])]
    (out,) = defenses.topk(g, TopkConfig(keep=0.4), generator=gen())
    assert out.tolist() == pytest.approx([0.5, 0.0, 0.0, -0.7, 0.0])  # ceil(0.4 * 5) = 2 kept
    grads = [torch.tensor([1.0, 2.0, 3.0]), torch.tensor([10.0, -20.0, 30.0])]
    out = defenses.topk(grads, TopkConfig(keep=0.5, scope="global"), generator=gen())
    assert [o.tolist() for o in out] == [[0.0, 0.0, 0.0], [10.0, -20.0, 30.0]]


def test_sign_is_sign_times_mean_magnitude_per_tensor():
    grads = [torch.tensor([0.5, -0.1, 0.0, -0.4]), torch.tensor([[2.0, -4.0]])]
    out = defenses.sign(grads, SignConfig(), generator=gen())
    assert out[0].tolist() == pytest.approx([0.25, -0.25, 0.0, -0.25])
    assert out[1].tolist() == [[3.0, -3.0]]


def test_clip_scales_to_the_norm_over_all_layers_and_keeps_small_gradients():
    grads = [torch.tensor([3.0]), torch.tensor([[4.0]])]  # norm 5
    out = privacy.clip(grads, ClipConfig(clip=1.0), generator=gen())
    assert out[0].item() == pytest.approx(0.6) and out[1].item() == pytest.approx(0.8)
    same = privacy.clip(grads, ClipConfig(clip=10.0), generator=gen())
    assert all(torch.equal(a, b) for a, b in zip(same, grads))


def test_per_example_gradients_average_to_the_batch_gradient():
    client = lenet_client()
    batch = gradient(client.model, client.images, client.targets)
    per_example = per_example_gradients(client)
    assert all(torch.allclose(p.mean(0), b, atol=1e-6) for p, b in zip(per_example, batch))


def test_clip_with_a_client_clips_each_example_then_averages():
    client = lenet_client()
    batch = gradient(client.model, client.images, client.targets)
    expected = []
    for i in range(client.batch_size):
        g = gradient(client.model, client.images[i : i + 1], client.targets[i : i + 1])
        expected.append(flat(g) * min(1.0, 0.5 / flat(g).norm().item()))
    out = privacy.clip(batch, ClipConfig(clip=0.5), generator=gen(), client=client)
    assert torch.allclose(flat(out), torch.stack(expected).mean(0), atol=1e-6)


def test_dp_adds_noise_of_std_multiplier_times_clip_over_batch():
    client = lenet_client(batch=2)
    batch = gradient(client.model, client.images, client.targets)
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


def small_net() -> tuple[Client, nn.Module]:
    """x (1,1,2,2) -> flatten -> r = W1 x (3 features) -> logits; scores are hand-computed."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.Linear(3, 2))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 2.0, 0, 0], [0, 0, 0, 1.0]]))
        model[1].bias.zero_()
        model[2].weight.copy_(torch.tensor([[1.0, -1.0, 0.5], [0.2, 0.3, -0.4]]))
    x = torch.tensor([4.0, 1.0, 1.0, 2.0]).reshape(1, 1, 2, 2)
    return Client(model, x, torch.tensor([[0.0, 1.0]])), model


def test_soteria_scores_and_zeroes_the_weakest_feature_columns():
    client, model = small_net()
    # r = (4, 2, 2), ||dr/dx|| = (1, 2, 1): scores (0.25, 1, 0.5)
    assert soteria.feature_scores(client).tolist() == pytest.approx([0.25, 1.0, 0.5])
    grads = gradient(model, client.images, client.targets)
    out = soteria.soteria(grads, SoteriaConfig(percentile=67), generator=gen(), client=client)
    weight = out[2]  # the last Linear's weight gradient, (2 classes, 3 features)
    assert (weight[:, [0, 2]] == 0).all() and torch.equal(weight[:, 1], grads[2][:, 1])
    assert (grads[2][:, [0, 2]] != 0).all()
    assert all(torch.equal(out[i], grads[i]) for i in (0, 1, 3))
    with pytest.raises(ValueError, match="needs the client"):
        soteria.soteria(grads, SoteriaConfig(), generator=gen())


def test_chain_applies_steps_in_order():
    grads = [torch.tensor([0.5, -0.1, 0.3, -0.7, 0.05])]
    steps = [{"name": "prune", "ratio": 0.4}, {"name": "sign"}]
    out = defenses.chain(grads, ChainConfig(steps=steps), generator=gen())
    assert out[0].tolist() == pytest.approx([0.3, 0.0, 0.3, -0.3, 0.0])  # mean|.| after prune
    reverse = defenses.chain(grads, ChainConfig(steps=steps[::-1]), generator=gen())
    assert reverse[0].tolist() == pytest.approx([0.33, -0.33, 0.33, -0.33, 0.33])  # all tie
    assert defenses.report(ChainConfig(steps=steps))["defense_steps"] == (
        "prune(ratio=0.4, scope=layer) -> sign()"
    )


def test_chain_steps_are_typed_and_checked():
    cfg = ChainConfig(steps=[{"name": "prune"}, {"name": "noise", "sigma": 0.5}])
    assert cfg.steps == [PruneConfig(), defenses.NoiseConfig(sigma=0.5)]
    for steps, message in [
        ([{"name": "prune", "ratio": 2.0}], "defense.steps[0]: defense.ratio=2.0"),
        ([{"name": "bogus"}], "defense.steps[0].name='bogus' is not allowed"),
        ([{"name": "noise", "sigmaa": 1}], "defense.steps[0]: Key 'sigmaa' not in"),
        ([{"name": "chain"}], "a step cannot itself be a chain"),
    ]:
        with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
            ChainConfig(steps=steps)
    late_dp = ChainConfig(steps=[{"name": "prune"}, {"name": "dp"}])
    defenses.check(late_dp, batch_size=1)
    with pytest.raises(ConfigError, match="must be the chain's first step"):
        defenses.check(late_dp, batch_size=2)


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
    grads = gradient(client.model, client.images, client.targets)
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
