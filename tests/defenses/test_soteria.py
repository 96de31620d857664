"""Soteria: feature scores by hand, the representation layer's columns it zeroes, and
features without a representation (dead ReLUs) that it must not count as pruned."""

import pytest
import torch
from helpers import gen, typed_config
from torch import nn

from gradinv_exp import defenses, experiment
from gradinv_exp.client import Client, gradient
from gradinv_exp.defenses import soteria
from gradinv_exp.defenses.soteria import SoteriaConfig


def small_net(dead: bool = False) -> tuple[Client, nn.Module]:
    """x (1,1,2,2) -> flatten -> r = relu(W1 x) (3 features) -> logits; scores by hand.

    ``dead``: the third feature's weights are negative, so its ReLU output is 0.
    """
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    third = [0, 0, 0, -1.0] if dead else [0, 0, 0, 1.0]
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 2.0, 0, 0], third]))
        model[1].bias.zero_()
        model[3].weight.copy_(torch.tensor([[1.0, -1.0, 0.5], [0.2, 0.3, -0.4]]))
    x = torch.tensor([4.0, 1.0, 1.0, 2.0]).reshape(1, 1, 2, 2)
    return Client(model, x, torch.tensor([[0.0, 1.0]])), model


def test_soteria_scores_and_zeroes_the_weakest_feature_columns():
    client, model = small_net()
    # r = (4, 2, 2), ||dr/dx|| = (1, 2, 1): scores (0.25, 1, 0.5)
    scores, represented = soteria.feature_scores(client)
    assert scores.tolist() == pytest.approx([0.25, 1.0, 0.5])
    assert represented.tolist() == [True, True, True]
    grads = gradient(client)
    out = soteria.soteria(grads, SoteriaConfig(percentile=67), generator=gen(), client=client)
    weight = out[2]  # the last Linear's weight gradient, (2 classes, 3 features)
    assert (weight[:, [0, 2]] == 0).all() and torch.equal(weight[:, 1], grads[2][:, 1])
    assert (grads[2][:, [0, 2]] != 0).all()
    assert all(torch.equal(out[i], grads[i]) for i in (0, 1, 3))
    with pytest.raises(ValueError, match="needs the client"):
        soteria.soteria(grads, SoteriaConfig(), generator=gen())


def test_a_feature_without_representation_is_not_counted_as_pruned():
    client, _ = small_net(dead=True)
    # r = (4, 2, 0): the dead feature scores 0 but its column is zero already
    scores, represented = soteria.feature_scores(client)
    assert scores.tolist() == pytest.approx([0.25, 1.0, 0.0])
    assert represented.tolist() == [True, True, False]
    grads = gradient(client)
    assert (grads[2][:, 2] == 0).all() and (grads[2][:, :2] != 0).all()
    # 50% of the two represented features: feature 0 (score 0.25), not the dead one
    out = soteria.soteria(grads, SoteriaConfig(percentile=50), generator=gen(), client=client)
    assert (out[2][:, 0] == 0).all() and torch.equal(out[2][:, 1], grads[2][:, 1])


def test_soteria_changes_the_gradient_of_the_relu_lenet():
    """The README's utility model (ReLU, U(-0.1, 0.1)): over 40% of its 768 features are
    dead on a photo, so counting them as pruned left the gradient unchanged."""
    cfg = typed_config(
        "dataset=photos", "model.activation=relu", "model.init_range=0.1", "defense=soteria"
    )
    assert cfg.defense.percentile == 40
    model = experiment.build_model(cfg)
    images, labels, _ = experiment.load_data(cfg)
    onehot = torch.nn.functional.one_hot(labels[0], cfg.dataset.num_classes).float()
    client = Client(model, images[0], onehot)
    _, represented = soteria.feature_scores(client)
    alive = int(represented.sum())
    assert 768 - alive > 0.4 * 768  # more dead features than the percentile
    grads = gradient(client)
    out = defenses.apply(grads, cfg.defense, generator=gen(), client=client)
    _, index = soteria.representation_layer(model)
    zeroed = (out[index] == 0).all(0) & (grads[index] != 0).any(0)  # columns it cleared
    assert int(zeroed.sum()) == int(0.4 * alive)
    cost = defenses.cost(grads, out)
    assert cost["defense_changed"] > 0 and cost["defense_cosine"] < 0.99


def test_representation_layer_is_the_last_linear_and_its_weight_index():
    _, model = small_net()
    linear, index = soteria.representation_layer(model)
    assert linear is model[3] and list(model.parameters())[index] is model[3].weight
