"""The utility experiment: federated rounds and the defended shares against a hand
computation, accuracy on the test split, federated training per defense on a tiny budget."""

import copy
import os
import subprocess
import sys

import pandas as pd
import pytest
import torch
from helpers import REPO, compose_config
from torch import nn

from gradinv_exp import config, data, utility
from gradinv_exp.client import soft_cross_entropy
from gradinv_exp.config import UtilityConfig

TINY = ["rounds=3", "clients=2", "dataset.batch_size=4", "samples=40", "test_fraction=0.5"]


def typed(*overrides: str) -> config.UtilityConfig:
    return config.to_config(compose_config(*TINY, *overrides, name="utility"), UtilityConfig)


def test_lfw_is_real_labelled_offline_data():
    images, labels, source = data.load(typed().dataset, 200)
    assert source == "lfw" and images.shape == (200, 1, 32, 32)
    assert labels[:100].eq(1).all() and labels[100:].eq(0).all()  # faces, then non-faces
    assert images.min() >= 0 and images.max() <= 1 and images.std() > 0.1


def test_training_is_seeded_and_only_the_defense_changes_the_result():
    cfg = typed("defenses=[{name: none}, {name: none}, {name: dp, noise_multiplier: 50.0}]")
    images, labels, _ = data.load(cfg.dataset, 40)
    a, b, noisy = (utility.train(cfg, d, images, labels) for d in cfg.defenses)
    assert a["per_round"] == b["per_round"] and len(a["per_round"]) == 3
    assert a["defense_cosine"] == pytest.approx(1.0) and a["defense_rel_error"] == 0.0
    assert noisy["defense_cosine"] < 0.1  # the defense was applied to what clients shared


def test_the_server_applies_the_defended_shares(monkeypatch):
    """FedSGD with signSGD as the defense, one round by hand: each client's gradient at
    the global weights w0 becomes sign(g) * mean|g| per tensor, and the server steps by
    -lr x the mean of those (never of the true gradients)."""
    cfg = typed("rounds=1", "defenses=[{name: sign}]", "lr=0.5")
    images, labels, _ = data.load(cfg.dataset, 40)
    onehot = nn.functional.one_hot(labels, 2).float()
    start = utility.build_model(cfg)
    _, shards = utility.split(40, cfg)
    batches = utility.generator(cfg.seed, "utility-batches")
    signed = []
    for shard in shards:
        pick = shard[torch.randperm(len(shard), generator=batches)][: cfg.dataset.batch_size]
        loss = soft_cross_entropy(start(images[pick]), onehot[pick])
        grads = torch.autograd.grad(loss, list(start.parameters()))
        signed.append([torch.sign(g) * g.abs().mean() for g in grads])
    expected = [w - 0.5 * (a + b) / 2 for w, a, b in zip(start.parameters(), *signed)]
    trained = {}
    monkeypatch.setattr(utility, "accuracy", lambda m, *_: trained.setdefault("m", m) and 0.5)
    result = utility.train(cfg, cfg.defenses[0], images, labels)
    for got, want in zip(trained["m"].parameters(), expected):
        assert torch.allclose(got, want, atol=1e-6)
    assert result["defense_changed"] > 0 and result["defense_cosine"] < 0.99


def test_every_round_is_scored_on_the_test_split(monkeypatch):
    """Labels that tell the split apart (1 on the test images, 0 on the shards): a round
    scored on a client's shard instead would give another accuracy."""
    cfg = typed("rounds=2")
    images, _, _ = data.load(cfg.dataset, 40)
    test, _ = utility.split(40, cfg)
    labels = torch.zeros(40, dtype=torch.long)
    labels[test] = 1
    scored = []

    def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
        scored.append((torch.equal(x, images[test]), torch.equal(y, labels[test])))
        return original(model, x, y)

    original = utility.accuracy
    monkeypatch.setattr(utility, "accuracy", accuracy)
    result = utility.train(cfg, cfg.defenses[0], images, labels)
    assert scored == [(True, True)] * 2 and len(result["per_round"]) == 2
    assert result["accuracy"] == result["per_round"][-1]


def test_accuracy_is_the_fraction_of_correct_top_logits():
    model = nn.Sequential(nn.Flatten(), nn.Identity())  # logits = the two pixels
    images = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]).reshape(3, 1, 1, 2)
    assert utility.accuracy(model, images, torch.tensor([0, 1, 1])) == pytest.approx(2 / 3)


def test_split_is_disjoint_and_covers_the_data():
    test, shards = utility.split(40, typed())
    everything = torch.cat([test, *shards]).sort().values
    assert torch.equal(everything, torch.arange(40)) and len(test) == 20 and len(shards) == 2


