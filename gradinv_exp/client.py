"""The ``client`` group: what a federated client shares, and the attacker's differentiable
simulation of it.

A client holds images ``(B, C, H, W)`` in [0, 1] with label distributions
``(B, num_classes)`` and the global weights theta_0. ``fedsgd`` shares the parameter
gradient of its mean soft cross-entropy at theta_0; ``fedavg`` takes ``local_steps`` SGD
steps on its own images and shares the update theta_E - theta_0. Both are one function,
``update(loss, params, x, y, cfg)``, written functionally (``torch.func``) so that the
same code is the client's computation on its true data and, vmapped over N problems and
differentiable in the dummy data, the attacker's simulation (``Simulator``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from omegaconf import MISSING

from gradinv_exp.base import lazy
from gradinv_exp.base.options import Registry, option_name, positive, require

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn
else:
    torch = lazy.module("torch", __name__)  # loaded on first use (see base/lazy.py)

Params = dict[str, "Tensor"]
Loss = Callable[[Params, "Tensor", "Tensor"], "Tensor"]  # (params, x (B,...), y (B,K)) -> scalar


def soft_cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    """mean over the batch of sum(-target * log_softmax(logits)); target rows sum to 1."""
    return torch.mean(torch.sum(-target * torch.log_softmax(logits, dim=-1), dim=-1))


def loss_of(model: nn.Module) -> Loss:
    """``model``'s soft cross-entropy as a function of its parameters and one batch."""

    def loss(params: Params, x: Tensor, y: Tensor) -> Tensor:
        return soft_cross_entropy(torch.func.functional_call(model, params, (x,)), y)

    return loss


# --- the options ------------------------------------------------------------------------


@dataclass
class ClientConfig:
    """Base of every client schema; ``name`` selects the option in ``CLIENTS``."""

    name: str = MISSING


Update = Callable[[Loss, Params, "Tensor", "Tensor", ClientConfig], Params]


@dataclass(frozen=True)
class Protocol:
    """One option of the ``client`` group.

    ``update(loss, params, x, y, cfg)``: what one client shares for its batch ``x``
    ``(B, C, H, W)``, ``y`` ``(B, num_classes)``, one tensor per parameter.
    ``descent``: the share points along minus the gradient (an update after SGD steps),
    so label recovery reads it with its sign flipped. ``per_example``: the share is the
    mean of the examples' gradients, so a per-example defense may recompute them.
    ``assumed(cfg)``: the protocol the attacker simulates (the client's own, unless the
    attacker is not told its hyperparameters). ``plain_gradient``: the share is the
    gradient of the batch's mean loss, so one problem may be simulated with plain
    autograd, and N clients' mean share is one batch of all their images. ``scale(cfg)``:
    the share's size relative to one FedSGD gradient (an update after E steps of SGD at
    lr is about lr x E gradients), so that count-aware label recovery can read the share
    as a gradient.
    """

    name: str
    schema: type[ClientConfig]
    update: Update
    descent: bool
    per_example: bool
    assumed: Callable[[ClientConfig], ClientConfig]
    plain_gradient: bool = False
    scale: Callable[[ClientConfig], float] = lambda cfg: 1.0


CLIENTS: Registry[Protocol] = Registry("client")


def protocol(
    schema: type[ClientConfig],
    *,
    descent: bool,
    per_example: bool,
    assumed: Callable[[ClientConfig], ClientConfig] = lambda cfg: cfg,
    plain_gradient: bool = False,
    scale: Callable[[ClientConfig], float] = lambda cfg: 1.0,
) -> Callable[[Update], Update]:
    """Register the decorated ``update`` as the client ``schema`` configures."""

    def register(fn: Update) -> Update:
        name = option_name(schema)
        entry = Protocol(name, schema, fn, descent, per_example, assumed, plain_gradient, scale)
        CLIENTS.add(entry)
        return fn

    return register


@dataclass
class FedSGDConfig(ClientConfig):
    name: str = "fedsgd"


@protocol(FedSGDConfig, descent=False, per_example=True, plain_gradient=True)
def fedsgd(loss: Loss, params: Params, x: Tensor, y: Tensor, cfg: ClientConfig) -> Params:
    """The gradient of the mean loss over the client's batch at the global weights."""
    return torch.func.grad(loss)(params, x, y)


