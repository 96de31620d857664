"""The ``server`` group's registry: what the server controls, and the model it sends to
the clients.

An ``honest`` server (``honest.py``) sends the model under attack as it is. A malicious
one modifies it first (``imprint.py``: a block in front of it whose gradients give images
away). Either way the clients compute their updates on what was sent, and the
attack receives the ``Server``: the architecture and weights it sent and what it set up,
never the clients' data.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from omegaconf import MISSING

from gradinv_exp.base import lazy
from gradinv_exp.base.options import Registry, option_name

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn
else:
    torch = lazy.module("torch", __name__)  # loaded on first use (see base/lazy.py)


@dataclass
class ServerConfig:
    """Base of every server schema; ``name`` selects the option in ``SERVERS``."""

    name: str = MISSING


@dataclass(frozen=True)
class Server:
    """What the server controls for T trials: the model it sent (``model``: the
    architecture, with any block it inserted; its weights, or ``params``, one
    ``(T, *param.shape)`` tensor per parameter when each trial attacks its own model),
    what it set up and keeps (``secrets``, e.g. an imprint block's bin edges), and the
    images of its own with their labels (``images`` ``(M, C, H, W)``, ``labels`` ``(M,)``;
    a random part of the data set disjoint from every client's, None when no one asked for
    them): an imprint server's public images, a learned attacker's auxiliary set."""

    model: nn.Module
    params: dict[str, Tensor] | None = None
    name: str = "honest"
    secrets: dict[str, Any] = field(default_factory=dict)
    images: Tensor | None = None
    labels: Tensor | None = None


# (cfg, the models to attack (one, or one per trial), images the server has (M, C, H, W),
#  generator) -> (the models the clients receive, in the same order; the server's secrets)
Send = Callable[[Any, Sequence["nn.Module"], "Tensor", "torch.Generator"], tuple[list, dict]]


@dataclass(frozen=True)
class ServerOption:
    """One option of the ``server`` group. ``send`` builds what the clients receive;
    ``malicious``: it modifies the model (an active attacker in the SoK's terms);
    ``public_images``: how many images of its own it needs (``send``'s third argument,
    from the server's part of the data set, never a client's image; 0: none)."""

    name: str
    schema: type[ServerConfig]
    send: Send
    malicious: bool
    public_images: Callable[[Any], int] = lambda cfg: 0


SERVERS: Registry[ServerOption] = Registry("server")


def server(
    schema: type[ServerConfig],
    *,
    malicious: bool,
    public_images: Callable[[Any], int] = lambda cfg: 0,
) -> Callable[[Send], Send]:
    """Register the decorated ``send`` as the server option ``schema`` configures."""

    def register(fn: Send) -> Send:
        SERVERS.add(ServerOption(option_name(schema), schema, fn, malicious, public_images))
        return fn

    return register


def controlled(
    option: str,
    nets: Sequence[nn.Module],
    secrets: dict[str, Any],
    own: tuple[Tensor, Tensor] | None = None,
) -> Server:
    """The ``Server`` for the models ``nets`` it sent (one shared, or one per trial) and
    its own images and labels ``own``."""
    images, labels = (None, None) if own is None else own
    if len(nets) == 1:
        return Server(nets[0], None, option, secrets, images, labels)
    names = [k for k, _ in nets[0].named_parameters()]
    params = {
        k: torch.stack([dict(net.named_parameters())[k].detach() for net in nets]) for k in names
    }
    return Server(nets[0], params, option, secrets, images, labels)
