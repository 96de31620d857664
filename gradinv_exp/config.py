"""The typed configs: one experiment (``Config``), the utility experiment
(``UtilityConfig``), and the registration of every group's schemas for Hydra.

Each YAML file in ``conf/<group>/`` selects its schema (``defaults: [/schema/...]``) and
sets only the values that are facts of that option (a data set's size and classes). A
group keeps its schemas beside its options' code (``defenses/``, ``attacks/``,
``client.py``, ``models.py``, ``data.py``, ``servers/``, ``tracking/``); the metrics'
schema is defined here. Hydra type-checks overrides against the schemas;
``__post_init__`` checks ranges and, in ``Config``, the rules that span groups, so a bad
value fails in ``OmegaConf.to_object`` with one line, before any work starts.

No torch here or in the schema modules at import time: the command line checks a whole
sweep before it loads torch (``__main__``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from gradinv_exp.analysis.metric_table import METRICS, PRIMARY, criteria
from gradinv_exp.attacks import ATTACKS, OPTIMIZERS, BaseAttackConfig, OptimizerConfig
from gradinv_exp.base.options import Registry, one_of, require
from gradinv_exp.client import CLIENTS, ClientConfig, check_batch
from gradinv_exp.data import DatasetConfig, check_range
from gradinv_exp.defenses import DEFENSES, DefenseConfig, check_order
from gradinv_exp.defenses.chain import defense_from
from gradinv_exp.models import MODELS, ModelConfig
from gradinv_exp.servers import SERVERS, ServerConfig
from gradinv_exp.tracking import TRACKERS, TrackingConfig

T = TypeVar("T")


def conf_dir() -> Path:
    """The config groups' YAML files: ``gradinv_exp/conf`` in an installed wheel (the
    build maps the repo's top-level ``conf/`` there, see pyproject.toml), else the source
    checkout's top-level ``conf/`` (editable installs, PYTHONPATH)."""
    package = Path(__file__).resolve().parent
    installed = package / "conf"
    return installed if installed.is_dir() else package.parent / "conf"


CONF_DIR = conf_dir()

# --- metrics -------------------------------------------------------------------------


@dataclass
class MetricsConfig:
    """How reconstructions are scored beyond MSE/PSNR/SSIM: LPIPS, and what counts as a
    reconstructed image for ``success_rate``.

    The default criterion, PSNR >= 20 dB, is an RMS error of at most 0.1 on [0, 1]
    images: the image is recognisable. Attacks on these models are bimodal (failed starts
    sit at 4-10 dB, successful ones at 25-50 dB), so the rate barely moves between 15 and
    25 dB.
    """

    lpips: str = "auto"  # auto: when AlexNet's weights are available; required; off
    success_metric: str = PRIMARY
    success_threshold: float = 20.0

    def __post_init__(self) -> None:
        one_of("metrics.lpips", self.lpips, ("auto", "required", "off"))
        one_of("metrics.success_metric", self.success_metric, criteria())
        require(
            math.isfinite(self.success_threshold),
            "metrics.success_threshold",
            self.success_threshold,
            "must be a finite number",
        )
        require(
            self.success_metric != "lpips" or self.lpips != "off",
            "metrics.success_metric",
            self.success_metric,
            "needs LPIPS, which metrics.lpips=off turns off",
        )

    @property
    def criterion(self) -> str:
        """The success criterion as text, e.g. ``psnr >= 20``."""
        sign = METRICS[self.success_metric].sign()
        return f"{self.success_metric} {sign} {self.success_threshold:g}"


# --- the run -------------------------------------------------------------------------


