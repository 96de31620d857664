"""The DLG attack recovers a real photo from an undefended gradient; it reports honestly."""

import math

import torch

from gradinv_exp import attacks, data, models
from gradinv_exp.config import AdamConfig, DatasetConfig, DLGConfig, LBFGSConfig
from gradinv_exp.metrics import psnr
from gradinv_exp.run import generator


def setup(index: int):
    ds = DatasetConfig(name="photos", index=index)
    images, labels, _ = data.load(ds, 1)
    model = models.build(
        "lenet", channels=3, num_classes=100, image_size=32, activation="sigmoid",
        init_range=0.5, generator=generator(0, "model"),
    )  # fmt: skip
    onehot = torch.nn.functional.one_hot(labels, 100).float()
    target = [g[None] for g in attacks.gradient(model, images, onehot)]  # one trial
    return model, images, labels, target


def test_dlg_recovers_a_bundled_photo_without_defense():
    model, images, labels, target = setup(index=1)
    snapshots = []
    result = attacks.dlg(
        model, target, shape=(1, *images.shape), num_classes=100,
        attack=DLGConfig(iterations=120, snapshot_every=40), optimizer=LBFGSConfig(),
        generator=generator(0, "attack"), on_snapshot=lambda s, loss, x: snapshots.append(s),
    )  # fmt: skip
    assert psnr(images, result.images[0])[0] > 28.0
    assert result.labels.tolist() == [labels.tolist()]
    assert snapshots == [0, 40, 80, 120]
    assert not result.diverged.any() and result.steps.tolist() == [120]


def test_diverging_attack_is_reported_not_raised():
    model, images, _, target = setup(index=0)
    result = attacks.dlg(
        model, target, shape=(1, *images.shape), num_classes=100,
        attack=DLGConfig(iterations=5), optimizer=AdamConfig(lr=float("inf")),
        generator=generator(0, "attack"), on_snapshot=lambda *a: None,
    )  # fmt: skip
    assert result.diverged.tolist() == [True]
    assert torch.isfinite(result.images).all()  # the last finite reconstruction is kept
    assert math.isfinite(float(result.grad_loss[0]))
