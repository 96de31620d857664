"""The ``dataset`` group: its schema (``DatasetConfig``) and the images under attack,
from torchvision data sets, the user's own folder of images, or real photographs that
ship inside installed packages (ten whole photos, or 4096 distinct crops of them: the
offline fallback); and how a run deals a data set out.

A run's images are dealt once by a seeded permutation (``split``): the server's own part
(public images, pretraining, a learned attacker's auxiliary set; ``server_images``) and
the clients' part, disjoint. ``draw`` takes the attacked batches from the clients' part,
IID or with a Dirichlet label skew per client, ``dataset.index`` pinned first. Both
return images ``(N, C, H, W)`` in [0, 1] and integer labels ``(N,)``; ``draw`` also names
the source actually used, so a run that fell back to the offline crops says so in its
metrics. Torch, torchvision and the image libraries load on first use, so that the
schema is checked before they load.
"""

from __future__ import annotations

import functools
import logging
import math
import socket
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Protocol

from omegaconf import MISSING

from gradinv_exp.base import lazy
from gradinv_exp.base.options import ConfigError, Registry, require

if TYPE_CHECKING:
    import numpy as np
    import torch
    from matplotlib import cbook
    from PIL import Image
    from skimage import data as skimage_data
    from torch import Tensor
    from torchvision import datasets, transforms
else:  # loaded on first use: the dataset group's schema is checked before torch loads
    np = lazy.module("numpy", __name__, "np")
    torch = lazy.module("torch", __name__)
    cbook = lazy.module("matplotlib.cbook", __name__, "cbook")
    Image = lazy.module("PIL.Image", __name__, "Image")
    skimage_data = lazy.module("skimage.data", __name__, "skimage_data")
    datasets = lazy.module("torchvision.datasets", __name__, "datasets")
    transforms = lazy.module("torchvision.transforms", __name__, "transforms")

log = logging.getLogger(__name__)

# --- the schema ----------------------------------------------------------------------


@dataclass
class DatasetConfig:
    """Where images come from, how a run deals them out, and the facts a model and a range
    check need about them.

    A run deals the data set's images once, by a seeded permutation (the run's ``seed``,
    its own stream): ``server_fraction`` of them are the server's own (its public images,
    pretraining data, a learned attacker's auxiliary set), the rest the clients'; the two
    parts are disjoint. Every attacked batch is drawn from the clients' part at random,
    and the batches of a run are disjoint: trial t's clients hold the next
    ``clients x batch_size`` images of that part's random order (IID), or, with ``alpha``
    set, images drawn per client from a Dirichlet(alpha) label distribution (non-IID).

    ``index`` pins one image: null (the default), every image is drawn; an index i makes
    image i the run's first attacked image (trial 0's first client's first image) and a
    client's image, never the server's; the others are drawn as always. So the default
    run (CIFAR-100, ``index: 25``, one image, one trial) attacks the original notebook's image,
    whatever the seed, and more trials or a larger batch add random images to it.
    """

    name: str = MISSING
    root: str = "data"  # torchvision root folder holding (or receiving) the archive
    download: bool = True  # let torchvision download when the data is not in `root`
    offline_fallback: bool = True  # no data and no internet: warn and use the bundled crops
    index: Optional[int] = None  # the run's first attacked image; null: every image drawn
    batch_size: int = 1
    image_size: int = 32
    channels: int = 3
    num_classes: int = 100
    size: Optional[int] = None  # images in the train split; null: known only on disk
    mean: Optional[list[float]] = None  # normalisation inside the model; None = identity
    std: Optional[list[float]] = None
    server_fraction: float = 0.5  # of the images, the server's own (never a client's)
    alpha: Optional[float] = None  # non-IID: each client's labels ~ Dirichlet(alpha); null: IID

    def __post_init__(self) -> None:
        require(
            self.index is None or self.index >= 0, "dataset.index", self.index,
            "must be null (every image drawn at random) or an index >= 0",
        )  # fmt: skip
        require(self.batch_size >= 1, "dataset.batch_size", self.batch_size, "must be >= 1")
        require(
            8 <= self.image_size <= 4096,
            "dataset.image_size",
            self.image_size,
            "must be an integer in [8, 4096]",
        )
        require(self.channels in (1, 3), "dataset.channels", self.channels, "must be 1 or 3")
        require(self.num_classes >= 2, "dataset.num_classes", self.num_classes, "must be >= 2")
        require(
            self.size is None or self.size >= 1, "dataset.size", self.size, "must be null or >= 1"
        )
        for key, stats in (("dataset.mean", self.mean), ("dataset.std", self.std)):
            require(
                stats is None or len(stats) == self.channels,
                key,
                stats,
                f"must be null or a list of {self.channels} numbers (one per channel)",
            )
        require(
            self.mean is None or all(math.isfinite(m) for m in self.mean),
            "dataset.mean",
            self.mean,
            "must be finite numbers",
        )
        require(
            self.std is None or all(math.isfinite(s) and s > 0 for s in self.std),
            "dataset.std",
            self.std,
            "must be finite numbers > 0",
        )
        require(
            0 <= self.server_fraction < 1,
            "dataset.server_fraction",
            self.server_fraction,
            "must be in [0, 1) (the clients need images)",
        )
        require(
            self.alpha is None or (math.isfinite(self.alpha) and self.alpha > 0),
            "dataset.alpha",
            self.alpha,
            "must be null (IID) or a finite number > 0",
        )

    def server_images(self, size: int) -> int:
        """How many of ``size`` images are the server's own."""
        return math.floor(self.server_fraction * size)