@dataclass
class Config:
    """One experiment. Group fields are filled by the defaults list in conf/config.yaml."""

    defense: DefenseConfig = MISSING
    model: ModelConfig = MISSING
    dataset: DatasetConfig = MISSING
    client: ClientConfig = MISSING
    optimizer: OptimizerConfig = MISSING
    attack: BaseAttackConfig = MISSING
    server: ServerConfig = MISSING  # honest, or a malicious server that modifies the model
    # clients whose updates the server sees only summed (secure aggregation); each holds
    # dataset.batch_size images of its own
    clients: int = 1
    tracking: TrackingConfig = MISSING  # where runs are logged besides their folder
    seed: int = 0  # every random draw (model init, data picks, dummy init, noise)
    device: str = "auto"  # auto = cuda when available, else cpu
    threads: int = 1  # torch intra-op threads; 1 is fastest for these small models
    compile: str = "auto"  # the attack's closure through torch.compile: auto, on, off
    conv_backend: str = "auto"  # CPU convolutions in the attack: auto, onednn, native
    trials: int = 1  # independent attacks in one batched run; metrics give mean, CI, ...
    # what differs between trials: images (disjoint random batches, one model), models (the
    # same images, trial t attacks the model of seed + t), both
    trials_vary: str = "images"
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    tags: dict[str, Any] = field(default_factory=dict)  # free-form labels copied to metrics

    def __post_init__(self) -> None:
        one_of("device", self.device, ("auto", "cpu", "cuda"))
        require(0 <= self.seed < 2**63, "seed", self.seed, "must be an integer in [0, 2**63)")
        require(self.threads >= 1, "threads", self.threads, "must be >= 1")
        require(self.trials >= 1, "trials", self.trials, "must be >= 1")
        one_of("trials_vary", self.trials_vary, ("images", "models", "both"))
        one_of("compile", self.compile, ("auto", "on", "off"))
        one_of("conv_backend", self.conv_backend, ("auto", "onednn", "native"))
        require(self.clients >= 1, "clients", self.clients, "must be >= 1")
        # rules that span groups
        attack = ATTACKS[self.attack.family]
        require(
            self.server.name in attack.servers,
            "server",
            self.server.name,
            f"attack={self.attack.name} works with server={'|'.join(attack.servers)}",
        )
        if attack.rules is not None:
            attack.rules(self)
        require(
            self.model.checkpoint is None or not self.models_vary,
            "trials_vary",
            self.trials_vary,
            "gives every trial its own model init, but model.checkpoint replaces it "
            "(every trial would attack the same weights): use trials_vary=images",
        )
        check_range(self.dataset, self.attacked)
        check_order(self.defense, self.dataset.batch_size)
        check_batch(self.client, self.dataset.batch_size)
        size = self.dataset.size
        own = None if size is None else self.dataset.server_images(size)
        wanted = {
            "model.pretrain_images": self.model.pretrain_images if self.model.pretrain_steps else 0,
            "server.public_images": SERVERS[self.server.name].public_images(self.server),
        }
        for key, count in wanted.items():
            require(
                own is None or count <= own,
                key,
                count,
                f"{self.dataset.name} has {size} images and {own} of them are the server's "
                f"own (dataset.server_fraction={self.dataset.server_fraction}), so at most {own}",
            )

    @property
    def models_vary(self) -> bool:
        """Every trial attacks its own model (seed + t)."""
        return self.trials_vary in ("models", "both")

    @property
    def images(self) -> int:
        """Images behind each attacked update: clients x dataset.batch_size."""
        return self.clients * self.dataset.batch_size

    @property
    def attacked(self) -> int:
        """Distinct images under attack: trials x clients x dataset.batch_size, or one
        trial's when only the models vary."""
        images_vary = self.trials_vary in ("images", "both")
        return (self.trials if images_vary else 1) * self.images


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
    ``model`` on ``dataset`` once per defense in ``defenses``, the defense applied to what
    every client shares. Clients hold ``dataset.batch_size`` images per round."""

    model: ModelConfig = MISSING
    dataset: DatasetConfig = MISSING
    client: ClientConfig = MISSING  # what clients share each round, as in the attack
    # maps like a chain's steps; soteria is left out by default: its exact Jacobian (one
    # batched backward pass of F rows per shared gradient) made its row ~130x slower
    # than a default row (README, Utility)
    defenses: list[Any] = field(default_factory=_default_compared)
    rounds: int = 50  # federated rounds (server averages the clients' updates once each)
    clients: int = 4  # the training split is dealt to them in turn (IID shards)
    lr: float = 0.05  # FedSGD: the server's step on the mean shared gradient
    test_fraction: float = 0.25  # held out (seeded permutation) for test accuracy
    samples: int = 0  # images used from dataset.index on (0 = all; cap large data sets)
    seed: int = 0
    threads: int = 1

    def __post_init__(self) -> None:
        require(len(self.defenses) >= 1, "defenses", self.defenses, "must list a defense")
        one_of("model.name", self.model.name, MODELS.names())
        self.defenses = [defense_from(d, f"defenses[{i}]") for i, d in enumerate(self.defenses)]
        for defense in self.defenses:
            check_order(defense, self.dataset.batch_size)
        check_batch(self.client, self.dataset.batch_size)
        for key in ("rounds", "clients", "threads"):
            require(getattr(self, key) >= 1, key, getattr(self, key), "must be >= 1")
        require(self.lr > 0, "lr", self.lr, "must be > 0")
        require(self.samples >= 0, "samples", self.samples, "must be >= 0 (0 = all)")
        require(
            0 < self.test_fraction < 1, "test_fraction", self.test_fraction, "must be in (0, 1)"
        )


def to_config(cfg: DictConfig, kind: type[T] = Config) -> T:  # type: ignore[assignment]
    """The composed config ``cfg`` as typed, range-checked values of schema ``kind``
    (``Config``, ``UtilityConfig``): every ``__post_init__`` runs, so a bad value raises
    ConfigError with a one-line message."""
    typed = OmegaConf.to_object(cfg)
    if not isinstance(typed, kind):
        raise TypeError(f"expected a {kind.__name__}, composed a {type(typed).__name__}")
    return typed


def pick(index: Any, *values: Any) -> Any:
    """``${pick:INDEX,V0,V1,...}`` -> ``V<INDEX>``: one swept index selects a value per option.

    conf/defense_level/*.yaml use it so that one sweep axis (``tags.level``) sets each
    defense's own strength field (a plain product sweep cannot pair them).
    """
    return values[int(index)]


# Every config group (conf/<group>/), in the order --help lists them, with the registry
# whose entries carry its options' schemas (``entry.schema``, stored as
# ``schema/<group>/<name>``); None: one shared schema (model, dataset: ``SHARED``) or
# none (presets). The attack group's files are presets over ATTACKS' families. Preflight,
# registration, --help and the tests read this table.
GROUPS: dict[str, Registry[Any] | None] = {
    "defense": DEFENSES, "model": None, "dataset": None, "client": CLIENTS,
    "optimizer": OPTIMIZERS, "attack": ATTACKS, "server": SERVERS, "tracking": TRACKERS,
    "experiment": None, "defense_level": None,
}  # fmt: skip
SHARED = {"model": ModelConfig, "dataset": DatasetConfig}  # stored as schema/<group>


def register() -> None:
    """Store every group's schemas under ``schema/...`` for the YAML defaults lists and the
    ``pick`` resolver; the entry points call this before Hydra composes anything."""
    OmegaConf.register_new_resolver("pick", pick, replace=True)
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    cs.store(name="utility_schema", node=UtilityConfig)
    for group, schema in SHARED.items():
        cs.store(group="schema", name=group, node=schema)
    for group, registry in GROUPS.items():
        for entry in registry or ():
            cs.store(group=f"schema/{group}", name=entry.name, node=entry.schema)
