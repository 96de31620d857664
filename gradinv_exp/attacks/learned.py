"""The learned inversion attack (``attack=learned``): Wu et al., "Learning to Invert:
Simple Adaptive Attacks for Gradient Inversion in Federated Learning" (UAI 2023).

The server knows the model it sent, the protocol and the defense with its parameters
(Kerckhoffs), and it has images of its own (``Server.images``: a part of the data set
disjoint from every client's). It simulates clients on them as the observed clients
behave (``observed.protocol``, ``observed.images`` images per update dealt to
``observed.clients`` clients), passes every simulated client's update through the
defense's own function with fresh randomness (``defenses.apply``, so noise, DP,
quantisation, sign, pruning and chains need no code of their own here: the defense is a
black box the network learns to see through) and averages the clients' updates as the
server observes them. A network trained on these pairs maps a defended update to its
images; the attack is one forward pass per observed update, and optionally the
optimisation engine continues from there (``refine``).

The update is reduced before the network reads it (``Reducer``): the chosen parameters
(``layers``), each scaled to unit RMS over the simulated updates, then a seeded count
sketch to ``features`` dimensions (a sparse random projection: every entry is added, with
a random sign, to one of ``features`` buckets), standardised per feature. The network is
an MLP, ``depth`` hidden layers of ``width`` ReLU units and a sigmoid output of
``images x C x H x W`` values, trained with Adam on the mean squared error after the
best matching of its images to the batch's (Hungarian, as the scorer matches; Wu et al.
do the same).

Labels are not predicted: the engine's label modes restore them from the observed update
(``labels``: ``idlg``, ``yin``, ``llg``, or ``given`` where the threat model grants
them), then each restored label goes to the reconstructed image the model finds most
likely to carry it (one assignment per update).

A trained inverter is cached on disk (``cache_dir``) under a hash of everything it
depends on (``cache_key``): the model's architecture and weights, the defense and its
parameters, the protocol, the number of clients and images, the auxiliary images and
labels, and the settings that shape training. Training is a pure function of that key
(its random streams are seeded from it), so a cached inverter is exactly the one a
fresh training would give, and a sweep trains once per setting.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from gradinv_exp.attacks.contract import (
    AttackResult,
    BaseAttackConfig,
    Context,
    Observed,
    RunConfig,
    Target,
    each,
    family,
)
from gradinv_exp.attacks.labels import LABELS
from gradinv_exp.attacks.optimizers import OPTIMIZERS
from gradinv_exp.base import lazy
from gradinv_exp.base.options import ConfigError, one_of, positive, require

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

    from gradinv_exp.servers.registry import Server
else:
    torch = lazy.module("torch", __name__)  # loaded on first use (see base/lazy.py)

log = logging.getLogger(__name__)

FORMAT = 1  # of the cached files and of the training: a change here invalidates the cache
READ_MODES = tuple(m.name for m in LABELS if not m.optimised)  # idlg, given, yin, llg


@dataclass
class LearnedConfig(BaseAttackConfig):
    """The learned inversion attack. Training: ``aux_images`` of the server's own images,
    ``updates`` simulated defended updates (each from a random batch of them), ``steps``
    Adam steps of ``batch_size`` updates at ``lr`` (x0.1 for the last quarter). Reduction:
    the parameters ``layers`` (indices into the model's parameters, negative from the end;
    null: all), then a count sketch to ``features`` dimensions (null: none). Network:
    ``depth`` hidden layers of ``width``. ``max_images``: the most images one update may
    carry (the output layer grows with them). ``labels``: how labels are restored.
    ``refine``: optimisation steps (the engine, L2 objective, the optimizer group's
    optimiser) from the inverter's images; 0: none. ``cache_dir``: where trained
    inverters are kept (null: nowhere, train every run)."""

    family: str = "learned"
    aux_images: int = 2048
    updates: int = 4096
    layers: Optional[list[int]] = None
    features: Optional[int] = 1024
    width: int = 512
    depth: int = 2
    steps: int = 1500
    lr: float = 1e-3
    batch_size: int = 64
    max_images: int = 8
    labels: str = "idlg"
    refine: int = 0
    cache_dir: Optional[str] = "~/.cache/gradinv_exp/learned"

    def __post_init__(self) -> None:
        require(self.aux_images >= 1, "attack.aux_images", self.aux_images, "must be >= 1")
        require(self.updates >= 1, "attack.updates", self.updates, "must be >= 1")
        require(
            self.layers is None or len(self.layers) >= 1,
            "attack.layers",
            self.layers,
            "must be null (all parameters) or a list of parameter indices",
        )
        require(
            self.features is None or self.features >= 1,
            "attack.features",
            self.features,
            "must be null (no projection) or >= 1",
        )
        for key in ("width", "depth", "steps", "batch_size", "max_images"):
            require(getattr(self, key) >= 1, f"attack.{key}", getattr(self, key), "must be >= 1")
        positive("attack.lr", self.lr)
        one_of("attack.labels", self.labels, READ_MODES)
        require(self.refine >= 0, "attack.refine", self.refine, "must be >= 0 (0: no refinement)")
        require(
            self.cache_dir is None or self.cache_dir.strip() != "",
            "attack.cache_dir",
            self.cache_dir,
            "must be null (no cache) or a folder",
        )


def rules(cfg: RunConfig) -> None:
    """What the inverter supports, before any work: the images behind one update at most
    ``attack.max_images``, an auxiliary set that holds one update's images and fits the
    server's part of the data set."""
    attack = cfg.attack
    assert isinstance(attack, LearnedConfig)
    require(
        cfg.images <= attack.max_images,
        "dataset.batch_size",
        cfg.dataset.batch_size,
        f"the inverter decodes at most attack.max_images={attack.max_images} images from one "
        f"update and clients x dataset.batch_size = {cfg.images}",
    )
    require(
        attack.aux_images >= cfg.images,
        "attack.aux_images",
        attack.aux_images,
        f"must be >= the images behind one update (clients x dataset.batch_size = "
        f"{cfg.images}): each simulated update needs that many distinct images",
    )
    size = cfg.dataset.size
    own = None if size is None else cfg.dataset.server_images(size)
    require(
        own is None or attack.aux_images <= own,
        "attack.aux_images",
        attack.aux_images,
        f"{cfg.dataset.name} has {size} images and {own} of them are the server's own "
        f"(dataset.server_fraction={cfg.dataset.server_fraction}), so at most {own}",
    )


