"""Every model builds for every data shape, is seeded, and yields a gradient per parameter."""

import pytest
import torch

from gradinv_exp import attacks, models
from gradinv_exp.labels import last_linear_weight
from gradinv_exp.run import generator


def build(name, channels=3, size=32, classes=10, activation="relu", init="default", seed=0):
    return models.build(
        name, channels=channels, num_classes=classes, image_size=size, activation=activation,
        init=init, generator=generator(seed, "model"),
    )  # fmt: skip


SHAPES = [
    (name, channels, size if name != "resnet18" else size // 2)  # resnet18 is slow on CPU
    for name in sorted(models.MODELS)
    for channels, size in [(3, 32), (1, 28)]
]


@pytest.mark.parametrize(("name", "channels", "size"), SHAPES)
def test_model_builds_and_gives_a_gradient_of_every_parameter_shape(name, channels, size):
    model = build(name, channels, size, classes=10)
    images = torch.rand(2, channels, size, size, generator=torch.Generator().manual_seed(0))
    assert model(images).shape == (2, 10)
    grads = attacks.gradient(model, images, torch.eye(10)[[1, 4]])
    params = list(model.parameters())
    assert [g.shape for g in grads] == [p.shape for p in params]
    assert all(torch.isfinite(g).all() for g in grads)
    assert params[last_linear_weight(model)].shape[0] == 10  # the label-recovery layer


@pytest.mark.parametrize("name", ["mlp", "convnet", "lenet"])
def test_same_seed_same_weights_other_seed_differs(name):
    init = "uniform" if name == "lenet" else "default"
    a, b, c = (build(name, init=init, seed=s) for s in (0, 0, 1))
    first = [list(m.parameters())[0] for m in (a, b, c)]
    assert torch.equal(first[0], first[1]) and not torch.equal(first[0], first[2])


def test_default_init_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build("convnet")
    assert torch.equal(torch.rand(3), expected)


def test_resnet18_is_adapted_to_small_images_and_in_eval_mode():
    model = build("resnet18", channels=1, size=12)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert model.conv1.in_channels == 1 and isinstance(model.maxpool, torch.nn.Identity)
    assert not model.training  # batch norm uses running statistics: per-image gradients


def test_activation_is_selectable():
    sig = build("convnet", activation="sigmoid")
    assert any(isinstance(m, torch.nn.Sigmoid) for m in sig.modules())
    assert not any(isinstance(m, torch.nn.ReLU) for m in sig.modules())
    res = build("resnet18", activation="tanh")
    assert not any(isinstance(m, torch.nn.ReLU) for m in res.modules())
