"""GradInversion: the priors that see the model or all restarts (bn, group), the image
norm, the preset end to end, and batch norm statistics learnt in pretraining."""

import pytest
import torch
from helpers import FAST, preflight_check, typed_config
from torch import nn

from gradinv_exp import experiment, models
from gradinv_exp.attacks import PRIORS, Backend
from gradinv_exp.attacks.engine import eager_if_needed
from gradinv_exp.attacks.objectives import Scene, image_norm
from gradinv_exp.base.options import ConfigError


def bn_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 5, 3), nn.BatchNorm2d(5), nn.ReLU(),
        nn.Flatten(), nn.Linear(5 * 4 * 4, 3), nn.BatchNorm1d(3),
    ).eval()  # fmt: skip


def set_running_statistics(net: nn.Module, images: torch.Tensor) -> None:
    """Every BN layer's running statistics := those of its input on ``images``, layer by
    layer in order (a layer's input depends on the earlier layers' statistics)."""
    for layer in [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]:
        seen: list[torch.Tensor] = []
        hook = layer.register_forward_pre_hook(lambda m, a, seen=seen: seen.append(a[0]))
        with torch.no_grad():
            net(images)
        hook.remove()
        x = seen[0].transpose(0, 1).flatten(1)  # (C, B x positions)
        layer.running_mean.copy_(x.mean(1))
        layer.running_var.copy_(x.var(1, unbiased=False))


def test_bn_prior_is_zero_at_the_running_statistics_and_positive_otherwise():
    net = bn_net()
    images = torch.rand(2, 4, 3, 8, 8, generator=torch.Generator().manual_seed(1))  # (N, B, ...)
    set_running_statistics(net, images[0])
    prior = PRIORS["bn"].batched(Scene(net, restarts=1))
    values = prior(images.clone().requires_grad_(True))
    assert values.shape == (2,)
    assert values[0].item() == pytest.approx(0.0, abs=1e-5)
    assert values[1].item() > 0.1  # another batch has other statistics
    shifted = prior((images[:1] + 0.2).requires_grad_(True))
    assert shifted.item() > 0.1
    x = images[1:].clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(prior(x).sum(), x)
    assert grad.abs().sum() > 0  # it pulls the dummy towards the statistics


def test_bn_prior_of_a_batch_does_not_depend_on_the_other_problems():
    net = bn_net()
    images = torch.rand(3, 2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    prior = PRIORS["bn"].batched(Scene(net, restarts=1))
    together = prior(images)
    alone = torch.stack([prior(images[n : n + 1])[0] for n in range(3)])
    assert torch.allclose(together, alone, atol=1e-5)


def test_group_prior_pulls_restarts_to_their_trials_mean():
    same = torch.rand(1, 2, 3, 4, 4).repeat(3, 1, 1, 1, 1)  # R = 3 restarts of T = 1 trial
    group = PRIORS["group"].batched(Scene(nn.Identity(), restarts=3))
    assert group(same).tolist() == pytest.approx([0.0, 0.0, 0.0], abs=1e-6)
    images = torch.zeros(4, 1, 1, 1, 2)  # R = 2, T = 2; rows r * T + t
    images[2, ..., 0] = 2.0  # restart 1 of trial 0 differs: both restarts of trial 0 are 1 away
    group2 = PRIORS["group"].batched(Scene(nn.Identity(), restarts=2))
    assert group2(images).tolist() == [1.0, 0.0, 1.0, 0.0]
    one = PRIORS["group"].batched(Scene(nn.Identity(), restarts=1))
    assert one(images).tolist() == [0.0] * 4


def test_image_norm_is_the_distance_from_mid_grey():
    assert image_norm(torch.full((2, 3, 4, 4), 0.5)).item() == 0.0
    assert image_norm(torch.ones(1, 1, 2, 2)).item() == pytest.approx(1.0)


def test_the_bn_prior_makes_the_attack_eager():
    cfg = typed_config("attack=gradinversion")
    assert not eager_if_needed(Backend(compile=True), cfg.attack).compile
    assert eager_if_needed(Backend(compile=True), typed_config("attack=ig").attack).compile


def test_bn_prior_on_a_model_without_batch_norm_fails_before_any_job():
    with pytest.raises(ConfigError, match=r"attack.priors.bn=0.1 is not allowed: .*model=lenet"):
        preflight_check([*FAST, "attack=gradinversion", "model=lenet"])
    preflight_check([*FAST, "attack=gradinversion", "model=lenet", "attack.priors.bn=0"])


def test_pretraining_with_batch_norm_learns_running_statistics():
    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(3)) + 2.0
    onehot = torch.eye(3)[[0, 1, 2, 0]]
    for batch_norm in (False, True):
        net = bn_net()
        models.pretrain(net, x, onehot, steps=3, lr=0.01, batch_norm=batch_norm)
        first = net[1]
        assert not first.training  # back in eval mode
        moved = not torch.equal(first.running_mean, torch.zeros(4))
        assert moved == batch_norm


def test_gradinversion_runs_end_to_end_on_resnet18(tmp_path):
    cfg = typed_config(
        "attack=gradinversion", "model=resnet18", "dataset=crops", "dataset.batch_size=2",
        "dataset.image_size=8", "attack.iterations=2", "attack.snapshot_every=1",
        "attack.restarts=2", "model.pretrain_steps=1", "model.pretrain_bn=true",
    )  # fmt: skip
    summary = experiment.run(cfg, tmp_path)
    assert summary["status"] == "ok" and summary["steps"] == 2 and not summary["compile"]
    assert sorted(summary["recovered_labels"][0]) == sorted(summary["labels"][0])
    assert len(summary["per_trial"]["restart"]) == 1