@dataclass
class FedAvgConfig(ClientConfig):
    name: str = "fedavg"
    local_steps: int = 1  # E: local SGD steps before the update is shared
    local_batch: Optional[int] = None  # images per local step, in order, cycling; null = all B
    local_lr: float = 0.1  # local SGD learning rate
    known_hyperparameters: bool = True  # the attacker knows E, local_batch and local_lr

    def __post_init__(self) -> None:
        require(self.local_steps >= 1, "client.local_steps", self.local_steps, "must be >= 1")
        require(
            self.local_batch is None or self.local_batch >= 1,
            "client.local_batch",
            self.local_batch,
            "must be null (all the client's images) or >= 1",
        )
        positive("client.local_lr", self.local_lr)


def _blind(cfg: ClientConfig) -> ClientConfig:
    """What an attacker who is not told the local hyperparameters assumes: one local step
    on all B images with the learning rate the server prescribed, i.e. the update is a
    FedSGD gradient scaled by -local_lr."""
    assert isinstance(cfg, FedAvgConfig)
    if cfg.known_hyperparameters:
        return cfg
    return FedAvgConfig(local_steps=1, local_batch=None, local_lr=cfg.local_lr)


def _steps(cfg: ClientConfig) -> float:
    """lr x E: one full-batch step's update is exactly -lr x the gradient; E steps of a
    model that barely moves add about E of them."""
    assert isinstance(cfg, FedAvgConfig)
    return cfg.local_lr * cfg.local_steps


@protocol(FedAvgConfig, descent=True, per_example=False, assumed=_blind, scale=_steps)
def fedavg(loss: Loss, params: Params, x: Tensor, y: Tensor, cfg: ClientConfig) -> Params:
    """theta_E - theta_0 after E local SGD steps; step e uses ``local_batch`` images taken in
    order from the B images, cycling (step e starts at image e * local_batch mod B).

    Written as a plain unrolled loop of ``torch.func.grad``: differentiable in ``x`` and
    ``y`` through every step, so the attacker's simulation is exact."""
    assert isinstance(cfg, FedAvgConfig)
    count = len(x)
    size = cfg.local_batch or count
    current = params
    for step in range(cfg.local_steps):
        rows = [(step * size + i) % count for i in range(size)]
        grads = torch.func.grad(loss)(current, x[rows], y[rows])
        current = {k: current[k] - cfg.local_lr * grads[k] for k in current}
    return {k: current[k] - params[k] for k in params}


def check_batch(cfg: ClientConfig, batch_size: int) -> None:
    """A local batch cannot be larger than the client's images (``dataset.batch_size``)."""
    if isinstance(cfg, FedAvgConfig):
        require(
            cfg.local_batch is None or cfg.local_batch <= batch_size,
            "client.local_batch",
            cfg.local_batch,
            f"must be <= dataset.batch_size={batch_size} (the client's images)",
        )


# --- the client, as the defenses and the attacker see it --------------------------------


@dataclass(frozen=True)
class Client:
    """The model whose share is defended and the batch behind it, for defenses that need
    more than the shared tensors (per-example clipping, Soteria).

    ``per_example``: the share is the mean of the B examples' gradients, so a per-example
    defense may recompute and clip them one by one (FedSGD); an update after local steps
    is clipped as a whole.
    """

    model: nn.Module
    images: Tensor  # (B, C, H, W) in [0, 1]
    targets: Tensor  # (B, num_classes) label distributions (one-hot for true labels)
    per_example: bool = True

    @property
    def batch_size(self) -> int:
        return len(self.images)


def probe(net: nn.Module, batch_size: int, shape: tuple[int, ...], num_classes: int) -> Client:
    """A client of ``net`` holding ``batch_size`` seeded random images of ``shape`` (C, H,
    W), labels 0, 1, ...: what preflight runs the user's code on before any job."""
    images = torch.rand((batch_size, *shape), generator=torch.Generator().manual_seed(0))
    labels = torch.arange(batch_size) % num_classes
    return Client(net, images, torch.nn.functional.one_hot(labels, num_classes).float())


def share(client: Client, cfg: ClientConfig) -> list[Tensor]:
    """What ``client`` shares under protocol ``cfg``: one tensor per parameter, in
    ``model.parameters()`` order."""
    params = {k: v.detach() for k, v in client.model.named_parameters()}
    out = CLIENTS[cfg.name].update(
        loss_of(client.model), params, client.images, client.targets, cfg
    )
    return [out[k].detach() for k in params]


def gradient(client: Client) -> list[Tensor]:
    """The parameter gradient of the client's mean loss over its batch at its model's
    weights, in ``model.parameters()`` order: FedSGD's share, and one local SGD step's
    direction in the utility experiment."""
    return share(client, FedSGDConfig())