@pytest.mark.slow
def test_command_prints_accuracy_per_defense_and_writes_the_table(tmp_path):
    defenses = "defenses=[{name: none}, {name: dp}, {name: soteria}, {name: topk, keep: 0.05}]"
    env = os.environ | {"PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "gradinv_exp.utility", *TINY, defenses,
         f"hydra.run.dir={tmp_path}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    table = pd.read_csv(tmp_path / "utility.csv")
    assert table["defense.name"].tolist() == ["none", "dp", "soteria", "topk"]
    cfg = typed()
    images, labels, _ = data.load(cfg.dataset, 40)  # samples=40: the first 40 images
    alone = utility.train(cfg, cfg.defenses[0], images, labels)  # the default's first: none
    rounds = [f"accuracy_round_{r}" for r in (1, 2, 3)]
    assert table.loc[0, rounds].tolist() == alone["per_round"]
    assert (table["accuracy"] == table["accuracy_round_3"]).all()
    assert table.loc[2, "defense_changed"] > 0  # soteria changed what the clients shared
    assert table.loc[1, "epsilon"] == pytest.approx(4.39, abs=0.01)
    assert table.loc[3, "defense.keep"] == 0.05  # the same flat keys as metrics.json's config
    assert (tmp_path / "utility.png").stat().st_size > 0
    assert "accuracy" in proc.stdout and "soteria(percentile=40.0)" in proc.stdout


@pytest.mark.parametrize("client", ["fedsgd", "fedavg"])
def test_one_round_is_the_mean_of_what_the_clients_share(client, monkeypatch):
    """Against a hand computation: each client draws its batch from its shard, shares a
    gradient (FedSGD: the server steps by -lr x the mean) or the update of real local SGD
    (FedAvg: the server adds the mean); both clients start from the same global weights."""
    extra = ["client.local_steps=2", "client.local_lr=0.2"] if client == "fedavg" else []
    cfg = typed("rounds=1", f"client={client}", *extra, "defenses=[{name: none}]")
    images, labels, _ = data.load(cfg.dataset, 40)
    onehot = torch.nn.functional.one_hot(labels, 2).float()
    start = utility.build_model(cfg)
    _, shards = utility.split(40, cfg)
    batches = utility.generator(cfg.seed, "utility-batches")
    moves = []
    for shard in shards:
        pick = shard[torch.randperm(len(shard), generator=batches)][: cfg.dataset.batch_size]
        local = copy.deepcopy(start)
        steps, lr = (2, 0.2) if client == "fedavg" else (1, cfg.lr)
        opt = torch.optim.SGD(local.parameters(), lr=lr)
        for _ in range(steps):
            opt.zero_grad()
            soft_cross_entropy(local(images[pick]), onehot[pick]).backward()
            opt.step()
        moves.append([b - a for a, b in zip(start.parameters(), local.parameters())])
    expected = [a + (m1 + m2) / 2 for a, m1, m2 in zip(start.parameters(), *moves)]
    trained = {}
    monkeypatch.setattr(utility, "accuracy", lambda m, *_: trained.setdefault("m", m) and 0.5)
    utility.train(cfg, cfg.defenses[0], images, labels)
    for got, want in zip(trained["m"].parameters(), expected):
        assert torch.allclose(got, want, atol=1e-6)
    assert any(not torch.allclose(m1, m2) for m1, m2 in zip(*moves))  # clients differ


def test_the_figure_draws_equal_curves_once_with_none_on_top_and_integer_rounds():
    """none, prune and noise trained alike: one black dashed line for the three (drawn
    apart, prune would hide none), the other defense its own; rounds are whole numbers."""
    table = pd.DataFrame(
        {"defense": ["none()", "prune(ratio=0.2)", "dp(clip=1.0)", "noise(sigma=0.001)"],
         "accuracy": [0.7, 0.7, 0.5, 0.7],
         "accuracy_round_1": [0.5, 0.5, 0.5, 0.5], "accuracy_round_2": [0.7, 0.7, 0.5, 0.7]}
    )  # fmt: skip
    ax = utility.figure(table).axes[0]
    labels = [line.get_label() for line in ax.lines]
    assert labels == ["none()\nprune(ratio=0.2)\nnoise(sigma=0.001): 0.70", "dp(clip=1.0): 0.50"]
    assert ax.lines[0].get_color() == "k" and ax.lines[0].get_linestyle() == "--"
    assert all(float(t).is_integer() for t in ax.get_xticks())


def test_the_accuracy_reached_is_the_mean_over_the_last_tenth_of_the_rounds():
    assert utility.settled([0.1] * 90 + [0.5, 0.7] * 5) == pytest.approx(0.6)
    assert utility.settled([0.2, 0.4]) == 0.4  # fewer than 10 rounds: the last one
