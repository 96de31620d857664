"""The attack's objectives (gradient matching) and priors, and their registries."""

import pytest
import torch

from gradinv_exp.attacks import OBJECTIVES, PRIORS
from gradinv_exp.attacks.objectives import cosine_distance, l2_distance, total_variation


def test_cosine_distance_ignores_scale_and_spans_all_layers():
    a = [torch.tensor([1.0, 2.0]), torch.tensor([[3.0]])]
    assert cosine_distance(a, [3 * t for t in a]).item() == pytest.approx(0.0, abs=1e-7)
    assert cosine_distance(a, [-t for t in a]).item() == pytest.approx(2.0)
    # orthogonal as whole vectors although the second layer alone agrees
    b = [torch.tensor([2.0, -1.0]), torch.tensor([[0.0]])]
    assert cosine_distance(a, b).item() == pytest.approx(1.0)
    assert l2_distance(a, b).item() == pytest.approx(1 + 9 + 9)


def test_total_variation_known_value():
    x = torch.zeros(1, 1, 2, 3)
    x[..., 1:] = 1.0  # one vertical edge: |dx| = 1 on half of the horizontal pairs
    assert total_variation(x).item() == pytest.approx(0.5)
    assert total_variation(torch.ones(2, 3, 4, 4)).item() == 0.0


def test_registries_name_the_functions():
    assert OBJECTIVES["l2"].fn is l2_distance and OBJECTIVES["cosine"].fn is cosine_distance
    assert PRIORS["tv"].fn is total_variation
    assert OBJECTIVES.names() == ["cosine", "l2"]
    assert PRIORS.names() == ["bn", "group", "norm", "tv"]
