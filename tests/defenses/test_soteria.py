"""Soteria: feature scores by hand, and the representation layer's columns it zeroes."""

import pytest
import torch
from torch import nn

from gradinv_exp.client import Client, gradient
from gradinv_exp.defenses import soteria
from gradinv_exp.defenses.soteria import SoteriaConfig


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


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
    grads = gradient(client)
    out = soteria.soteria(grads, SoteriaConfig(percentile=67), generator=gen(), client=client)
    weight = out[2]  # the last Linear's weight gradient, (2 classes, 3 features)
    assert (weight[:, [0, 2]] == 0).all() and torch.equal(weight[:, 1], grads[2][:, 1])
    assert (grads[2][:, [0, 2]] != 0).all()
    assert all(torch.equal(out[i], grads[i]) for i in (0, 1, 3))
    with pytest.raises(ValueError, match="needs the client"):
        soteria.soteria(grads, SoteriaConfig(), generator=gen())


def test_representation_layer_is_the_last_linear_and_its_weight_index():
    _, model = small_net()
    linear, index = soteria.representation_layer(model)
    assert linear is model[2] and list(model.parameters())[index] is model[2].weight