def check(cfg: RunConfig, net: nn.Module) -> None:
    """Preflight with the model: the chosen layers exist, a label mode that reads the last
    linear layer has one."""
    attack = cfg.attack
    assert isinstance(attack, LearnedConfig)
    count = len(list(net.parameters()))
    for index in attack.layers or []:
        require(
            -count <= index < count,
            "attack.layers",
            attack.layers,
            f"model={cfg.model.name} has {count} parameter tensors (indices {-count} ... "
            f"{count - 1})",
        )
    if LABELS[attack.labels].reads_last_linear:
        from gradinv_exp.attacks.labels import last_linear_weight

        try:
            last_linear_weight(net)
        except ValueError as err:
            raise ConfigError(
                f"attack.labels={attack.labels} is not allowed with model={cfg.model.name}: {err}"
            ) from None


# --- the reduction of an update ---------------------------------------------------------


@dataclass(frozen=True)
class Reducer:
    """Update -> features: the parameters ``layers``, each divided by its RMS ``scales``
    ``(L,)``, flattened and concatenated (D values), then (``features`` set) a count
    sketch: entry i goes to bucket ``buckets[i]`` with sign ``signs[i]``, both ``(D,)``
    and fixed by (D, features) alone; finally ``(x - mean) / std`` per feature."""

    layers: tuple[int, ...]
    scales: Tensor
    buckets: Tensor | None
    signs: Tensor | None
    mean: Tensor
    std: Tensor

    def raw(self, update: Sequence[Tensor]) -> Tensor:
        """Features ``(N, k)`` before standardisation of updates ``(N, *param.shape)``."""
        parts = [update[i].flatten(1) / s for i, s in zip(self.layers, self.scales.tolist())]
        flat = torch.cat(parts, 1)
        if self.buckets is None:
            return flat
        out = torch.zeros(len(flat), len(self.mean), device=flat.device)
        return out.index_add_(1, self.buckets.to(flat.device), flat * self.signs.to(flat.device))

    def __call__(self, update: Sequence[Tensor]) -> Tensor:
        return (self.raw(update) - self.mean) / self.std


