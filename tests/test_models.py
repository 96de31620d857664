"""Models: every model builds for every data shape, is seeded, and yields a gradient per
parameter; it must fit the data before any job; the trained-model threat: checkpoints
loaded safely, pretraining before the attack."""

import json
import logging

import pytest
import torch
from helpers import FAST, preflight_check, typed_config

from gradinv_exp import experiment, models
from gradinv_exp.attacks.labels import last_linear_weight
from gradinv_exp.base.options import ConfigError, Registry
from gradinv_exp.base.streams import generator
from gradinv_exp.client import Client, gradient, soft_cross_entropy
from gradinv_exp.data import DatasetConfig, server_images


def build(name, channels=3, size=32, classes=10, activation="relu", init="default", seed=0):
    return models.build(
        name, channels=channels, num_classes=classes, image_size=size, activation=activation,
        init=init, generator=generator(seed, "model"),
    )  # fmt: skip


SHAPES = [
    (name, channels, size if name != "resnet18" else size // 2)  # resnet18 is slow on CPU
    for name in models.MODELS.names()
    if models.MODELS[name].build is not None  # custom, torchvision: tests/test_plugins.py
    for channels, size in [(3, 32), (1, 28)]
]


@pytest.mark.parametrize(("name", "channels", "size"), SHAPES)
def test_model_builds_and_gives_a_gradient_of_every_parameter_shape(name, channels, size):
    model = build(name, channels, size, classes=10)
    images = torch.rand(2, channels, size, size, generator=torch.Generator().manual_seed(0))
    assert model(images).shape == (2, 10)
    grads = gradient(Client(model, images, torch.eye(10)[[1, 4]]))
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


def test_model_too_deep_for_the_image_size_fails_before_any_job(monkeypatch):
    def big_kernel(channels, num_classes, image_size, activation):
        return torch.nn.Sequential(
            torch.nn.Conv2d(channels, 4, kernel_size=9), torch.nn.Flatten(),
            torch.nn.LazyLinear(num_classes),
        )  # fmt: skip

    registry = Registry("model")
    for entry in models.MODELS:
        registry.add(entry)
    registry.add(models.Architecture("big_kernel", big_kernel))
    monkeypatch.setattr(models, "MODELS", registry)
    models.check_fits("big_kernel", 3, 10, 9, "relu")  # 9x9 input: fits
    with pytest.raises(ConfigError) as info:
        models.check_fits("big_kernel", 3, 10, 8, "relu")
    message = str(info.value)
    assert message.startswith("model.name='big_kernel' is not allowed with dataset channels=3, ")
    assert "image_size=8" in message and "RuntimeError" in message and "\n" not in message


# --- trained weights ------------------------------------------------------------------


def bare_model(channels: int = 3, seed: int = 5) -> torch.nn.Module:
    return models.build(
        "lenet", channels=channels, num_classes=100, image_size=32, activation="sigmoid",
        init_range=0.5, generator=torch.Generator().manual_seed(seed),
    )  # fmt: skip


def config(*overrides: str):
    return typed_config(*FAST, *overrides)


def test_checkpoint_weights_replace_the_seeded_init(tmp_path):
    trained = bare_model()
    path = tmp_path / "lenet.pt"
    torch.save(trained.state_dict(), path)
    loaded = experiment.build_model(config(f"model.checkpoint={path}"))
    plain = experiment.build_model(config())
    for a, b, c in zip(loaded.parameters(), trained.parameters(), plain.parameters()):
        assert torch.equal(a, b) and not torch.equal(a, c)


def test_dataset_normalisation_sits_in_front_of_the_model():
    """A known input gives a known output: with dataset.mean/std the model sees
    (x - mean) / std, so the mean image itself gives the bare model's output at 0."""
    mean, std = [0.5, 0.4, 0.3], [0.25, 0.5, 0.2]
    normalised = experiment.build_model(config(f"dataset.mean={mean}", f"dataset.std={std}"))
    bare = experiment.build_model(config())  # the same seed: the same weights
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(normalised(x), bare((x - m) / s), atol=1e-5)
        assert not torch.allclose(normalised(x), bare(x), atol=1e-2)
        at_mean = normalised(m.expand(1, 3, 32, 32))
        assert torch.allclose(at_mean, bare(torch.zeros(1, 3, 32, 32)), atol=1e-5)


class Payload:
    """Any class: a pickle holding it is not a plain state dict."""


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (lambda p: None, "no such file"),
        (lambda p: p.write_bytes(b"\x00garbage" * 10), "not a loadable state dict"),
        (lambda p: torch.save(bare_model(), p), "not a loadable state dict (UnpicklingError"),
        (lambda p: torch.save({"w": Payload()}, p), "not a loadable state dict (UnpicklingError"),
        (lambda p: torch.save([torch.zeros(1)], p), "expected a state dict"),
        (lambda p: torch.save(bare_model(channels=1).state_dict(), p),
         "'0.weight' has shape (12, 1, 5, 5) but the model needs (12, 3, 5, 5)"),
        (lambda p: torch.save({k: v for k, v in bare_model().state_dict().items()
                               if k != "9.bias"}, p), "missing parameter '9.bias'"),
        (lambda p: torch.save(bare_model().state_dict() | {"extra": torch.ones(1)}, p),
         "unexpected parameter 'extra'"),
    ],
    ids=["missing", "corrupt", "full-module", "unsafe-pickle", "not-a-dict", "channels",
         "missing-key", "extra-key"],
)  # fmt: skip
def test_bad_checkpoint_is_one_config_error_before_any_job(tmp_path, content, expected):
    path = tmp_path / "model.pt"
    content(path)
    with pytest.raises(ConfigError) as info:
        preflight_check([*FAST, f"model.checkpoint={path}"])
    message = str(info.value)
    assert message.startswith(f"model.checkpoint='{path}' is not allowed: ") and "\n" not in message
    assert expected in message


