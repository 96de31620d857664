"""The trained-model threat: checkpoints loaded safely, pretraining before the attack."""

import json

import pytest
import torch
from conftest import FAST, typed_config

from gradinv_exp import checkpoint, models, preflight, pretrain, run
from gradinv_exp.checks import ConfigError
from gradinv_exp.config import DatasetConfig


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
    loaded = run.build_model(config(f"model.checkpoint={path}"))
    plain = run.build_model(config())
    for a, b, c in zip(loaded.parameters(), trained.parameters(), plain.parameters()):
        assert torch.equal(a, b) and not torch.equal(a, c)


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
        preflight.check([*FAST, f"model.checkpoint={path}"])
    message = str(info.value)
    assert message.startswith(f"model.checkpoint='{path}' is not allowed: ") and "\n" not in message
    assert expected in message


def test_unsafe_pickle_is_never_executed(tmp_path):
    class Evil:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    path = tmp_path / "evil.pt"
    torch.save({"w": Evil()}, path)
    with pytest.raises(ConfigError, match="UnpicklingError"):
        checkpoint.read(str(path))
    assert not (tmp_path / "pwned").exists()


def test_pretraining_lowers_the_loss_on_images_other_than_the_attacked(tmp_path):
    ds = DatasetConfig(name="photos", index=3)
    x, y = pretrain.images(ds, attacked=2, count=8)
    assert y.tolist() == [5, 6, 7, 8, 9, 0, 1, 2]  # after photos 3, 4; wraps, skips them
    model = bare_model()
    onehot = torch.nn.functional.one_hot(y, 100).float()
    losses = pretrain.train(model, x, onehot, steps=30, lr=0.05)
    assert losses[-1] < losses[0] * 0.9


def test_too_many_pretraining_images_fail_in_preflight():
    with pytest.raises(ConfigError, match="model.pretrain_images=10 is not allowed: photos has 10"):
        preflight.check([*FAST, "model.pretrain_steps=5", "model.pretrain_images=10"])


def test_pretrained_run_attacks_another_model(tmp_path):
    plain = run.run(config("defense=noise"), tmp_path / "plain")
    trained = run.run(
        config("defense=noise", "model.pretrain_steps=20", "model.pretrain_lr=0.1"),
        tmp_path / "trained",
    )
    saved = json.loads((tmp_path / "trained" / "metrics.json").read_text())
    assert saved["config"]["model.pretrain_steps"] == 20 and saved["status"] == "ok"
    # same noise on a different gradient: the defense's cost changes with the model
    assert trained["defense_cosine"] != plain["defense_cosine"]