def sketch(size: int, features: int) -> tuple[Tensor, Tensor]:
    """The count sketch of ``size`` entries into ``features`` buckets: each entry's
    bucket ``(size,)`` and sign ``(size,)``, from a fixed seed (a function of the two
    numbers, so a cached inverter and a new run reduce alike)."""
    g = torch.Generator().manual_seed(size * 1_000_003 + features)
    buckets = torch.randint(features, (size,), generator=g)
    signs = torch.randint(2, (size,), generator=g).float() * 2 - 1
    return buckets, signs


def reducer_for(
    cfg: LearnedConfig, shapes: Sequence[torch.Size], first: Sequence[Tensor]
) -> Reducer:
    """The reducer for updates with parameters of ``shapes``, its scales measured on the
    simulated updates ``first`` (a leading axis of N updates); standardisation left at
    identity (``train`` sets it)."""
    count = len(shapes)
    layers = tuple(sorted({i % count for i in (cfg.layers or range(count))}))
    scales = torch.stack([first[i].pow(2).mean().sqrt().clamp_min(1e-12) for i in layers])
    size = sum(shapes[i].numel() for i in layers)
    buckets, signs = (None, None) if cfg.features is None else sketch(size, cfg.features)
    width = size if cfg.features is None else cfg.features
    device = first[0].device
    return Reducer(layers, scales.cpu(), buckets, signs, torch.zeros(width, device=device),
                   torch.ones(width, device=device))  # fmt: skip


# --- simulated clients on the server's own images ----------------------------------------


def simulate(
    model: nn.Module,
    observed: Observed,
    x: Tensor,
    y: Tensor,
    generator: torch.Generator,
) -> list[Tensor]:
    """What the server would observe for N simulated updates: batches ``x``
    ``(N, images, C, H, W)`` with labels ``y`` ``(N, images)``, each dealt to
    ``observed.clients`` clients in turn; every client shares its update under
    ``observed.protocol`` on ``model``, the defense's own function distorts it with the
    stream ``generator``, and the server sees the clients' mean. One ``(N, *param.shape)``
    tensor per parameter, as ``experiment.share`` computes for real clients."""
    from gradinv_exp import client, defenses

    per_example = client.CLIENTS[observed.protocol.name].per_example
    onehot = torch.nn.functional.one_hot(y, observed.num_classes).float()
    size = observed.images // observed.clients
    out = []
    for n in range(len(x)):
        shares = []
        for k in range(observed.clients):
            rows = slice(k * size, (k + 1) * size)
            who = client.Client(model, x[n, rows], onehot[n, rows], per_example=per_example)
            update = client.share(who, observed.protocol)
            shares.append(defenses.apply(update, observed.defense, generator=generator, client=who))
        out.append([torch.stack(p).mean(0) for p in zip(*shares)])
    return [torch.stack(p) for p in zip(*out)]


def training_set(
    model: nn.Module,
    observed: Observed,
    aux: Tensor,
    aux_labels: Tensor,
    cfg: LearnedConfig,
    generator: torch.Generator,
    chunk: int = 256,
) -> tuple[Reducer, Tensor, Tensor]:
    """``cfg.updates`` simulated defended updates, reduced: the reducer, the features
    ``(updates, k)`` (raw) and the images behind each ``(updates, images, C, H, W)``.
    Each update's images are a random draw of ``observed.images`` distinct auxiliary
    images; the defense draws fresh randomness for every one."""
    picks = torch.stack(
        [
            torch.randperm(len(aux), generator=generator)[: observed.images]
            for _ in range(cfg.updates)
        ]
    )
    reducer, feats = None, []
    for start in range(0, cfg.updates, chunk):
        rows = picks[start : start + chunk]
        update = simulate(model, observed, aux[rows], aux_labels[rows], generator)
        if reducer is None:
            reducer = reducer_for(cfg, [p.shape for p in model.parameters()], update)
        feats.append(reducer.raw(update))
    assert reducer is not None
    return reducer, torch.cat(feats), aux[picks]


# --- the network and its training ------------------------------------------------------