def test_checkpoint_mismatch_names_the_first_difference():
    state = bare_model().state_dict()
    assert models.mismatch(state, state) is None
    assert models.mismatch(state, {}) == "missing parameter '0.weight'"


def test_unsafe_pickle_is_never_executed(tmp_path):
    class Evil:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    path = tmp_path / "evil.pt"
    torch.save({"w": Evil()}, path)
    with pytest.raises(ConfigError, match="UnpicklingError"):
        models.read_checkpoint(str(path))
    assert not (tmp_path / "pwned").exists()


# --- pretraining ------------------------------------------------------------------------


def test_pretraining_lowers_the_loss_on_images_other_than_the_attacked(tmp_path):
    x, y = server_images(DatasetConfig(name="crops"), 8, generator(0, "data"), "pretrain")
    model = bare_model()
    onehot = torch.nn.functional.one_hot(y, 100).float()
    losses = models.pretrain(model, x, onehot, steps=30, lr=0.05)
    assert losses[-1] < losses[0] * 0.9


def test_pretraining_logs_the_loss_before_the_first_and_after_the_last_step(caplog):
    x, y = server_images(DatasetConfig(name="crops"), 4, generator(0, "data"), "pretrain")
    onehot = torch.nn.functional.one_hot(y, 100).float()
    model = bare_model()
    with torch.no_grad():
        before = float(soft_cross_entropy(model(x), onehot))
    with caplog.at_level(logging.INFO, logger="gradinv_exp.models"):
        losses = models.pretrain(model, x, onehot, steps=1, lr=0.1)
    with torch.no_grad():
        after = float(soft_cross_entropy(model(x), onehot))
    assert losses == [before, after] and f"{after:.4f}" != f"{before:.4f}"
    assert f"pretrained 1 steps: loss {before:.4f} -> {after:.4f}" in caplog.text


def test_too_many_pretraining_images_fail_in_preflight():
    mine = "model.pretrain_images=10 is not allowed: photos has 10 images and 2 of them are"
    with pytest.raises(ConfigError, match=mine):
        preflight_check([*FAST, "model.pretrain_steps=5", "model.pretrain_images=10"])


def test_pretrained_run_attacks_another_model(tmp_path):
    plain = experiment.run(config("defense=noise"), tmp_path / "plain")
    trained = experiment.run(
        config(
            "defense=noise",
            "model.pretrain_steps=20",
            "model.pretrain_lr=0.1",
            "model.pretrain_images=2",
        ),  # photos: 2 of 10 are the server's
        tmp_path / "trained",
    )
    saved = json.loads((tmp_path / "trained" / "metrics.json").read_text())
    assert saved["config"]["model.pretrain_steps"] == 20 and saved["status"] == "ok"
    # same noise on a different gradient: the defense's cost changes with the model
    assert trained["defense_cosine"] != plain["defense_cosine"]
