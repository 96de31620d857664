"""The client group: FedSGD and FedAvg shares, the attacker's simulation of them (against
a client that really trains with torch.optim.SGD), per-trial models, and the update as
what defenses and label recovery see."""

import copy
import dataclasses

import pytest
import torch
from helpers import FAST, attack_one, typed_config

from gradinv_exp import experiment, models
from gradinv_exp.attacks import AttackConfig
from gradinv_exp.attacks.engine import build_problem, optimise
from gradinv_exp.attacks.labels import idlg_labels, last_linear_weight
from gradinv_exp.attacks.optimizers import AdamConfig
from gradinv_exp.base.streams import generator
from gradinv_exp.client import (
    CLIENTS,
    Client,
    FedAvgConfig,
    FedSGDConfig,
    Simulator,
    share,
    soft_cross_entropy,
)
from gradinv_exp.defenses import apply
from gradinv_exp.defenses.privacy import ClipConfig


def lenet(seed: int = 0, classes: int = 6, size: int = 8) -> torch.nn.Module:
    return models.build(
        "lenet", channels=3, num_classes=classes, image_size=size, activation="sigmoid",
        generator=generator(seed, "model"),
    )  # fmt: skip


def batch(count: int = 4, classes: int = 6, size: int = 8, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand(count, 3, size, size, generator=gen)
    labels = torch.arange(count) % classes
    return images, torch.nn.functional.one_hot(labels, classes).float(), labels


def trained_with_sgd(model, images, onehot, cfg: FedAvgConfig) -> list[torch.Tensor]:
    """What a real FedAvg client does: torch.optim.SGD on a copy of the global model,
    ``local_batch`` images per step in order, cycling; returns theta_E - theta_0."""
    local = copy.deepcopy(model)
    opt = torch.optim.SGD(local.parameters(), lr=cfg.local_lr)
    size = cfg.local_batch or len(images)
    for step in range(cfg.local_steps):
        rows = [(step * size + i) % len(images) for i in range(size)]
        opt.zero_grad()
        soft_cross_entropy(local(images[rows]), onehot[rows]).backward()
        opt.step()
    return [(a - b).detach() for a, b in zip(local.parameters(), model.parameters())]


@pytest.mark.parametrize(("steps", "local_batch"), [(1, None), (3, 2), (5, 3)])
def test_fedavg_share_and_its_simulation_equal_real_local_sgd(steps, local_batch):
    model = lenet()
    images, onehot, _ = batch()
    cfg = FedAvgConfig(local_steps=steps, local_batch=local_batch, local_lr=0.5)
    real = trained_with_sgd(model, images, onehot, cfg)
    shared = share(Client(model, images, onehot), cfg)
    simulated = Simulator(model, cfg)(images[None], onehot[None])  # one problem, N = 1
    for r, s, m in zip(real, shared, simulated):
        assert torch.allclose(s, r, atol=1e-6, rtol=1e-4)
        assert torch.allclose(m[0], r, atol=1e-6, rtol=1e-4)
    assert max(r.abs().max() for r in real) > 1e-3  # the steps did move the weights


def test_one_full_batch_local_step_is_the_gradient_scaled_by_minus_lr():
    model = lenet()
    images, onehot, _ = batch()
    gradient = share(Client(model, images, onehot), FedSGDConfig())
    update = share(Client(model, images, onehot), FedAvgConfig(local_steps=1, local_lr=0.3))
    for g, u in zip(gradient, update):
        assert torch.allclose(u, -0.3 * g, atol=1e-7, rtol=1e-5)


def test_the_simulated_update_is_differentiable_in_the_dummy_data_through_every_step():
    model = lenet()
    images, onehot, _ = batch()
    x = images[None].clone().requires_grad_(True)
    cfg = FedAvgConfig(local_steps=3, local_batch=2, local_lr=0.5)
    out = Simulator(model, cfg)(x, onehot[None])
    (grad,) = torch.autograd.grad(sum(o.square().sum() for o in out), x)
    assert grad.abs().sum() > 0 and torch.isfinite(grad).all()
    # images used only in the later steps (2, 3 of batch 2 with 3 steps) get gradient too
    assert (grad[0, 2:].abs().sum(dim=(1, 2, 3)) > 0).all()


def test_fedavg_with_one_full_step_reconstructs_what_fedsgd_does():
    """The cosine objective ignores the update's scale and Adam a constant gradient scale:
    FedAvg(E=1, local_batch=B) must give FedSGD's reconstruction."""
    model = lenet()
    images, onehot, labels = batch(count=2)
    cfg = AttackConfig(name="ig", objective="cosine", labels="given", iterations=15)
    runs = {}
    for name, protocol in (("sgd", FedSGDConfig()), ("avg", FedAvgConfig(local_lr=0.2))):
        shared = [s[None] for s in share(Client(model, images, onehot), protocol)]
        runs[name] = attack_one(
            Simulator(model, protocol), shared, shape=(1, 2, 3, 8, 8), num_classes=6,
            cfg=cfg, optimizer=AdamConfig(), generator=generator(0, "attack"),
            on_snapshot=lambda *a: None, known_labels=labels[None],
        )  # fmt: skip
    assert torch.allclose(runs["sgd"].images, runs["avg"].images, atol=1e-4)
    start = torch.randn((1, 2, 3, 8, 8), generator=generator(0, "attack"))
    assert (runs["sgd"].images - start).abs().max() > 0.5  # the attack did move
    assert float(runs["avg"].grad_loss[0]) == pytest.approx(
        float(runs["sgd"].grad_loss[0]), rel=1e-3
    )


def test_an_attacker_without_the_hyperparameters_assumes_one_full_step():
    told = FedAvgConfig(local_steps=4, local_batch=1, local_lr=0.05)
    blind = dataclasses.replace(told, known_hyperparameters=False)
    assert CLIENTS["fedavg"].assumed(told) == told
    assumed = CLIENTS["fedavg"].assumed(blind)
    assert (assumed.local_steps, assumed.local_batch, assumed.local_lr) == (1, None, 0.05)


def test_label_recovery_reads_an_update_with_the_gradients_sign():
    model = lenet(classes=10, size=16)
    images, onehot, labels = batch(count=1, classes=10, size=16)
    for label in (0, 3, 7):
        onehot = torch.nn.functional.one_hot(torch.tensor([label]), 10).float()
        cfg = FedAvgConfig(local_steps=2, local_lr=0.1)
        update = share(Client(model, images, onehot), cfg)
        gradient = Simulator(model, cfg).as_gradient([u[None] for u in update])
        assert idlg_labels(gradient[last_linear_weight(model)], 1).tolist() == [[label]]


def test_dp_clips_an_update_as_a_whole_not_per_example():
    model = lenet()
    images, onehot, _ = batch()
    cfg = FedAvgConfig(local_steps=2, local_lr=1.0)
    update = share(Client(model, images, onehot), cfg)
    norm = torch.cat([u.flatten() for u in update]).norm()
    assert norm > 0.05
    who = Client(model, images, onehot, per_example=CLIENTS["fedavg"].per_example)
    clipped = apply(update, ClipConfig(clip=0.05), generator=generator(0, "defense"), client=who)
    assert torch.cat([c.flatten() for c in clipped]).norm() == pytest.approx(0.05, rel=1e-5)
    for c, u in zip(clipped, update):  # one scale for the whole update: the same direction
        assert torch.allclose(c, u * 0.05 / norm, atol=1e-7)


# --- trials over models --------------------------------------------------------------------


def test_trials_over_models_attack_the_model_of_seed_plus_t():
    cfg = typed_config(*FAST, "trials=3", "trials_vary=models", "seed=5")
    nets = experiment.build_models(cfg, torch.device("cpu"))
    images, labels, _ = experiment.load_data(cfg)
    assert len(nets) == 3 and images.shape[0] == 3 and (images == images[0]).all()
    for t, net in enumerate(nets):
        alone = experiment.build_model(typed_config(*FAST, f"seed={5 + t}"))
        for a, b in zip(net.parameters(), alone.parameters()):
            assert torch.equal(a, b)
    both = typed_config(*FAST, "trials=2", "trials_vary=both")
    images, _, _ = experiment.load_data(both)
    assert not torch.equal(images[0], images[1])  # both: other images too


@pytest.mark.parametrize("protocol", [FedSGDConfig(), FedAvgConfig(local_steps=2)])
def test_each_trial_with_its_own_model_gets_the_result_it_gets_alone(protocol):
    """Per-trial weights run as one vmapped computation (restarts included); trial t's
    result equals its attack alone on its own model (Adam: not chaotic, so 10 steps)."""
    trials, restarts = 3, 2
    nets = [lenet(seed) for seed in range(trials)]
    images, onehot, _ = batch(count=trials)
    shared = [
        share(Client(net, images[t : t + 1], onehot[t : t + 1]), protocol)
        for t, net in enumerate(nets)
    ]
    target = [torch.stack(p) for p in zip(*shared)]
    params = {
        k: torch.stack([dict(n.named_parameters())[k].detach() for n in nets])
        for k, _ in nets[0].named_parameters()
    }
    together = Simulator(nets[0], protocol, params)
    cfg = AttackConfig(name="dlg", iterations=10, snapshot_every=10)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn((restarts * trials, 1, 3, 8, 8), generator=gen)
    y0 = torch.randn((restarts * trials, 1, 6), generator=gen)
    batched = optimise(
        build_problem(together, target, x0, y0, cfg, AdamConfig(), optimised=True),
        cfg, lambda *a: None,
    )  # fmt: skip
    assert not torch.equal(target[0][0], target[0][1])  # the trials' models differ
    for n in range(restarts * trials):
        t = n % trials
        alone = optimise(
            build_problem(
                Simulator(nets[t], protocol), [g[t : t + 1] for g in target],
                x0[n : n + 1], y0[n : n + 1], cfg, AdamConfig(), optimised=True,
            ),
            cfg, lambda *a: None,
        )  # fmt: skip
        assert torch.allclose(batched.images[n], alone.images[0], atol=2e-4)
        assert batched.grad_loss[n] == pytest.approx(float(alone.grad_loss[0]), rel=1e-3)


def test_a_one_step_update_read_as_a_gradient_is_the_fedsgd_gradient():
    model = lenet()
    images, onehot, _ = batch()
    cfg = FedAvgConfig(local_steps=1, local_lr=0.3)
    update = share(Client(model, images, onehot), cfg)
    read = Simulator(model, cfg).as_gradient([u[None] for u in update])
    grads = share(Client(model, images, onehot), FedSGDConfig())
    for r, g in zip(read, grads, strict=True):
        assert torch.allclose(r[0], g, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("protocol", ["fedsgd", "fedavg"])
def test_the_observed_update_of_n_clients_is_the_mean_of_their_own_updates(protocol):
    """The case step and the attacker's simulation against a computation of their own:
    each of 3 clients' update by plain autograd and torch.optim.SGD on its own batch,
    then their mean (a secure aggregation's sum over the known number of clients)."""
    local = ["client.local_steps=2", "client.local_lr=0.5"] if protocol == "fedavg" else []
    cfg = typed_config(
        "dataset=photos", "dataset.image_size=8", "dataset.batch_size=2", "clients=3",
        "trials=2", "trials_vary=models", f"client={protocol}", *local,
    )  # fmt: skip
    case = experiment.build_case(cfg)
    onehot = torch.nn.functional.one_hot(case.labels, 100).float()
    for t in range(cfg.trials):
        net = experiment.build_model(cfg, cfg.seed + t)  # trial t's own model
        own = []
        for k in range(cfg.clients):
            rows = slice(2 * k, 2 * k + 2)
            x, y = case.images[t, rows], onehot[t, rows]
            if protocol == "fedavg":
                own.append(trained_with_sgd(net, x, y, cfg.client))
            else:
                loss = soft_cross_entropy(net(x), y)
                own.append(torch.autograd.grad(loss, list(net.parameters())))
        mean = [torch.stack(p).mean(0) for p in zip(*own)]
        simulated = Simulator(net, cfg.client, clients=cfg.clients)(
            case.images[t][None], onehot[t][None]
        )
        for seen, sim_, want in zip(case.observed.update, simulated, mean, strict=True):
            assert torch.allclose(seen[t], want, rtol=1e-4, atol=1e-7)
            assert torch.allclose(sim_[0], want, rtol=1e-4, atol=1e-7)
        assert max(float(w.abs().max()) for w in mean) > 1e-4  # not a vanishing update
