"""The ``dataset`` group: images under attack, from torchvision data sets, the user's own
folder of images, or real photos bundled with scikit-image.

``load`` returns images ``(N, C, H, W)`` in [0, 1], integer labels ``(N,)`` and the name
of the source actually used, so a run that fell back to the offline photos says so in
its metrics.
"""

from __future__ import annotations

import functools
import logging
import socket
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import skimage.data
import torch
from PIL import Image
from torch import Tensor
from torchvision import datasets, transforms

from gradinv_exp.config import DatasetConfig, check_range
from gradinv_exp.options import ConfigError, Registry, require

log = logging.getLogger(__name__)

Transform = Callable[[Image.Image], Tensor]
Opener = Callable[[DatasetConfig, Transform], torch.utils.data.Dataset]


@dataclass(frozen=True)
class Source:
    """One option of the ``dataset`` group: how to open its train split.

    ``open(cfg, transform)`` returns a map-style data set of ``(image (C, H, W), label)``.
    ``archive``: what a user places in ``dataset.root`` to use it without internet (the
    torchvision data sets); None for data that needs no download. The facts a config
    check needs (image size, channels, classes, number of images) are fields of the
    option's YAML, ``conf/dataset/<name>.yaml``.
    """

    name: str
    open: Opener
    archive: str | None = None


DATASETS: Registry[Source] = Registry("dataset")


def dataset(name: str) -> Callable[[Opener], Opener]:
    """Register the decorated ``(cfg, transform) -> Dataset`` as data set ``name``."""

    def register(fn: Opener) -> Opener:
        DATASETS.add(Source(name, fn))
        return fn

    return register


DOWNLOAD_TIMEOUT_S = 20.0  # a blocked network must not hang a run for minutes


def transform(cfg: DatasetConfig) -> transforms.Compose:
    """The seed's preprocessing: Resize, CenterCrop, ToTensor, after converting the image
    to the dataset's colour mode (grey for 1 channel, RGB for 3)."""
    mode = "L" if cfg.channels == 1 else "RGB"
    return transforms.Compose(
        [
            transforms.Lambda(lambda image: image.convert(mode)),
            transforms.Resize(cfg.image_size),
            transforms.CenterCrop(cfg.image_size),
            transforms.ToTensor(),
        ]
    )


# --- torchvision -------------------------------------------------------------------


def _torchvision(cls: Callable[..., datasets.VisionDataset]) -> Opener:
    """Open ``cls``'s train split from ``cfg.root``, downloading (with a socket timeout)
    when it is not there and ``cfg.download`` allows it."""

    def open_split(cfg: DatasetConfig, tf: Transform) -> datasets.VisionDataset:
        try:
            return cls(cfg.root, train=True, transform=tf, download=False)
        except RuntimeError:
            if not cfg.download:
                raise
        previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
        try:
            return cls(cfg.root, train=True, transform=tf, download=True)
        except Exception as err:  # urllib raises URLError, socket errors, HTTP errors ...
            raise RuntimeError(f"download failed: {err}") from err
        finally:
            socket.setdefaulttimeout(previous)

    return open_split


DATASETS.add(
    Source(
        "cifar100",
        _torchvision(datasets.CIFAR100),
        archive="cifar-100-python.tar.gz (or its extracted folder cifar-100-python/)",
    )
)
DATASETS.add(
    Source(
        "cifar10",
        _torchvision(datasets.CIFAR10),
        archive="cifar-10-python.tar.gz (or its extracted folder cifar-10-batches-py/)",
    )
)
DATASETS.add(
    Source(
        "mnist",
        _torchvision(datasets.MNIST),
        archive="the MNIST/raw/ folder with the four *-ubyte.gz files",
    )
)
DATASETS.add(
    Source(
        "fashion_mnist",
        _torchvision(datasets.FashionMNIST),
        archive="the FashionMNIST/raw/ folder with the four *-ubyte.gz files",
    )
)


# --- offline: scikit-image's bundled images ---------------------------------------

# scikit-image ships these photographs inside its wheel, so they need no download. The
# order is part of the data set: photo i has label i % num_classes.
PHOTOS: tuple[str, ...] = (
    "hubble_deep_field",
    "coffee",
    "chelsea",
    "rocket",
    "immunohistochemistry",
    "astronaut",  # 25 % 10: the photo CIFAR-100's default index falls back to
    "retina",
    "camera",
    "coins",
    "moon",
)


def photo(name: str) -> Image.Image:
    """One bundled scikit-image photograph as an RGB PIL image."""
    array = getattr(skimage.data, name)()
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    return Image.fromarray(array[..., :3].astype(np.uint8))


class Photos(torch.utils.data.Dataset):
    """The offline data set: scikit-image's photographs, label = position % num_classes."""

    def __init__(self, num_classes: int, transform: Transform) -> None:
        self.num_classes = num_classes
        self.transform = transform

    def __len__(self) -> int:
        return len(PHOTOS)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return self.transform(photo(PHOTOS[i])), i % self.num_classes


@dataset("photos")
def photos(cfg: DatasetConfig, tf: Transform) -> Photos:
    return Photos(cfg.num_classes, tf)