def check_range(ds: DatasetConfig, count: int, size: int | None = None) -> None:
    """ConfigError unless the clients' part of a data set of ``size`` images (default
    ``ds.size``; unknown -> no check) holds ``count`` distinct images (``trials x
    clients x dataset.batch_size``) and ``ds.index`` is one of the images."""
    size = ds.size if size is None else size
    if size is None:
        return
    require(
        ds.index is None or ds.index < size,
        "dataset.index",
        ds.index,
        f"{ds.name} has {size} images, so it must be null or < {size}",
    )
    clients = size - ds.server_images(size)
    if count <= clients:
        return
    part = (
        f"{ds.name} has {size} images and {clients} of them are the clients' "
        f"(dataset.server_fraction={ds.server_fraction})"
    )
    if ds.batch_size > clients:  # one batch alone is too big
        raise ConfigError(
            f"dataset.batch_size={ds.batch_size} is not allowed: the run attacks {count} "
            f"distinct images (trials x clients x dataset.batch_size) and {part}"
        )
    trials = count // ds.batch_size
    raise ConfigError(
        f"trials={trials} is not allowed: the run attacks {count} distinct images (trials "
        f"x clients x dataset.batch_size={ds.batch_size}) and {part}, so at most "
        f"{clients // ds.batch_size} batches"
    )


# --- the options --------------------------------------------------------------------


class Images(Protocol):
    """A map-style data set: ``len`` images, item i = ``(image (C, H, W) in [0, 1], label)``
    (torchvision's data sets and the bundled ones)."""

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> tuple[Tensor, int]: ...


Transform = Callable[["Image.Image"], "Tensor"]
Opener = Callable[[DatasetConfig, Transform], Images]


@dataclass(frozen=True)
class Source:
    """One option of the ``dataset`` group: how to open its train split.

    ``open(cfg, transform)`` returns a map-style data set of ``(image (C, H, W), label)``.
    ``archive``: what a user places in ``dataset.root`` to use it without internet (the
    torchvision data sets); None for data that needs no download. The facts a config
    check needs (image size, channels, classes, number of images) are fields of the
    option's YAML, ``conf/dataset/<name>.yaml``; ``check(cfg, attacked)``: the checks that
    need the disk, run before any work (the folder data set counts its images there).
    """

    name: str
    open: Opener
    archive: str | None = None
    check: Callable[[DatasetConfig, int], None] | None = None


DATASETS: Registry[Source] = Registry("dataset")


def dataset(
    name: str, check: Callable[[DatasetConfig, int], None] | None = None
) -> Callable[[Opener], Opener]:
    """Register the decorated ``(cfg, transform) -> Dataset`` as data set ``name``
    (``check``: ``Source.check``)."""

    def register(fn: Opener) -> Opener:
        DATASETS.add(Source(name, fn, check=check))
        return fn

    return register


DOWNLOAD_TIMEOUT_S = 20.0  # a blocked network must not hang a run for minutes


