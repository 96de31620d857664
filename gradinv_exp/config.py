"""Typed schemas for every config group: the single place for field types and defaults.

Each YAML file in ``conf/<group>/`` selects one of these schemas (``defaults: [/schema/...]``)
and only sets the values that are facts of that option (a dataset's size and classes).
Hydra type-checks overrides against the schema; ``__post_init__`` checks ranges (with
``checks.require``), so an out-of-range value fails in ``OmegaConf.to_object`` with one
line, before any work starts. The ``defense`` group's schemas live in ``defense_config.py``;
``SCHEMAS`` here registers every group's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from gradinv_exp.checks import one_of, positive, require
from gradinv_exp.defense_config import DEFENSE_SCHEMAS, DefenseConfig, defense_from

# --- model ---------------------------------------------------------------------------


@dataclass
class ModelConfig:
    """``name`` selects the builder in ``models.MODELS``; shapes come from the dataset.

    The attacked model is the seeded init, then the ``checkpoint``'s weights if given,
    then ``pretrain_steps`` of SGD (``pretrain.py``): real clients share gradients of
    partly trained models, not of a random init.
    """

    name: str = MISSING
    activation: str = "sigmoid"
    init: str = "uniform"  # uniform: U(-init_range, init_range); default: the layers' own
    init_range: float = 0.5  # every weight and bias ~ U(-init_range, init_range)
    checkpoint: Optional[str] = None  # state dict of this model (torch.save(m.state_dict()))
    pretrain_steps: int = 0  # full-batch SGD steps on images other than the attacked ones
    pretrain_lr: float = 0.01
    pretrain_images: int = 8  # the images right after the attacked ones (wrapping around)

    def __post_init__(self) -> None:
        one_of("model.activation", self.activation, ("sigmoid", "relu", "tanh"))
        one_of("model.init", self.init, ("uniform", "default"))
        positive("model.init_range", self.init_range)
        require(
            self.checkpoint is None or self.checkpoint.strip() != "",
            "model.checkpoint",
            self.checkpoint,
            "must be null or the path of a state dict file",
        )
        require(
            self.pretrain_steps >= 0, "model.pretrain_steps", self.pretrain_steps, "must be >= 0"
        )
        positive("model.pretrain_lr", self.pretrain_lr)
        require(
            self.pretrain_images >= 1, "model.pretrain_images", self.pretrain_images, "must be >= 1"
        )


# --- dataset -------------------------------------------------------------------------


@dataclass
class DatasetConfig:
    """Where images come from and the facts a model needs about them."""

    name: str = MISSING
    root: str = "data"  # torchvision root folder holding (or receiving) the archive
    download: bool = True  # let torchvision download when the data is not in `root`
    offline_fallback: bool = True  # no data and no internet: warn and use bundled photos
    index: int = 0  # first image of the run (train split)
    batch_size: int = 1
    image_size: int = 32
    channels: int = 3
    num_classes: int = 100
    mean: Optional[list[float]] = None  # normalisation inside the model; None = identity
    std: Optional[list[float]] = None

    def __post_init__(self) -> None:
        require(self.index >= 0, "dataset.index", self.index, "must be >= 0")
        require(self.batch_size >= 1, "dataset.batch_size", self.batch_size, "must be >= 1")
        require(
            8 <= self.image_size <= 4096,
            "dataset.image_size",
            self.image_size,
            "must be an integer in [8, 4096]",
        )
        require(self.channels in (1, 3), "dataset.channels", self.channels, "must be 1 or 3")
        require(self.num_classes >= 2, "dataset.num_classes", self.num_classes, "must be >= 2")
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


# --- optimizer -----------------------------------------------------------------------


@dataclass
class OptimizerConfig:
    name: str = MISSING
    lr: float = 1.0

    def __post_init__(self) -> None:
        # inf is allowed on purpose: the cheapest way to make an attack diverge in a test
        require(self.lr > 0, "optimizer.lr", self.lr, "must be > 0")


@dataclass
class LBFGSConfig(OptimizerConfig):
    """torch.optim.LBFGS defaults, as the seed uses them."""

    name: str = "lbfgs"
    lr: float = 1.0
    max_iter: int = 20  # closure evaluations per outer step at most
    history_size: int = 100
    tolerance_grad: float = 1e-7
    tolerance_change: float = 1e-9

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.max_iter >= 1, "optimizer.max_iter", self.max_iter, "must be >= 1")
        require(self.history_size >= 1, "optimizer.history_size", self.history_size, "must be >= 1")
        for key, tol in (
            ("optimizer.tolerance_grad", self.tolerance_grad),
            ("optimizer.tolerance_change", self.tolerance_change),
        ):
            require(math.isfinite(tol) and tol >= 0, key, tol, "must be a finite number >= 0")


@dataclass
class AdamConfig(OptimizerConfig):
    name: str = "adam"
    lr: float = 0.1


# --- attack --------------------------------------------------------------------------


@dataclass
class AttackConfig:
    name: str = MISSING
    iterations: int = 300  # outer optimiser steps
    snapshot_every: int = 10  # history row and progress image every N steps (and step 0)

    def __post_init__(self) -> None:
        require(self.iterations >= 1, "attack.iterations", self.iterations, "must be >= 1")
        require(
            self.snapshot_every >= 1, "attack.snapshot_every", self.snapshot_every, "must be >= 1"
        )


@dataclass
class DLGConfig(AttackConfig):
    name: str = "dlg"


@dataclass
class IDLGConfig(AttackConfig):
    """DLG on the data only, with labels read from the gradient (``labels.idlg_labels``)."""

    name: str = "idlg"


@dataclass
class IGConfig(AttackConfig):
    """Inverting Gradients; the optimiser must be Adam (``optimizer=adam``, lr 0.1)."""

    name: str = "ig"
    iterations: int = 4800  # the paper's CIFAR budget
    snapshot_every: int = 100
    tv_weight: float = 1e-4  # weight of the total-variation prior
    boxed: bool = True  # clamp the dummy to [0, 1] after every step
    signed: bool = True  # step on the sign of the image gradient
    restarts: int = 1  # independent starts per trial; the lowest final objective wins
    labels: str = "idlg"  # idlg: read from the gradient; given: the true ones; joint: optimised
    lr_decay: bool = True  # lr x0.1 at 3/8, 5/8, 7/8 of iterations

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.tv_weight >= 0, "attack.tv_weight", self.tv_weight, "must be >= 0")
        require(self.restarts >= 1, "attack.restarts", self.restarts, "must be >= 1")
        one_of("attack.labels", self.labels, ("idlg", "given", "joint"))


# --- the run -------------------------------------------------------------------------


@dataclass
class Config:
    """One experiment. Group fields are filled by the defaults list in conf/config.yaml."""

    defense: DefenseConfig = MISSING
    model: ModelConfig = MISSING
    dataset: DatasetConfig = MISSING
    optimizer: OptimizerConfig = MISSING
    attack: AttackConfig = MISSING
    seed: int = 0  # every random draw (model init, data picks, dummy init, noise)
    device: str = "auto"  # auto = cuda when available, else cpu
    threads: int = 1  # torch intra-op threads; 1 is fastest for these small models
    trials: int = 1  # independent attacks on consecutive images; metrics give mean/std/min/max
    tags: dict[str, Any] = field(default_factory=dict)  # free-form labels copied to metrics

    def __post_init__(self) -> None:
        one_of("device", self.device, ("auto", "cpu", "cuda"))
        require(0 <= self.seed < 2**63, "seed", self.seed, "must be an integer in [0, 2**63)")
        require(self.threads >= 1, "threads", self.threads, "must be >= 1")
        require(self.trials >= 1, "trials", self.trials, "must be >= 1")


def _default_compared() -> list[Any]:
    return [
        {"name": "none"},
        {"name": "dp", "noise_multiplier": 1.0},
        {"name": "clip", "clip": 1.0},
        {"name": "topk", "keep": 0.1},
        {"name": "sign"},
        {"name": "prune", "ratio": 0.2},
        {"name": "quantize", "bits": 4},
        {"name": "noise", "sigma": 1e-3},
    ]


@dataclass
class UtilityConfig:
    """The utility experiment (``python -m gradinv_exp.utility``): federated training of
    ``model`` on ``dataset`` once per defense in ``defenses``, the defense applied to every
    gradient a client shares. Clients use ``dataset.batch_size`` examples per local step."""

    model: ModelConfig = MISSING
    dataset: DatasetConfig = MISSING
    # maps like a chain's steps; soteria is left out by default: its exact Jacobian
    # (F backward passes per shared gradient) makes each step ~200x slower
    defenses: list[Any] = field(default_factory=_default_compared)
    rounds: int = 50  # federated rounds (server averages the clients' updates once each)
    clients: int = 4  # the training split is dealt to them in turn (IID shards)
    local_steps: int = 1  # local SGD steps per round; 1 = FedSGD, the attack's setting
    lr: float = 0.05  # local SGD learning rate
    test_fraction: float = 0.25  # held out (seeded permutation) for test accuracy
    samples: int = 0  # images used from dataset.index on (0 = all; cap large data sets)
    seed: int = 0
    threads: int = 1

    def __post_init__(self) -> None:
        require(len(self.defenses) >= 1, "defenses", self.defenses, "must list a defense")
        self.defenses = [defense_from(d, f"defenses[{i}]") for i, d in enumerate(self.defenses)]
        for key in ("rounds", "clients", "local_steps", "threads"):
            require(getattr(self, key) >= 1, key, getattr(self, key), "must be >= 1")
        require(self.lr > 0, "lr", self.lr, "must be > 0")
        require(self.samples >= 0, "samples", self.samples, "must be >= 0 (0 = all)")
        require(
            0 < self.test_fraction < 1, "test_fraction", self.test_fraction, "must be in (0, 1)"
        )


SCHEMAS: dict[str, dict[str, type]] = {
    "defense": DEFENSE_SCHEMAS,
    "model": {"model": ModelConfig},
    "dataset": {"dataset": DatasetConfig},
    "optimizer": {"lbfgs": LBFGSConfig, "adam": AdamConfig},
    "attack": {"dlg": DLGConfig, "idlg": IDLGConfig, "ig": IGConfig},
}


def pick(index: Any, *values: Any) -> Any:
    """``${pick:INDEX,V0,V1,...}`` -> ``V<INDEX>``: one swept index selects a value per option.

    conf/defense_level/*.yaml use it so that one sweep axis (``tags.level``) sets each
    defense's own strength field (a plain product sweep cannot pair them).
    """
    return values[int(index)]


# Registered on import, so worker processes of parallel launchers resolve it too.
OmegaConf.register_new_resolver("pick", pick, replace=True)


def register() -> None:
    """Store the schemas under ``schema/<group>/<name>`` for the YAML defaults lists."""
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    cs.store(name="utility_schema", node=UtilityConfig)
    for group, schemas in SCHEMAS.items():
        for name, node in schemas.items():
            cs.store(group=f"schema/{group}", name=name, node=node)
