"""The user's own code, checked before any job starts.

A run may name the user's own defense (``defense=custom``), model (``model=custom``; a
torchvision architecture, ``model=torchvision``, is checked the same way), objective or
priors (``module:function``). The schemas check only how such a name is written;
``check`` (the model and defense) and ``check_attack`` (the optimisation family's
objective and priors) import each callable, checks its signature and runs it once on a probe, as
the run will call it, so a bad plugin stops the command with one line (exit 2) instead
of failing in every job. The probe is the run's own model (seeded, with its checkpoint)
on random images of the data's shape.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from gradinv_exp import client, defenses
from gradinv_exp.attacks import objectives
from gradinv_exp.attacks.labels import LABELS, last_linear_weight
from gradinv_exp.models import MODELS
from gradinv_exp.options import not_allowed

if TYPE_CHECKING:
    from torch import Tensor, nn

    from gradinv_exp.config import Config


def used(cfg: Config) -> bool:
    """Whether the run's model or defense is code that is not built in (and so needs a
    probe; an attack's own plugins are its family's ``check``)."""
    return MODELS[cfg.model.name].load is not None or defenses.has_checks(cfg.defense)


def probe_client(cfg: Config, net: nn.Module) -> client.Client:
    """A client of ``net`` holding random images of the data's shape, labels 0, 1, ..."""
    ds = cfg.dataset
    shape = (ds.batch_size, ds.channels, ds.image_size, ds.image_size)
    images = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(ds.batch_size) % ds.num_classes
    return client.Client(net, images, torch.nn.functional.one_hot(labels, ds.num_classes).float())


def check(cfg: Config, net: nn.Module) -> None:
    """Run the user's defense once on a probe client of ``net`` (the run's model). Raises
    a one-line ConfigError naming the key, the callable and the problem."""
    defenses.check(cfg.defense, probe_client(cfg, net))


def check_attack(cfg: Config, net: nn.Module) -> None:
    """The optimisation family's preflight: the user's objective and priors once on a
    probe, and, on a model that is not built in, that the engine can attack it."""
    probe = probe_client(cfg, net)
    grads = [g.detach() for g in client.gradient(probe)]
    objectives.check(cfg.attack.objective, cfg.attack.priors, grads, probe.images)
    if MODELS[cfg.model.name].load is not None:
        attackable(cfg, net, probe.images, probe.targets)


def attackable(cfg: Config, net: nn.Module, images: Tensor, onehot: Tensor) -> None:
    """The attack needs of a model: with ``attack.labels=idlg`` a last ``nn.Linear`` layer
    (label recovery reads its weight gradient), and a simulated client gradient that is
    differentiable in the dummy images, as the attacker's ``client.Simulator`` computes it
    for the run's client protocol and number of problems (one, or several under vmap)."""
    key, target = "model.target", cfg.model.target
    if LABELS[cfg.attack.labels].reads_last_linear:
        try:
            last_linear_weight(net)
        except ValueError:
            why = (
                f"attack.labels={cfg.attack.labels} reads the gradient of its last "
                "nn.Linear, and it has none"
            )
            raise not_allowed(key, target, why) from None
    problems = 2 if cfg.trials * cfg.attack.restarts > 1 else 1
    dummy = images.expand(problems, *images.shape).clone().requires_grad_(True)
    try:
        simulate = client.Simulator(net, client.CLIENTS[cfg.client.name].assumed(cfg.client))
        grads = simulate(dummy, onehot.expand(problems, *onehot.shape))
        (slope,) = torch.autograd.grad(sum((g**2).sum() for g in grads), dummy)
    except Exception as err:
        text = " ".join(str(err).split())
        why = f"the attack cannot differentiate its gradient ({type(err).__name__}: {text})"
        raise not_allowed(key, target, why) from err
    if not bool(torch.isfinite(slope).all()):
        raise not_allowed(key, target, "the attack's derivative through it is not finite")