def transform(cfg: DatasetConfig) -> transforms.Compose:
    """The original notebook's preprocessing: Resize, CenterCrop, ToTensor, after converting
    the image to the dataset's colour mode (grey for 1 channel, RGB for 3)."""
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


def _torchvision(name: str) -> Opener:
    """Open ``torchvision.datasets.<name>``'s train split from ``cfg.root``, downloading
    (with a socket timeout) when it is not there and ``cfg.download`` allows it."""

    def open_split(cfg: DatasetConfig, tf: Transform) -> datasets.VisionDataset:
        cls = getattr(datasets, name)
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
        _torchvision("CIFAR100"),
        archive="cifar-100-python.tar.gz (or its extracted folder cifar-100-python/)",
    )
)
DATASETS.add(
    Source(
        "cifar10",
        _torchvision("CIFAR10"),
        archive="cifar-10-python.tar.gz (or its extracted folder cifar-10-batches-py/)",
    )
)
DATASETS.add(
    Source(
        "mnist",
        _torchvision("MNIST"),
        archive="the MNIST/raw/ folder with the four *-ubyte.gz files",
    )
)
DATASETS.add(
    Source(
        "fashion_mnist",
        _torchvision("FashionMNIST"),
        archive="the FashionMNIST/raw/ folder with the four *-ubyte.gz files",
    )
)


# --- offline: photographs that ship inside installed packages --------------------------

# scikit-image ships these photographs inside its wheel, so they need no download. The
# order is part of the data set: photo i has label i % num_classes. The first is the one
# a run of dataset=photos shows first, so it is a recognisable one.
PHOTOS: tuple[str, ...] = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "immunohistochemistry",
    "hubble_deep_field",
    "retina",
    "camera",
    "coins",
    "moon",
)


@functools.lru_cache(maxsize=32)  # decoded once per process; callers only read it
def photo(name: str) -> Image.Image:
    """One bundled photograph as an RGB PIL image: ``skimage.data.<name>()``, the left
    image of scikit-image's ``stereo_motorcycle`` (``motorcycle``), or matplotlib's sample
    photograph ``grace_hopper``: all inside the installed wheels."""
    if name == "grace_hopper":
        with cbook.get_sample_data("grace_hopper.jpg") as file:
            return Image.open(file).convert("RGB")
    array = skimage_data.stereo_motorcycle()[0] if name == "motorcycle" else None
    array = getattr(skimage_data, name)() if array is None else array
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    return Image.fromarray(array[..., :3].astype(np.uint8))


class Photos:
    """The ten photographs, label = position % num_classes."""

    def __init__(self, num_classes: int, transform: Transform) -> None:
        self.num_classes = num_classes
        self.transform = transform
        self.targets = [i % num_classes for i in range(len(PHOTOS))]

    def __len__(self) -> int:
        return len(PHOTOS)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return self.transform(photo(PHOTOS[i])), self.targets[i]


@dataset("photos")
def photos(cfg: DatasetConfig, tf: Transform) -> Photos:
    return Photos(cfg.num_classes, tf)


# The natural photographs the crops are cut from (crop i from photo i % 17, label photo %
# num_classes); the synthetic images of skimage.data (colour wheel, logo, phantom ...) and
# the scanned pages (page, text) are left out. astronaut is photo 8 = 25 % 17: the default
# run (CIFAR-100's index 25) falls back to crop 25, its space shuttle, a recognisable image
# that the default DLG run reconstructs.
CROP_SOURCES: tuple[str, ...] = (
    "camera", "chelsea", "coffee", "coins", "rocket", "moon", "immunohistochemistry",
    "hubble_deep_field", "astronaut", "retina", "clock", "brick", "grass", "gravel", "cell",
    "motorcycle", "grace_hopper",
)  # fmt: skip
CROPS = 4096  # images of dataset=crops (conf/dataset/crops.yaml's size)
CROP_SCALE = (0.1, 0.9)  # a crop's side, as a fraction of the photograph's shorter side
MIN_CONTRAST = 0.04  # a crop whose 16x16 grey thumbnail has a smaller std (sky) is redrawn
MIN_DISTANCE = 0.05  # ... and one within this RMS of an earlier crop of its photograph


@dataclass(frozen=True)
class Crop:
    """One image of ``dataset=crops``: the square ``box`` (left, top, right, bottom) of
    photograph ``CROP_SOURCES[source]``, mirrored when ``flip``."""

    source: int
    box: tuple[int, int, int, int]
    flip: bool