class LfwSubset(torch.utils.data.Dataset):
    """scikit-image's bundled ``lfw_subset``: 200 real 25x25 grey images, the first 100
    faces (label 1) and the other 100 non-faces (label 0). Labelled and offline, so the
    utility experiment can train and test on it."""

    def __init__(self, transform: Transform) -> None:
        self.images = skimage.data.lfw_subset()  # (200, 25, 25) float64 in [0, 1]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        grey = Image.fromarray((self.images[i] * 255).round().astype(np.uint8))  # 2-D: "L"
        return self.transform(grey), int(i < len(self.images) // 2)


@dataset("lfw")
def lfw(cfg: DatasetConfig, tf: Transform) -> LfwSubset:
    return LfwSubset(tf)


# --- the user's own images ----------------------------------------------------------


def read_image(path: str) -> Image.Image:
    """Load one image file; a file PIL cannot decode is a ConfigError naming it."""
    try:
        with Image.open(path) as image:
            image.load()
            return image.copy()
    except OSError as err:  # PIL.UnidentifiedImageError and truncated files are OSErrors
        raise ConfigError(f"dataset.root: cannot read image file {path!r} ({err})") from None


@functools.lru_cache(maxsize=16)  # a sweep's preflight checks the same folder per job
def check_folder(root: str, num_classes: int) -> int:
    """Fail early, with one line naming the path, if ``root`` is not a usable ImageFolder;
    return its number of images.

    Checks: the folder exists, holds class sub-folders with image files, has at most
    ``num_classes`` classes, and every image file opens (PIL ``verify``).
    """
    path = Path(root).expanduser()
    if not path.is_dir():
        raise ConfigError(f"dataset.root={root!r} is not allowed: no such folder")
    try:
        found = datasets.ImageFolder(str(path))
    except FileNotFoundError as err:  # no class folders, or a class folder without images
        reason = textwrap.shorten(str(err).split(". Supported")[0], 160, placeholder=" ...")
        raise ConfigError(
            f"dataset.root={root!r} is not allowed: {reason} (expected "
            f"image files in class sub-folders: {root}/<class>/<image>.png)"
        ) from None
    require(
        len(found.classes) <= num_classes,
        "dataset.num_classes",
        num_classes,
        f"{root!r} has {len(found.classes)} class folders, so it must be >= {len(found.classes)}",
    )
    for file, _ in found.samples:
        try:
            with Image.open(file) as image:
                image.verify()
        except Exception as err:  # PIL raises many types for broken files
            raise ConfigError(f"dataset.root: cannot read image file {file!r} ({err})") from None
    return len(found.samples)


@dataset("folder")
def folder(cfg: DatasetConfig, tf: Transform) -> datasets.ImageFolder:
    """The user's images: ``root/<class>/<image>``, label = class index (sorted names)."""
    check_folder(cfg.root, cfg.num_classes)
    return datasets.ImageFolder(str(Path(cfg.root).expanduser()), transform=tf, loader=read_image)


# --- loading ------------------------------------------------------------------------


def check(cfg: DatasetConfig, attacked: int) -> None:
    """The checks that need the disk, before any work: the folder data set's images exist
    and hold the ``attacked`` images from ``cfg.index`` on."""
    if cfg.name == "folder":
        check_range(cfg, attacked, check_folder(cfg.root, cfg.num_classes))


def open_dataset(cfg: DatasetConfig) -> tuple[torch.utils.data.Dataset, str]:
    """The data set named by ``cfg``, or the offline photos when it cannot be had.

    Returns the data set and the name of its source ("cifar100", "photos", ...).
    """
    tf = transform(cfg)
    source = DATASETS[cfg.name]
    if source.archive is None:
        return source.open(cfg, tf), cfg.name
    try:
        return source.open(cfg, tf), cfg.name
    except (RuntimeError, OSError) as err:  # not on disk, and download failed or was off
        hint = (
            f"put {source.archive} into dataset.root={str(Path(cfg.root).resolve())!r}"
            f" or run once with internet and dataset.download=true"
        )
        if not cfg.offline_fallback:
            raise ConfigError(f"dataset {cfg.name} is not available ({err}); {hint}") from err
        log.warning(
            "!!! dataset %s is not available (%s). Using the bundled offline photos "
            "instead (metrics.json records data_source=photos). To use the real data, %s.",
            cfg.name,
            str(err).splitlines()[0],
            hint,
        )
        return Photos(cfg.num_classes, tf), "photos"


def _items(dataset: torch.utils.data.Dataset, start: int, count: int) -> tuple[Tensor, Tensor]:
    """``count`` images and labels from ``start`` on, wrapping around the data set."""
    size = len(dataset)
    items = [dataset[(start + i) % size] for i in range(count)]
    images = torch.stack([img for img, _ in items])
    return images, torch.tensor([label for _, label in items], dtype=torch.long)


def load(cfg: DatasetConfig, count: int) -> tuple[Tensor, Tensor, str]:
    """Images ``(count, C, H, W)`` in [0, 1], labels ``(count,)`` and the source's name, from
    ``cfg.index`` on.

    On the offline fallback the indices wrap around the photos (CIFAR-100's index 25
    becomes photo 25 % 10); a real data set too small for the request is an error.
    """
    dataset, source = open_dataset(cfg)
    if source == cfg.name:
        check_range(cfg, count, len(dataset))
    return (*_items(dataset, cfg.index, count), source)


def load_after(
    cfg: DatasetConfig, attacked: int, count: int, key: str = "model.pretrain_images"
) -> tuple[Tensor, Tensor]:
    """The ``count`` images ``(count, C, H, W)`` and labels ``(count,)`` right after the
    ``attacked`` ones from ``cfg.index`` on, wrapping around: never an attacked one (the
    data the model is pretrained on, the data a server has of its own). ``key`` is the
    setting that asked for ``count`` (named when there are not enough)."""
    dataset, source = open_dataset(cfg)
    require(
        attacked + count <= len(dataset),
        key,
        count,
        f"{source} has {len(dataset)} images and {attacked} are attacked, so at most "
        f"{len(dataset) - attacked} are left",
    )
    return _items(dataset, cfg.index + attacked, count)
