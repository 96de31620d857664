"""Images under attack: torchvision data sets, the user's own folder of images, or real
photos bundled with scikit-image.

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
from pathlib import Path

import numpy as np
import skimage.data
import torch
from PIL import Image
from torch import Tensor
from torchvision import datasets, transforms

from gradinv_exp.checks import ConfigError, require
from gradinv_exp.config import DatasetConfig

log = logging.getLogger(__name__)

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

TORCHVISION: dict[str, Callable[..., datasets.VisionDataset]] = {
    "cifar100": datasets.CIFAR100,
    "cifar10": datasets.CIFAR10,
    "mnist": datasets.MNIST,
    "fashion_mnist": datasets.FashionMNIST,
}

# What a user must place in `dataset.root` to use the real data without internet.
ARCHIVES: dict[str, str] = {
    "cifar100": "cifar-100-python.tar.gz (or its extracted folder cifar-100-python/)",
    "cifar10": "cifar-10-python.tar.gz (or its extracted folder cifar-10-batches-py/)",
    "mnist": "the MNIST/raw/ folder with the four *-ubyte.gz files",
    "fashion_mnist": "the FashionMNIST/raw/ folder with the four *-ubyte.gz files",
}

# Train-split sizes, known without opening the data, so preflight can reject an index
# beyond the data set before any job starts. A data set missing here is checked on load.
SIZES: dict[str, int] = {
    "photos": len(PHOTOS),
    "lfw": 200,  # scikit-image's lfw_subset
    "cifar100": 50_000,
    "cifar10": 50_000,
    "mnist": 60_000,
}

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


def photo(name: str) -> Image.Image:
    """One bundled scikit-image photograph as an RGB PIL image."""
    array = getattr(skimage.data, name)()
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    return Image.fromarray(array[..., :3].astype(np.uint8))


class Photos(torch.utils.data.Dataset):
    """The offline data set: scikit-image's photographs, label = position % num_classes."""

    def __init__(self, num_classes: int, transform: Callable[[Image.Image], Tensor]) -> None:
        self.num_classes = num_classes
        self.transform = transform

    def __len__(self) -> int:
        return len(PHOTOS)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return self.transform(photo(PHOTOS[i])), i % self.num_classes


class LfwSubset(torch.utils.data.Dataset):
    """scikit-image's bundled ``lfw_subset``: 200 real 25x25 grey images, the first 100
    faces (label 1) and the other 100 non-faces (label 0). Labelled and offline, so the
    utility experiment can train and test on it."""

    def __init__(self, num_classes: int, transform: Callable[[Image.Image], Tensor]) -> None:
        self.images = skimage.data.lfw_subset()  # (200, 25, 25) float64 in [0, 1]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        grey = Image.fromarray((self.images[i] * 255).round().astype(np.uint8))  # 2-D: "L"
        return self.transform(grey), int(i < len(self.images) // 2)


def read_image(path: str) -> Image.Image:
    """Load one image file; a file PIL cannot decode is a ConfigError naming it."""
    try:
        with Image.open(path) as image:
            image.load()
            return image.copy()
    except OSError as err:  # PIL.UnidentifiedImageError and truncated files are OSErrors
        raise ConfigError(f"dataset.root: cannot read image file {path!r} ({err})") from None


@functools.lru_cache(maxsize=16)  # a sweep's preflight checks the same folder per job
def check_folder(root: str, num_classes: int) -> None:
    """Fail early, with one line naming the path, if ``root`` is not a usable ImageFolder.

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


def check(cfg: DatasetConfig) -> None:
    """Checks that need the disk (only the folder data set has any), before any work."""
    if cfg.name == "folder":
        check_folder(cfg.root, cfg.num_classes)


def folder(cfg: DatasetConfig, tf: Callable[[Image.Image], Tensor]) -> datasets.ImageFolder:
    """The user's images: ``root/<class>/<image>``, label = class index (sorted names)."""
    check_folder(cfg.root, cfg.num_classes)
    return datasets.ImageFolder(str(Path(cfg.root).expanduser()), transform=tf, loader=read_image)


LOCAL: dict[str, Callable[[DatasetConfig, Callable], torch.utils.data.Dataset]] = {
    "photos": lambda cfg, tf: Photos(cfg.num_classes, tf),
    "folder": folder,
    "lfw": lambda cfg, tf: LfwSubset(cfg.num_classes, tf),
}


def open_dataset(cfg: DatasetConfig) -> tuple[torch.utils.data.Dataset, str]:
    """The data set named by ``cfg``, or the offline photos when it cannot be had.

    Returns the data set and the name of its source ("cifar100", "photos", ...).
    """
    tf = transform(cfg)
    if cfg.name in LOCAL:
        return LOCAL[cfg.name](cfg, tf), cfg.name
    if cfg.name not in TORCHVISION:
        raise ConfigError(
            f"dataset.name={cfg.name!r} is not allowed: choose one of "
            + ", ".join([*LOCAL, *TORCHVISION])
        )
    try:
        return _torchvision(cfg, tf), cfg.name
    except (RuntimeError, OSError) as err:  # not on disk, and download failed or was off
        hint = (
            f"put {ARCHIVES[cfg.name]} into dataset.root={str(Path(cfg.root).resolve())!r}"
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


def _torchvision(cfg: DatasetConfig, tf: Callable[[Image.Image], Tensor]) -> datasets.VisionDataset:
    """Open the torchvision train split, downloading with a socket timeout if allowed."""
    cls = TORCHVISION[cfg.name]
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


def check_range(name: str, index: int, count: int, size: int | None = None) -> None:
    """ConfigError unless images ``index .. index + count - 1`` exist in data set ``name``
    of ``size`` images (default: its known size in ``SIZES``; unknown -> no check)."""
    size = SIZES.get(name) if size is None else size
    if size is not None and index + count > size:
        raise ConfigError(
            f"dataset.index={index} is not allowed: {name} has {size} images and the "
            f"run needs {count} from the index on, so index must be <= {size - count}"
        )


def load(cfg: DatasetConfig, count: int) -> tuple[Tensor, Tensor, str]:
    """Images ``(count, C, H, W)`` in [0, 1] and labels ``(count,)`` from ``cfg.index`` on.

    On the offline fallback the indices wrap around the photos (CIFAR-100's index 25
    becomes photo 25 % 10); a real data set too small for the request is an error.
    """
    dataset, source = open_dataset(cfg)
    size = len(dataset)
    if source == cfg.name:
        check_range(cfg.name, cfg.index, count, size)
    items = [dataset[(cfg.index + i) % size] for i in range(count)]
    images = torch.stack([img for img, _ in items])
    labels = torch.tensor([label for _, label in items], dtype=torch.long)
    return images, labels, source