def _thumbnail(grey: Image.Image, factor: float, crop: Crop) -> np.ndarray:
    """The crop as a 16x16 grey thumbnail ``(256,)`` in [0, 1], cut from the photograph
    reduced by ``factor`` (``grey``): what the contrast and distance tests compare."""
    left, top, right, bottom = (v * factor for v in crop.box)
    box = (left, top, min(right, grey.width), min(bottom, grey.height))
    thumb = np.asarray(grey.resize((16, 16), Image.BILINEAR, box=box), dtype=np.float32) / 255
    return (thumb[:, ::-1] if crop.flip else thumb).ravel()


@functools.lru_cache(maxsize=1)
def crops() -> tuple[Crop, ...]:
    """The ``CROPS`` crops, fixed (seeded by their index, not by a run's seed): crop i
    comes from photograph ``i % len(CROP_SOURCES)``, with a side log-uniform in
    ``CROP_SCALE`` of its shorter side, a uniform position and a coin-flip mirror; a draw
    that is nearly flat or within ``MIN_DISTANCE`` of an earlier crop of the same
    photograph is redrawn, so the images are distinct. About 2 s, once per process."""
    greys, factors = [], []
    for name in CROP_SOURCES:
        grey = photo(name).convert("L")
        factor = 128 / min(grey.size)  # thumbnails come from a 128 px copy: 10x faster
        greys.append(grey.resize((round(grey.width * factor), round(grey.height * factor))))
        factors.append(factor)
    kept: list[list[np.ndarray]] = [[] for _ in CROP_SOURCES]
    out = []
    low, high = np.log(CROP_SCALE[0]), np.log(CROP_SCALE[1])
    for i in range(CROPS):
        k = i % len(CROP_SOURCES)
        width, height = photo(CROP_SOURCES[k]).size
        rng = np.random.default_rng([0, i])
        while True:
            side = round(min(width, height) * np.exp(rng.uniform(low, high)))
            left, top = (
                int(rng.integers(0, width - side + 1)),
                int(rng.integers(0, height - side + 1)),
            )
            crop = Crop(k, (left, top, left + side, top + side), bool(rng.random() < 0.5))
            thumb = _thumbnail(greys[k], factors[k], crop)
            if thumb.std() < MIN_CONTRAST:
                continue
            if kept[k] and np.sqrt(((np.stack(kept[k]) - thumb) ** 2).mean(1)).min() < MIN_DISTANCE:
                continue
            kept[k].append(thumb)
            out.append(crop)
            break
    return tuple(out)


class Crops:
    """``dataset=crops``: ``CROPS`` distinct natural images, square crops of the bundled
    photographs rescaled to the image size (``crops()``); label = photograph % num_classes.
    The offline fallback, and the data the tests' statistics and a learned attacker's
    auxiliary set come from when no real data set is on disk."""

    def __init__(self, num_classes: int, image_size: int, transform: Transform) -> None:
        self.image_size = image_size
        self.transform = transform
        self.targets = [i % len(CROP_SOURCES) % num_classes for i in range(CROPS)]

    def __len__(self) -> int:
        return CROPS

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        crop = crops()[i]
        size = (self.image_size, self.image_size)
        image = photo(CROP_SOURCES[crop.source]).resize(
            size, Image.BILINEAR, box=crop.box, reducing_gap=2.0
        )
        if crop.flip:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return self.transform(image), self.targets[i]


@dataset("crops")
def natural_crops(cfg: DatasetConfig, tf: Transform) -> Crops:
    return Crops(cfg.num_classes, cfg.image_size, tf)


