"""Fashion-MNIST (offline fallback) and the user's own image folder, with its checks."""

import logging

import numpy as np
import pytest
from PIL import Image

from gradinv_exp import data
from gradinv_exp.checks import ConfigError
from gradinv_exp.config import DatasetConfig


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
        data.check(folder_cfg(root))
    assert str(root) in str(err.value) and "\n" not in str(err.value)


def test_unreadable_image_is_named(tmp_path):
    root = make_folder(tmp_path / "imgs")
    (root / "dog" / "broken.jpg").write_bytes(b"not an image")
    with pytest.raises(ConfigError, match="broken.jpg") as err:
        data.check(folder_cfg(root))
    assert "\n" not in str(err.value)


def test_more_class_folders_than_classes_is_an_error(tmp_path):
    root = make_folder(tmp_path / "imgs", classes=("a", "b", "c"), per_class=1)
    data.check_folder.cache_clear()
    with pytest.raises(ConfigError, match="dataset.num_classes=2 .* must be >= 3"):
        data.check(DatasetConfig(name="folder", root=str(root), num_classes=2))


def test_fashion_mnist_falls_back_to_grey_photos_offline(tmp_path, caplog):
    cfg = DatasetConfig(
        name="fashion_mnist", root=str(tmp_path), download=False, image_size=28, channels=1,
        num_classes=10,
    )  # fmt: skip
    with caplog.at_level(logging.WARNING):
        images, _, source = data.load(cfg, 2)
    assert source == "photos" and images.shape == (2, 1, 28, 28)
    assert "FashionMNIST/raw" in caplog.records[-1].getMessage()