def network(inputs: int, outputs: int, cfg: LearnedConfig, generator: torch.Generator) -> nn.Module:
    """The MLP ``inputs -> width (ReLU) x depth -> outputs (sigmoid)``, initialised like
    PyTorch's ``nn.Linear`` (U(-1/sqrt(fan_in), 1/sqrt(fan_in))) from ``generator``."""
    sizes = [inputs] + [cfg.width] * cfg.depth
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    layers += [torch.nn.Linear(sizes[-1], outputs), torch.nn.Sigmoid()]
    net = torch.nn.Sequential(*layers)
    with torch.no_grad():
        for layer in net:
            if isinstance(layer, torch.nn.Linear):
                bound = layer.in_features**-0.5
                layer.weight.uniform_(-bound, bound, generator=generator)
                layer.bias.uniform_(-bound, bound, generator=generator)
    return net


def matched_mse(pred: Tensor, target: Tensor) -> Tensor:
    """Mean squared error ``(N,)`` of ``pred`` and ``target`` ``(N, B, P)`` after the best
    matching of each batch's B predicted images to its B true ones (Hungarian on the
    detached costs; the chosen pairs' errors stay differentiable)."""
    cost = (pred[:, :, None] - target[:, None]).pow(2).mean(-1)  # (N, B, B)
    if pred.shape[1] == 1:
        return cost[:, 0, 0]
    from scipy.optimize import linear_sum_assignment

    rows, cols = zip(*(linear_sum_assignment(c.detach().cpu().numpy()) for c in cost))
    index = torch.arange(len(cost))[:, None]
    return cost[index, torch.as_tensor(rows), torch.as_tensor(cols)].mean(1)


