"""Shared helpers (``from helpers import ...``; tests/ is on the path): run the command line
in a subprocess, offline, in a scratch folder; compose and check configs in-process as the
command line does; a small client for the defenses' tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from gradinv_exp import config
from gradinv_exp.runs import preflight

REPO = Path(__file__).resolve().parent.parent
# Small, fast settings for end-to-end runs: the bundled photos, few steps.
FAST = ["dataset=photos", "attack.iterations=6", "attack.snapshot_every=3"]
# The original notebook's comparison (none, prune, quantize, noise) at FAST settings: a 4-job sweep.
SEED_DEFENSES = ["+experiment=seed_defenses", *FAST]


def cli(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m gradinv_exp ARGS`` in ``cwd`` with this checkout first on the path."""
    env = os.environ | {"PYTHONPATH": str(REPO), "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [sys.executable, "-m", "gradinv_exp", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def compose_config(*overrides: str, name: str = "config", hydra: bool = False) -> DictConfig:
    """Compose ``conf/<name>.yaml`` with overrides in-process (no CLI start-up cost)."""
    config.register()
    with initialize_config_dir(config_dir=str(config.CONF_DIR), version_base="1.3"):
        return compose(name, overrides=list(overrides), return_hydra_config=hydra)


def typed_config(*overrides: str) -> config.Config:
    """The typed, range-checked run config for ``overrides``, as a CLI job would get it."""
    config.register()
    with initialize_config_dir(config_dir=str(config.CONF_DIR), version_base="1.3"):
        return preflight.to_config(list(overrides))


def preflight_check(argv: list[str]) -> preflight.Plan | None:
    """Exactly what the command line checks before any job: ``preflight.plan`` (torch-free
    checks of every job), then ``experiment.check`` on every job (data, model, checkpoint,
    device). Raises ConfigError on the first problem."""
    from gradinv_exp import experiment  # torch: only for the tests that need it

    config.register()
    plan = preflight.plan(argv)
    if plan is not None:
        preflight.check_jobs(plan, experiment.check)
    return plan


def lenet_client(batch: int = 3, seed: int = 0):
    """A small client: a 1-channel 8x8 LeNet with 4 classes and ``batch`` random images."""
    import torch

    from gradinv_exp.client import Client
    from gradinv_exp.models import build

    model = build(
        "lenet", channels=1, num_classes=4, image_size=8, activation="sigmoid",
        init_range=0.5, generator=torch.Generator().manual_seed(seed),
    )  # fmt: skip
    images = torch.rand(batch, 1, 8, 8, generator=torch.Generator().manual_seed(seed + 1))
    targets = torch.nn.functional.one_hot(torch.arange(batch) % 4, 4).float()
    return Client(model, images, targets)


def gen(seed: int = 0):
    """A seeded CPU generator (the defenses' and attacks' ``generator`` argument)."""
    import torch

    return torch.Generator().manual_seed(seed)


def random_grads(seed: int = 0):
    """A LeNet-shaped gradient: conv weight, bias and a 100-class linear weight."""
    import torch

    g = gen(seed)
    return [
        torch.randn(12, 3, 5, 5, generator=g),
        torch.randn(12, generator=g),
        torch.randn(100, 768, generator=g),
    ]


def attack_one(
    simulator, target, *, generator, on_snapshot, known_labels=None, defense_model=None, **settings
):
    """The engine's ``attack`` of one job (its shares ``target``, its stream, progress and
    adaptive defense model); that job's ``AttackResult``."""
    from gradinv_exp.attacks import Job, attack

    job = Job(target, generator, on_snapshot, known_labels, defense_model)
    return attack(simulator, [job], **settings)[0]