class LfwSubset:
    """scikit-image's bundled ``lfw_subset``: 200 real 25x25 grey images, the first 100
    faces (label 1) and the other 100 non-faces (label 0). Labelled and offline, so the
    utility experiment can train and test on it."""

    def __init__(self, transform: Transform) -> None:
        self.images = skimage_data.lfw_subset()  # (200, 25, 25) float64 in [0, 1]
        self.transform = transform
        self.targets = [int(i < len(self.images) // 2) for i in range(len(self.images))]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        grey = Image.fromarray((self.images[i] * 255).round().astype(np.uint8))  # 2-D: "L"
        return self.transform(grey), self.targets[i]


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


def check_folder_part(cfg: DatasetConfig, attacked: int) -> None:
    """The folder's images exist and its clients' part holds the ``attacked`` images."""
    check_range(cfg, attacked, check_folder(cfg.root, cfg.num_classes))


@dataset("folder", check=check_folder_part)
def folder(cfg: DatasetConfig, tf: Transform) -> datasets.ImageFolder:
    """The user's images: ``root/<class>/<image>``, label = class index (sorted names)."""
    check_folder(cfg.root, cfg.num_classes)
    return datasets.ImageFolder(str(Path(cfg.root).expanduser()), transform=tf, loader=read_image)


# --- loading ------------------------------------------------------------------------


def check(cfg: DatasetConfig, attacked: int) -> None:
    """The data set's checks that need the disk (``Source.check``), before any work."""
    source = DATASETS[cfg.name]
    if source.check is not None:
        source.check(cfg, attacked)


def open_dataset(cfg: DatasetConfig) -> tuple[Images, str]:
    """The data set named by ``cfg``, or the offline crops when it cannot be had.

    Returns the data set and the name of its source ("cifar100", "crops", ...).
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
            "!!! dataset %s is not available (%s). Using the bundled offline crops of "
            "photographs instead (metrics.json records data_source=crops). To use the real "
            "data, %s.",
            cfg.name,
            str(err).splitlines()[0],
            hint,
        )
        return Crops(cfg.num_classes, cfg.image_size, tf), "crops"


def _items(dataset: Images, indices: Sequence[int]) -> tuple[Tensor, Tensor]:
    """The images ``(len(indices), C, H, W)`` and labels ``(len(indices),)`` at ``indices``."""
    items = [dataset[int(i)] for i in indices]
    images = torch.stack([img for img, _ in items])
    return images, torch.tensor([label for _, label in items], dtype=torch.long)


def load(cfg: DatasetConfig, count: int) -> tuple[Tensor, Tensor, str]:
    """The data set's images in its own order: ``count`` images ``(count, C, H, W)`` in
    [0, 1] and labels ``(count,)`` from ``cfg.index`` (null: 0) on, and the source's name.
    For scripts and tests that want particular images; a run draws its images with
    ``draw`` and ``server_images``.

    On the offline fallback the indices wrap around the crops; a real data set too small
    for the request is an error.
    """
    dataset, source = open_dataset(cfg)
    first = cfg.index or 0
    require(
        source != cfg.name or first + count <= len(dataset),
        "dataset.index",
        first,
        f"{source} has {len(dataset)} images, so at most {len(dataset) - count} to load "
        f"{count} from it on",
    )
    return (*_items(dataset, [(first + i) % len(dataset) for i in range(count)]), source)


# --- splits and draws: pure functions of the config and the run's "data" stream --------


@dataclass(frozen=True)
class Split:
    """A data set's images dealt into disjoint parts (indices into the data set):
    ``clients`` (the images clients hold: the pinned ``dataset.index`` first, then a seeded
    random order), ``server`` (the server's own: public images, pretraining, a learned
    attacker's auxiliary set) and ``test`` (the utility experiment's held-out images)."""

    clients: Tensor
    server: Tensor
    test: Tensor


def partition(
    size: int,
    *,
    server: int,
    test: int = 0,
    pinned: int | None = None,
    generator: torch.Generator,
) -> Split:
    """Deal ``size`` images into a ``Split`` of ``test`` test images, ``server`` server
    images and the rest for the clients, by one seeded permutation of the images (one
    ``randperm`` from ``generator``): test first, then server, then clients. ``pinned``
    (an index) is taken out first and leads the clients' part, so it is always a client's
    image and the first one drawn."""
    order = torch.randperm(size, generator=generator)
    if pinned is not None:
        order = order[order != pinned]
    clients = order[test + server :]
    if pinned is not None:
        clients = torch.cat([torch.tensor([pinned]), clients])
    return Split(clients, order[test : test + server], order[:test])


def split(cfg: DatasetConfig, size: int, generator: torch.Generator) -> Split:
    """The run's ``Split`` of a data set of ``size`` images: ``dataset.server_fraction`` of
    them (``cfg.server_images(size)``) the server's, the rest the clients', the image
    ``dataset.index`` (wrapped into range on a smaller fallback) pinned."""
    pinned = None if cfg.index is None else cfg.index % size
    return partition(size, server=cfg.server_images(size), pinned=pinned, generator=generator)


def skewed(
    pool: Tensor, labels: Tensor, sizes: Sequence[int], alpha: float, generator: torch.Generator
) -> Tensor:
    """Indices ``(sum(sizes),)`` from ``pool`` (without replacement until it runs out, then
    again), client by client, ``sizes[k]`` for client k: each client draws a label
    distribution p ~ Dirichlet(alpha) over the pool's classes, then each of its images'
    class from p (among the classes with images left) and the next image of that class in
    the pool's order. ``labels``: every image's label ``(len(data set),)``. A small alpha
    gives each client few classes; a large one approaches the IID draw."""
    rng = np.random.default_rng(int(torch.randint(2**62, (1,), generator=generator)))
    classes = labels[pool].unique().tolist()
    queues = {c: pool[labels[pool] == c].tolist() for c in classes}
    left = {c: list(q) for c, q in queues.items()}
    out: list[int] = []
    for size in sizes:
        p = rng.dirichlet([alpha] * len(classes))
        for _ in range(size):
            if not any(left.values()):  # every image drawn once: start over
                left = {c: list(q) for c, q in queues.items()}
            weights = np.array([p[j] if left[c] else 0.0 for j, c in enumerate(classes)])
            if weights.sum() == 0:  # the client's classes are used up: any class left
                weights = np.array([float(bool(left[c])) for c in classes])
            out.append(left[classes[rng.choice(len(classes), p=weights / weights.sum())]].pop(0))
    return torch.tensor(out, dtype=torch.long)


def labels_of(dataset: Images) -> Tensor:
    """Every image's label ``(len(dataset),)``: the data set's ``targets`` (torchvision's
    and the bundled ones have them), else read item by item."""
    targets = getattr(dataset, "targets", None)
    if targets is None:
        targets = [dataset[i][1] for i in range(len(dataset))]
    return torch.as_tensor(list(targets), dtype=torch.long)


def draw(cfg: DatasetConfig, count: int, generator: torch.Generator) -> tuple[Tensor, Tensor, str]:
    """The images a run attacks: ``count`` images ``(count, C, H, W)`` in [0, 1] and labels
    ``(count,)``, clients' batches of ``dataset.batch_size`` in turn, and the source's name.

    All from the clients' part of ``split`` (``generator``: the run's "data" stream; the
    split takes its first draw). IID (``dataset.alpha`` null): the part's order, so the
    batches are disjoint random draws, ``dataset.index`` (if set) the first image. Non-IID:
    ``skewed`` per client, the pinned image first. A real data set holds the images (the
    config's checks); a smaller offline fallback starts over when its part runs out.
    """
    dataset, source = open_dataset(cfg)
    if source == cfg.name:
        check_range(cfg, count, len(dataset))
    pool = split(cfg, len(dataset), generator).clients
    if cfg.alpha is None:
        chosen = pool[torch.arange(count) % len(pool)]
    else:
        sizes = [min(cfg.batch_size, count - at) for at in range(0, count, cfg.batch_size)]
        pinned = pool[:0] if cfg.index is None else pool[:1]
        sizes[0] -= len(pinned)  # the pinned image is client 0's first
        rest = pool[len(pinned) :]
        chosen = torch.cat([pinned, skewed(rest, labels_of(dataset), sizes, cfg.alpha, generator)])
    return (*_items(dataset, chosen.tolist()), source)


def server_images(
    cfg: DatasetConfig, count: int, generator: torch.Generator, key: str
) -> tuple[Tensor, Tensor]:
    """The server's own ``count`` images ``(count, C, H, W)`` and labels ``(count,)``: the
    first of the server's part of ``split`` (``generator``: the run's "data" stream), so
    never a client's image (the model's pretraining data, an imprint server's public
    images, a learned attacker's auxiliary set). ``key``: the setting that asked for
    ``count``, named when the part is too small."""
    dataset, source = open_dataset(cfg)
    part = split(cfg, len(dataset), generator).server
    require(
        count <= len(part),
        key,
        count,
        f"{source} has {len(dataset)} images and {len(part)} of them are the server's "
        f"(dataset.server_fraction={cfg.server_fraction}), so at most {len(part)}",
    )
    return _items(dataset, part[:count].tolist())
