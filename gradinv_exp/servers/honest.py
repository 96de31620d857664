"""``server=honest``: the server sends the model under attack as it is."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gradinv_exp.servers.registry import ServerConfig, server

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn


@dataclass
class HonestConfig(ServerConfig):
    name: str = "honest"


@server(HonestConfig, malicious=False)
def honest(
    cfg: HonestConfig, nets: Sequence[nn.Module], public: Tensor, generator: torch.Generator
) -> tuple[list[nn.Module], dict[str, Any]]:
    """Sends the models as they are."""
    return list(nets), {}
