"""The utility experiment: federated averaging against a hand computation, accuracy,
federated training per defense on a tiny budget."""

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
from gradinv_exp.experiment import build_model, generator

TINY = ["rounds=3", "clients=2", "dataset.batch_size=4", "samples=40", "test_fraction=0.5"]


def typed(*overrides: str) -> config.UtilityConfig:
    return utility.to_config(compose_config(*TINY, *overrides, name="utility"))


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


def test_a_round_averages_the_clients_defended_updates_from_the_global_weights():
    """Two clients, two local steps each on sign-defended gradients of their whole shard:
    each starts from the global weights w0; the new weights are w0 + the mean change."""
    cfg = typed("defenses=[{name: sign}]", "local_steps=2", "lr=0.5", "dataset.image_size=8",
                "dataset.batch_size=3")  # fmt: skip
    model = build_model(cfg)
    images = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    onehot = nn.functional.one_hot(torch.tensor([0, 1, 1, 0, 1, 0]), 2).float()
    shards = [torch.tensor([0, 1, 2]), torch.tensor([3, 4, 5])]
    w0 = [p.detach().clone() for p in model.parameters()]

    def change(shard: torch.Tensor) -> list[torch.Tensor]:
        """One client by hand: two SGD steps from w0 on sign(g) * mean|g| per tensor."""
        net = copy.deepcopy(model)
        for _ in range(2):
            loss = soft_cross_entropy(net(images[shard]), onehot[shard])
            grads = torch.autograd.grad(loss, list(net.parameters()))
            with torch.no_grad():
                for p, g in zip(net.parameters(), grads):
                    p -= 0.5 * torch.sign(g) * g.abs().mean()
        return [p.detach() - w for p, w in zip(net.parameters(), w0)]

    first, second = change(shards[0]), change(shards[1])
    costs = utility.federated_round(
        model, shards, images, onehot, cfg, cfg.defenses[0],
        batches=generator(0, "batches"), noise=generator(0, "noise"),
    )  # fmt: skip
    for p, w, a, b in zip(model.parameters(), w0, first, second):
        assert torch.allclose(p, w + (a + b) / 2, atol=1e-6)
        assert not torch.allclose(a, b, atol=1e-4)  # the clients' changes differ
    assert len(costs) == 4 and all(c["defense_changed"] > 0 for c in costs)


def test_training_scores_every_round_on_the_held_out_images():
    """train = ``rounds`` federated rounds from the seeded model, each followed by the
    accuracy on the test split (never on a client's training shard)."""
    cfg = typed("rounds=2")
    images, _, _ = data.load(cfg.dataset, 40)
    test, shards = utility.split(40, cfg)
    labels = torch.zeros(40, dtype=torch.long)
    labels[test] = 1  # a model right on the test split is wrong on every training shard
    result = utility.train(cfg, cfg.defenses[0], images, labels)
    model = build_model(cfg)
    onehot = nn.functional.one_hot(labels, 2).float()
    batches, noise = generator(0, "utility-batches"), generator(0, "defense")
    for r in range(2):
        utility.federated_round(
            model, shards, images, onehot, cfg, cfg.defenses[0], batches=batches, noise=noise
        )
        assert result["per_round"][r] == utility.accuracy(model, images[test], labels[test])
    assert len(result["per_round"]) == 2 and result["accuracy"] == result["per_round"][-1]


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