def per_example_gradients(client: Client) -> list[Tensor]:
    """Each example's parameter gradient: one ``(B, *param.shape)`` tensor per parameter,
    in ``model.parameters()`` order; their mean over B is the batch gradient.

    Uses torch.func (``vmap(grad)``): one vectorised pass instead of B backward passes.
    """
    params = {k: v.detach() for k, v in client.model.named_parameters()}
    loss = loss_of(client.model)

    def one(p: Params, x: Tensor, t: Tensor) -> Tensor:
        return loss(p, x[None], t[None])

    per_example = torch.func.vmap(torch.func.grad(one), in_dims=(None, 0, 0))(
        params, client.images, client.targets
    )
    return [per_example[k] for k in params]


@dataclass(frozen=True)
class Simulator:
    """The attacker's model of the T clients it attacks: the architecture ``model``, the
    weights (the model's own, or ``params``: one set per trial, ``(T, *param.shape)``) and
    the protocol it assumes.

    ``simulator(x, y)`` gives, for dummies ``x`` ``(N, B, C, H, W)`` with label
    distributions ``y`` ``(N, B, num_classes)`` (N a multiple of T; row n is trial n % T),
    what each would share: one ``(N, *param.shape)`` tensor per parameter, with a graph
    back to ``x`` and ``y`` whatever the grad mode. With ``clients`` > 1 the B images are
    that many clients' batches in turn and the share is the mean of their updates (what
    a secure aggregation reveals, divided by the known number of clients).
    ``functional``: always the torch.func path (inside torch.func transforms and
    torch.compile, where the cheaper plain autograd path for one problem cannot run).
    """

    model: nn.Module
    protocol: ClientConfig
    params: Params | None = None
    clients: int = 1
    functional: bool = False

    def __call__(self, x: Tensor, y: Tensor, params: Params | None = None) -> list[Tensor]:
        """What each of the N dummies would share (see the class); ``params`` replaces
        ``self.params`` for this call (the engine's weights of the rows still running)."""
        params = self.params if params is None else params
        names = [k for k, _ in self.model.named_parameters()]
        entry = CLIENTS[self.protocol.name]
        # a mean of equal batches' mean-loss gradients is the gradient of all of them
        split = self.clients > 1 and not entry.plain_gradient
        plain = params is None and entry.plain_gradient and len(x) == 1
        if plain and not self.functional:
            # one problem: plain autograd, ~30% cheaper than vmap, nothing to batch
            with torch.enable_grad():
                loss = soft_cross_entropy(self.model(x[0]), y[0])
                grads = torch.autograd.grad(loss, list(self.model.parameters()), create_graph=True)
            return [g[None] for g in grads]
        update = entry.update
        loss = loss_of(self.model)

        def client(p: Params, xi: Tensor, yi: Tensor) -> Params:
            return update(loss, p, xi, yi, self.protocol)

        def one(p: Params, xi: Tensor, yi: Tensor) -> Params:
            if not split:
                return client(p, xi, yi)
            xs = xi.view(self.clients, -1, *xi.shape[1:])
            ys = yi.view(self.clients, -1, *yi.shape[1:])
            each = torch.func.vmap(client, in_dims=(None, 0, 0))(p, xs, ys)
            return {k: v.mean(0) for k, v in each.items()}

        with torch.enable_grad():
            if params is None:
                own = {k: v.detach() for k, v in self.model.named_parameters()}
                out = torch.func.vmap(one, in_dims=(None, 0, 0))(own, x, y)
            elif len(next(iter(params.values()))) == len(x):  # one set of weights per row
                out = torch.func.vmap(one, in_dims=(0, 0, 0))(params, x, y)
            else:  # problems are restart-major: (R, T) with trial t's weights for column t
                trials = len(next(iter(params.values())))
                rows = x.shape[0] // trials
                per_trial = torch.func.vmap(one, in_dims=(0, 0, 0))
                out = torch.func.vmap(per_trial, in_dims=(None, 0, 0))(
                    params,
                    x.view(rows, trials, *x.shape[1:]),
                    y.view(rows, trials, *y.shape[1:]),
                )
                out = {k: v.flatten(0, 1) for k, v in out.items()}
        return [out[k] for k in names]

    def as_gradient(self, shared: list[Tensor]) -> list[Tensor]:
        """``shared`` read as one gradient: with a gradient's sign (label recovery reads
        signs) and divided by the protocol's ``scale`` (count-aware recovery reads sizes)."""
        entry = CLIENTS[self.protocol.name]
        factor = (-1.0 if entry.descent else 1.0) / entry.scale(self.protocol)
        return [s * factor for s in shared] if factor != 1.0 else list(shared)
