"""Data: bundled photos and their distinct crops, the offline fallback with its warning,
how a run deals the images out (server's part, clients' random and non-IID draws, the
pinned index), the user's own image folder with its checks, and clear errors."""

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from gradinv_exp import data
from gradinv_exp.base.options import ConfigError
from gradinv_exp.base.streams import generator
from gradinv_exp.data import DatasetConfig


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


def test_the_first_photo_is_a_recognisable_one_not_a_dark_sky():
    images, _, _ = data.load(DatasetConfig(name="photos"), 1)
    assert data.PHOTOS[0] == "astronaut"
    assert images.mean() > 0.3 and images.std() > 0.15  # hubble_deep_field: mean 0.05


def test_grey_dataset_gives_one_channel():
    cfg = DatasetConfig(name="photos", image_size=28, channels=1, num_classes=10)
    images, _, _ = data.load(cfg, 2)
    assert images.shape == (2, 1, 28, 28)


def test_crops_hold_more_than_a_thousand_distinct_natural_images():
    """The first 1024 crops at 32x32 colour, every pair compared: none is a copy or a near
    copy of another (RMS difference >= 0.02 on [0, 1]), and each has contrast."""
    cfg = DatasetConfig(name="crops", num_classes=17)
    assert len(data.open_dataset(cfg)[0]) == data.CROPS == 4096
    images, labels, source = data.load(cfg, 1024)
    assert source == "crops" and images.shape == (1024, 3, 32, 32)
    flat = images.flatten(1)
    rms = torch.cdist(flat, flat) / flat.shape[1] ** 0.5
    rms.fill_diagonal_(1.0)
    assert rms.min() >= 0.02
    assert (flat.std(1) > 0.03).all()
    assert labels.tolist() == [i % len(data.CROP_SOURCES) for i in range(1024)]
    assert set(labels.tolist()) == set(range(17))  # every photograph is a class


def test_crops_are_fixed_whatever_the_image_size_or_the_process():
    small = data.load(DatasetConfig(name="crops", image_size=16, index=100), 3)[0]
    data.crops.cache_clear()  # drawn again from scratch
    large = data.load(DatasetConfig(name="crops", image_size=32, index=100), 3)[0]
    shrunk = torch.nn.functional.avg_pool2d(large, 2)
    assert (small - shrunk).abs().mean() < 0.05  # the same crops at two sizes
    assert torch.equal(large, data.load(DatasetConfig(name="crops", index=100), 3)[0])


def test_missing_cifar_falls_back_to_crops_with_a_loud_warning(tmp_path, caplog):
    cfg = DatasetConfig(name="cifar100", root=str(tmp_path), download=False, index=25)
    with caplog.at_level(logging.WARNING):
        images, labels, source = data.draw(cfg, 3, generator(0, "data"))
    assert source == "crops"
    crops = data.Crops(100, 32, data.transform(cfg))
    assert torch.equal(images[0], crops[25][0])  # the pinned index is the first image
    assert labels[0] == data.CROP_SOURCES.index("astronaut") == 25 % len(data.CROP_SOURCES)
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


def test_fashion_mnist_falls_back_to_grey_crops_offline(tmp_path, caplog):
    cfg = DatasetConfig(
        name="fashion_mnist", root=str(tmp_path), download=False, image_size=28, channels=1,
        num_classes=10,
    )  # fmt: skip
    with caplog.at_level(logging.WARNING):
        images, _, source = data.draw(cfg, 2, generator(0, "data"))
    assert source == "crops" and images.shape == (2, 1, 28, 28)
    assert "FashionMNIST/raw" in caplog.records[-1].getMessage()


def test_torchvision_datasets_name_the_archive_to_place_offline():
    downloaded = {s.name for s in data.DATASETS if s.archive is not None}
    assert downloaded == {"cifar10", "cifar100", "mnist", "fashion_mnist"}


# --- how a run deals the images out ------------------------------------------------------


def test_partition_deals_disjoint_parts_with_the_pinned_image_first():
    parts = data.partition(100, server=30, test=10, pinned=42, generator=generator(0, "data"))
    clients, server, test = (set(p.tolist()) for p in (parts.clients, parts.server, parts.test))
    assert len(clients) == 60 and len(server) == 30 and len(test) == 10
    assert clients | server | test == set(range(100))
    assert parts.clients[0] == 42
    again = data.partition(100, server=30, test=10, pinned=42, generator=generator(0, "data"))
    assert torch.equal(again.clients, parts.clients)  # seeded
    other = data.partition(100, server=30, test=10, pinned=42, generator=generator(1, "data"))
    assert not torch.equal(other.server, parts.server)


def test_attacked_batches_are_random_disjoint_and_never_the_servers():
    cfg = DatasetConfig(name="crops", num_classes=17, batch_size=4)
    images, labels, _ = data.draw(cfg, 40, generator(0, "data"))
    own, _ = data.server_images(cfg, 200, generator(0, "data"), "server")
    pool = data.Crops(17, 32, data.transform(cfg))
    everything = torch.stack([pool[i][0] for i in range(len(pool))]).flatten(1)
    which = [int((everything - x.flatten()).abs().sum(1).argmin()) for x in images]
    mine = [int((everything - x.flatten()).abs().sum(1).argmin()) for x in own]
    assert len(set(which)) == 40 and not set(which) & set(mine)
    assert which != sorted(which)  # not a contiguous slice
    assert len(set(labels.tolist())) > 8  # IID: a batch of 40 spans the photographs
    other, _, _ = data.draw(cfg, 40, generator(1, "data"))
    assert not torch.equal(other, images)  # the seed draws the images


def test_a_pinned_index_is_the_first_image_whatever_the_seed():
    cfg = DatasetConfig(name="photos", index=3, batch_size=2)
    firsts = [data.draw(cfg, 4, generator(seed, "data"))[0][0] for seed in range(3)]
    expected = data.load(DatasetConfig(name="photos", index=3), 1)[0][0]
    assert all(torch.equal(first, expected) for first in firsts)


def test_a_small_dirichlet_alpha_gives_each_client_few_labels():
    def labels_per_client(alpha):
        cfg = DatasetConfig(name="crops", num_classes=17, batch_size=16, alpha=alpha)
        labels = data.draw(cfg, 8 * 16, generator(0, "data"))[1].view(8, 16)
        return [len(set(row.tolist())) for row in labels]

    skewed, iid = labels_per_client(0.05), labels_per_client(None)
    assert sum(skewed) / 8 <= 4 and min(iid) >= 8  # of 17 photographs (classes)
    assert max(skewed) < min(iid)
    assert labels_per_client(0.05) == skewed  # seeded


def test_the_server_part_too_small_is_a_one_line_error():
    with pytest.raises(ConfigError, match="server.public_images=3 is not allowed: photos has 10"):
        data.server_images(
            DatasetConfig(name="photos", server_fraction=0.2), 3, generator(0, "data"),
            "server.public_images",
        )  # fmt: skip


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
    data.check(folder_cfg(root, index=3), 2)  # 2 of 4 are the clients'
    with pytest.raises(ConfigError, match="dataset.index=4 is not allowed: folder has 4 images"):
        data.check(folder_cfg(root, index=4), 1)
    with pytest.raises(ConfigError, match="trials=3 is not allowed: the run attacks 3 distinct"):
        data.check(folder_cfg(root), 3)
