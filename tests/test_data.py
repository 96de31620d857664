"""Data: bundled photos, the offline fallback with its warning, the user's own image
folder with its checks, and clear errors."""

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from gradinv_exp import data
from gradinv_exp.config import DatasetConfig
from gradinv_exp.options import ConfigError


def make_folder(root, classes=("cat", "dog"), per_class=2, size=40):
    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (size, size + 8, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def folder_cfg(root, **kw):
    data.check_folder.cache_clear()
    return DatasetConfig(name="folder", root=str(root), num_classes=10, **kw)


def test_photos_are_real_images_of_the_asked_shape():
    cfg = DatasetConfig(name="photos", image_size=32, channels=3, num_classes=100, index=0)
    images, labels, source = data.load(cfg, 3)
    assert source == "photos"
    assert images.shape == (3, 3, 32, 32) and images.dtype == torch.float32
    assert images.min() >= 0 and images.max() <= 1
    assert labels.tolist() == [0, 1, 2]
    assert images.std() > 0.05  # photographs, not flat colour
    # colour photos keep their colour (the channels differ)
    assert (images[0, 0] - images[0, 1]).abs().mean() > 0.01


def test_grey_dataset_gives_one_channel():
    cfg = DatasetConfig(name="photos", image_size=28, channels=1, num_classes=10)
    images, _, _ = data.load(cfg, 2)
    assert images.shape == (2, 1, 28, 28)


def test_missing_cifar_falls_back_to_photos_with_a_loud_warning(tmp_path, caplog):
    cfg = DatasetConfig(name="cifar100", root=str(tmp_path), download=False, index=25)
    with caplog.at_level(logging.WARNING):
        images, labels, source = data.load(cfg, 1)
    assert source == "photos"
    assert labels.tolist() == [25 % len(data.PHOTOS)]
    warning = caplog.records[-1].getMessage()
    assert "cifar-100-python.tar.gz" in warning and str(tmp_path) in warning


def test_missing_cifar_without_fallback_is_a_clear_error(tmp_path):
    cfg = DatasetConfig(name="cifar100", root=str(tmp_path), download=False, offline_fallback=False)
    with pytest.raises(ConfigError, match="cifar-100-python.tar.gz"):
        data.load(cfg, 1)


def test_index_beyond_a_real_dataset_is_an_error():
    cfg = DatasetConfig(name="photos", index=len(data.PHOTOS) - 1)
    with pytest.raises(ConfigError, match="dataset.index"):
        data.load(cfg, 2)


def test_fashion_mnist_falls_back_to_grey_photos_offline(tmp_path, caplog):
    cfg = DatasetConfig(
        name="fashion_mnist", root=str(tmp_path), download=False, image_size=28, channels=1,
        num_classes=10,
    )  # fmt: skip
    with caplog.at_level(logging.WARNING):
        images, _, source = data.load(cfg, 2)
    assert source == "photos" and images.shape == (2, 1, 28, 28)
    assert "FashionMNIST/raw" in caplog.records[-1].getMessage()


def test_torchvision_datasets_name_the_archive_to_place_offline():
    downloaded = {s.name for s in data.DATASETS if s.archive is not None}
    assert downloaded == {"cifar10", "cifar100", "mnist", "fashion_mnist"}


def test_pretraining_images_follow_the_attacked_ones_and_wrap_around():
    ds = DatasetConfig(name="photos", index=3)
    x, y = data.load_after(ds, attacked=2, count=8)
    assert y.tolist() == [5, 6, 7, 8, 9, 0, 1, 2]  # after photos 3, 4; wraps, skips them
    assert x.shape == (8, 3, 32, 32)
    with pytest.raises(ConfigError, match="model.pretrain_images=9 is not allowed: photos has 10"):
        data.load_after(ds, attacked=2, count=9)


# --- the user's own images ------------------------------------------------------------


def test_folder_gives_resized_images_with_class_index_labels(tmp_path):
    root = make_folder(tmp_path / "imgs")
    images, labels, source = data.load(folder_cfg(root, image_size=16), 4)
    assert source == "folder" and images.shape == (4, 3, 16, 16)
    assert labels.tolist() == [0, 0, 1, 1]  # cat = 0, dog = 1 (sorted folder names)
    expected = np.asarray(Image.open(root / "cat" / "0.png").convert("RGB").resize((20, 16)))
    assert abs(images[0].mean().item() - expected[:, 2:18].mean() / 255) < 0.02


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        (lambda root: None, "no such folder"),
        (lambda root: root.mkdir(), "class folder"),
        (lambda root: (root / "empty_class").mkdir(parents=True), "no valid file"),
    ],
)
def test_missing_or_empty_folder_is_one_line_naming_it(tmp_path, setup, expected):
    root = tmp_path / "imgs"
    setup(root)
    with pytest.raises(ConfigError, match=expected) as err:
        data.check(folder_cfg(root), 1)
    assert str(root) in str(err.value) and "\n" not in str(err.value)


def test_unreadable_image_is_named(tmp_path):
    root = make_folder(tmp_path / "imgs")
    (root / "dog" / "broken.jpg").write_bytes(b"not an image")
    with pytest.raises(ConfigError, match="broken.jpg") as err:
        data.check(folder_cfg(root), 1)
    assert "\n" not in str(err.value)


def test_more_class_folders_than_classes_is_an_error(tmp_path):
    root = make_folder(tmp_path / "imgs", classes=("a", "b", "c"), per_class=1)
    data.check_folder.cache_clear()
    with pytest.raises(ConfigError, match="dataset.num_classes=2 .* must be >= 3"):
        data.check(DatasetConfig(name="folder", root=str(root), num_classes=2), 1)


def test_folder_holds_fewer_images_than_the_run_attacks(tmp_path):
    root = make_folder(tmp_path / "imgs")  # 4 images
    assert data.check_folder(str(root), 10) == 4
    data.check(folder_cfg(root, index=2), 2)
    with pytest.raises(ConfigError, match="dataset.index=3 is not allowed: folder has 4 images"):
        data.check(folder_cfg(root, index=3), 2)