def train(
    feats: Tensor, targets: Tensor, cfg: LearnedConfig, generator: torch.Generator
) -> tuple[nn.Module, Tensor, Tensor, float]:
    """Train the inverter on ``feats`` ``(N, k)`` -> ``targets`` ``(N, B, C, H, W)``:
    returns the network, the features' mean and std ``(k,)`` and the last quarter's mean
    training loss (matched MSE on [0, 1] pixels)."""
    mean, std = feats.mean(0), feats.std(0).clamp_min(1e-6)
    x = (feats - mean) / std
    y = targets.flatten(2)  # (N, B, P)
    net = network(x.shape[1], y.shape[1] * y.shape[2], cfg, generator).to(x.device)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    decay = torch.optim.lr_scheduler.MultiStepLR(opt, [int(cfg.steps * 3 / 4)], gamma=0.1)
    losses = []
    for _ in range(cfg.steps):
        rows = torch.randint(len(x), (min(cfg.batch_size, len(x)),), generator=generator)
        loss = matched_mse(net(x[rows]).view(len(rows), *y.shape[1:]), y[rows]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        decay.step()
        losses.append(float(loss.detach()))
    tail = losses[-max(1, cfg.steps // 4) :]
    return net.eval(), mean, std, sum(tail) / len(tail)


# --- the cache --------------------------------------------------------------------------


def cache_key(
    model: nn.Module, observed: Observed, aux: Tensor, aux_labels: Tensor, cfg: LearnedConfig
) -> str:
    """A hex digest of everything a trained inverter depends on: ``FORMAT``, the model's
    architecture, weights and buffers, the defense and its parameters, the protocol, the
    clients, images and shapes of an update, the auxiliary images and labels, and the
    settings that shape training (not ``labels``, ``refine`` or ``cache_dir``)."""
    h = hashlib.sha256(f"learned-inverter:{FORMAT}\n{model!r}\n".encode())
    for tensor in [*model.parameters(), *model.buffers(), aux, aux_labels]:
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    training = {k: v for k, v in dataclasses.asdict(cfg).items()
                if k not in ("name", "labels", "refine", "cache_dir")}  # fmt: skip
    setting = {
        "defense": dataclasses.asdict(observed.defense),
        "protocol": dataclasses.asdict(observed.protocol),
        "clients": observed.clients,
        "images": observed.images,
        "image_shape": observed.image_shape,
        "num_classes": observed.num_classes,
        "training": training,
    }
    h.update(json.dumps(setting, sort_keys=True, default=str).encode())
    return h.hexdigest()


@dataclass(frozen=True)
class Inverter:
    """A trained inverter: the reducer, the network, its final training loss."""

    reducer: Reducer
    net: nn.Module
    train_mse: float

    def __call__(self, update: Sequence[Tensor], shape: tuple[int, ...]) -> Tensor:
        """Images ``(T, *shape)`` for updates ``(T, *param.shape)``; ``shape`` = (B, C, H, W)."""
        with torch.no_grad():
            return self.net(self.reducer(update)).view(-1, *shape)

    def state(self) -> dict[str, Any]:
        """Plain tensors and numbers only (``torch.load(weights_only=True)`` reads them)."""
        r = self.reducer
        return {
            "format": FORMAT,
            "layers": list(r.layers),
            "scales": r.scales.cpu(),
            "features": None if r.buckets is None else int(r.mean.numel()),
            "mean": r.mean.cpu(),
            "std": r.std.cpu(),
            "net": {k: v.cpu() for k, v in self.net.state_dict().items()},
            "train_mse": self.train_mse,
        }


def restore(state: dict[str, Any], shapes: Sequence[torch.Size], cfg: LearnedConfig,
            outputs: int, device: torch.device) -> Inverter:  # fmt: skip
    """The ``Inverter`` a cached ``state`` holds, on ``device``."""
    layers = tuple(state["layers"])
    size = sum(shapes[i].numel() for i in layers)
    buckets, signs = (None, None) if state["features"] is None else sketch(size, state["features"])
    reducer = Reducer(layers, state["scales"], buckets, signs, state["mean"].to(device),
                      state["std"].to(device))  # fmt: skip
    net = network(len(state["mean"]), outputs, cfg, torch.Generator())
    net.load_state_dict(state["net"])
    return Inverter(reducer, net.to(device).eval(), float(state["train_mse"]))


def inverter(
    model: nn.Module, observed: Observed, aux: Tensor, aux_labels: Tensor, cfg: LearnedConfig
) -> tuple[Inverter, bool, float]:
    """The inverter for ``model`` under ``observed``'s setting: from the cache when it
    holds this key, else trained (and cached). Returns it, whether it was cached, and the
    seconds spent training (0 when cached)."""
    from gradinv_exp.runs.artifacts import atomic_write

    key = cache_key(model, observed, aux, aux_labels, cfg)
    shapes = [p.shape for p in model.parameters()]
    outputs = observed.images * int(torch.Size(observed.image_shape).numel())
    device = aux.device
    path = None if cfg.cache_dir is None else Path(cfg.cache_dir).expanduser() / f"{key}.pt"
    if path is not None and path.is_file():
        state = torch.load(path, weights_only=True, map_location="cpu")
        log.info("learned: inverter from the cache %s", path)
        return restore(state, shapes, cfg, outputs, device), True, 0.0
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(int(key[:15], 16))  # training = f(key)
    log.info(
        "learned: training an inverter on %d simulated %s updates of %d image(s) (%d steps)",
        cfg.updates, observed.defense.name, observed.images, cfg.steps,
    )  # fmt: skip
    reducer, feats, targets = training_set(model, observed, aux, aux_labels, cfg, generator)
    net, mean, std, loss = train(feats, targets, cfg, generator)
    trained = Inverter(dataclasses.replace(reducer, mean=mean, std=std), net, loss)
    seconds = time.perf_counter() - start
    log.info("learned: trained in %.1f s, training loss (matched MSE) %.4f", seconds, loss)
    if path is not None:
        atomic_write(path, lambda tmp: torch.save(trained.state(), tmp))
    return trained, False, seconds


# --- the attack --------------------------------------------------------------------------


def trial_model(server: Server, t: int) -> nn.Module:
    """The model trial t attacks: the one sent, with trial t's weights when every trial
    has its own (``server.params``)."""
    if server.params is None:
        return server.model
    model = copy.deepcopy(server.model)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(server.params[name][t])
    return model


def assign_labels(model: nn.Module, images: Tensor, labels: Tensor) -> Tensor:
    """``labels`` ``(B,)`` reordered so that label i goes with image i ``(B, C, H, W)``:
    the assignment that maximises the model's summed log-probability of each image's
    label (Hungarian)."""
    if len(labels) == 1:
        return labels
    from scipy.optimize import linear_sum_assignment

    with torch.no_grad():
        logp = torch.log_softmax(model(images), -1)[:, labels]  # (B images, B labels)
    rows, cols = linear_sum_assignment(-logp.cpu().numpy())
    return labels[torch.as_tensor(cols)[torch.as_tensor(rows).argsort()]]


def restored_labels(target: Target) -> Tensor:
    """Labels ``(T, images)`` by the label mode ``target.cfg.labels`` (the engine's
    restoration from the update read as a gradient, or the granted true labels)."""
    from gradinv_exp.attacks.labels import Evidence
    from gradinv_exp.client import Simulator

    observed, server = target.observed, target.server
    simulator = Simulator(server.model, observed.protocol, server.params, observed.clients)
    evidence = Evidence(
        server.model, simulator.as_gradient(list(observed.update)), observed.images,
        observed.num_classes, observed.labels, target.generator, observed.image_shape,
    )  # fmt: skip
    return LABELS[target.cfg.labels].start(evidence, 1).argmax(-1)


@family(
    LearnedConfig,
    labels_granted=lambda cfg: cfg.labels == "given",
    closures=lambda cfg, opt: cfg.refine * OPTIMIZERS[opt.name].evaluations(opt),
    steps=lambda cfg: cfg.refine,
    server_images=lambda cfg: cfg.aux_images,
    models_defense=lambda cfg: True,  # trains on the defense's own outputs: defense-aware
    rules=rules,
    check=check,
)
@each
def reconstruct(target: Target, context: Context) -> AttackResult:
    """Train (or load) one inverter per model attacked, invert every observed update in
    one forward pass, restore the labels; with ``refine`` > 0, the engine continues from
    those images. Images ``(T, B, C, H, W)``."""
    observed, server, cfg = target.observed, target.server, target.cfg
    if server.images is None or len(server.images) < cfg.aux_images:
        raise ValueError("attack=learned needs attack.aux_images images of the server's own")
    device = observed.update[0].device
    aux = server.images[: cfg.aux_images].to(device)
    aux_labels = server.labels[: cfg.aux_images].to(device)
    per_trial = server.params is not None
    models = [trial_model(server, t) for t in range(observed.trials if per_trial else 1)]
    found = [inverter(model, observed, aux, aux_labels, cfg) for model in models]
    shape = observed.shape[1:]
    out = torch.stack([
        found[t % len(found)][0]([u[t : t + 1] for u in observed.update], shape)[0]
        for t in range(observed.trials)
    ])  # fmt: skip
    restored = restored_labels(target).to(device)
    labels = torch.stack([
        assign_labels(models[t % len(models)], out[t], restored[t])
        for t in range(observed.trials)
    ]).cpu()  # fmt: skip
    assumed = {
        "assumed.aux_images": cfg.aux_images,
        "learned.inverters": len(found),
        "learned.cached": sum(cached for _, cached, _ in found),
        "learned.train_s": sum(seconds for _, _, seconds in found),
        "learned.train_mse": sum(inv.train_mse for inv, _, _ in found) / len(found),
    }
    if cfg.refine == 0:
        return AttackResult.read_out(out.cpu(), labels, assumed)
    return dataclasses.replace(refined(target, context, out), assumed=assumed)


def refined(target: Target, context: Context, start: Tensor) -> AttackResult:
    """The optimisation engine (L2 objective, labels as ``cfg.labels`` restores them,
    ``cfg.refine`` steps of the optimizer group's optimiser) started from ``start``
    ``(T, B, C, H, W)``."""
    from gradinv_exp.attacks.engine import AttackConfig, Job, attack
    from gradinv_exp.client import Simulator

    observed, server, cfg = target.observed, target.server, target.cfg

    assert context.optimizer is not None, "refinement needs the optimizer group"
    engine = AttackConfig(
        name="learned", labels=cfg.labels, iterations=cfg.refine,
        snapshot_every=max(1, cfg.refine // 10), checkpoint_every=0,
    )  # fmt: skip
    simulator = Simulator(server.model, observed.protocol, server.params, observed.clients)
    job = Job(observed.update, target.generator, target.on_snapshot, observed.labels, start=start)
    return attack(
        simulator, [job], shape=observed.shape, num_classes=observed.num_classes,
        cfg=engine, optimizer=context.optimizer, backend=context.backend,
    )[0]  # fmt: skip
