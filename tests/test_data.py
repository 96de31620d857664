"""Data: bundled photos, the offline fallback with its warning, and clear errors."""

import logging

import pytest
import torch

from gradinv_exp import data
from gradinv_exp.checks import ConfigError
from gradinv_exp.config import DatasetConfig


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
