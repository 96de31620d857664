"""The malicious server of "Robbing the Fed" (Fowl et al., ICLR 2022): ``server=imprint``
sends the model with an imprint block in front, and ``attack=imprint``
(``attacks/imprint.py``) reads images back.

The block maps an image ``x`` (flattened, D values in [0, 1]) to ``k = server.bins`` units
``h_i = ReLU(m . x - t_i)`` that share one measurement row ``m`` (``brightness``: the mean
pixel; ``random``: a seeded random unit direction) and differ in their bias: thresholds
``t_1 < ... < t_k`` at the quantiles of a normal distribution fitted to the measurement
over images the server has of its own (never the clients' batch), so that about as many
images fall between each pair.
A linear layer with equal columns maps the units back to D values, reshaped to the image,
in front of the model under attack; every unit therefore receives the same gradient
``g_n`` from image n, and the update's rows are, for the units an image activates,

    dL/dW_i = mean_n [m . x_n > t_i] g_n x_n,    dL/db_i = mean_n [m . x_n > t_i] g_n.

Subtracting adjacent units leaves the images whose measurement lies in (t_i, t_i+1]:
where that bin holds one image, ``(dW_i - dW_i+1) / (db_i - db_i+1)`` is that image
exactly. A bin with two or more images gives their blend; the attack returns every bin
that holds anything, most informative first. Local steps (FedAvg) keep this exact while
no image changes bins between steps: each step adds ``g_n^(e) x_n`` for the same ``x_n``.
A secure aggregation of N clients is one batch of their images to the block.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gradinv_exp.base import lazy
from gradinv_exp.base.options import one_of, require
from gradinv_exp.servers.registry import ServerConfig, server

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn
else:
    torch = lazy.module("torch", __name__)  # loaded on first use (see base/lazy.py)

MEASUREMENTS = ("brightness", "random")


@dataclass
class ImprintServerConfig(ServerConfig):
    """``bins``: units of the imprint block (at least the images behind one update);
    ``measurement``: what the shared row measures; ``public_images``: images of its own
    the server estimates the measurement's quantiles from."""

    name: str = "imprint"
    bins: int = 128
    measurement: str = "brightness"
    public_images: int = 64

    def __post_init__(self) -> None:
        require(self.bins >= 2, "server.bins", self.bins, "must be >= 2")
        one_of("server.measurement", self.measurement, MEASUREMENTS)
        require(
            self.public_images >= 2,
            "server.public_images",
            self.public_images,
            "must be >= 2 (the server estimates quantiles from them)",
        )


def imprinted(model: nn.Module, row: Tensor, cuts: Tensor, shape: torch.Size) -> nn.Module:
    """``model`` with the imprint block in front: images ``(B, *shape)`` -> flattened ->
    ``ReLU(row . x - cuts)`` (one unit per threshold) -> equal columns back to the
    image's size -> ``model``. Its first two parameters are the imprint rows."""
    bins, size = len(cuts), row.numel()
    block = torch.nn.Linear(size, bins)
    back = torch.nn.Linear(bins, size)
    with torch.no_grad():
        block.weight.copy_(row.flatten().expand(bins, size))
        block.bias.copy_(-cuts)
        back.weight.fill_(1.0 / bins)
        back.bias.zero_()
    layers = [torch.nn.Flatten(), block, torch.nn.ReLU(), back, torch.nn.Unflatten(1, shape)]
    return torch.nn.Sequential(*layers, model)


def measurement_row(cfg: ImprintServerConfig, size: int, generator: torch.Generator) -> Tensor:
    """The measurement ``m`` ``(size,)``: the mean pixel, or a random unit direction."""
    if cfg.measurement == "brightness":
        return torch.full((size,), 1.0 / size)
    row = torch.randn(size, generator=generator)
    return row / row.norm()


def thresholds(values: Tensor, bins: int) -> Tensor:
    """``bins`` increasing thresholds ``(bins,)``: the lowest below every value the server
    has seen, the others at the quantiles ``i / bins`` of the normal distribution fitted
    to ``values`` (their mean and std), so that each bin holds about the same share of
    images. A fit, as Fowl et al. place their bins, rather than the empirical quantiles:
    64 public images cannot place 128 quantiles evenly (on lfw, B = 64 and 128 bins,
    over 40 random splits: 0.59 of a batch alone in its bin against 0.47)."""
    values = values.double()
    spread = float(values.max() - values.min()) or 1.0
    fit = torch.distributions.Normal(values.mean(), values.std().clamp_min(1e-6 * spread))
    cuts = fit.icdf(torch.arange(bins, dtype=torch.float64).clamp_min(0.5) / bins)
    cuts[0] = min(float(values.min()), float(cuts[1])) - spread  # every image: first unit
    cuts = cuts.float()
    for i in range(1, bins):  # equal quantiles (repeated values): keep them increasing
        cuts[i] = torch.maximum(cuts[i], torch.nextafter(cuts[i - 1], cuts[i - 1] + 1))
    return cuts


@server(ImprintServerConfig, malicious=True, public_images=lambda cfg: cfg.public_images)
def imprint(
    cfg: ImprintServerConfig,
    nets: Sequence[nn.Module],
    public: Tensor,
    generator: torch.Generator,
) -> tuple[list[nn.Module], dict[str, Any]]:
    """Each model with the same imprint block in front (thresholds from ``public``)."""
    row = measurement_row(cfg, public[0].numel(), generator)
    cuts = thresholds(public.flatten(1) @ row, cfg.bins)
    sent = [imprinted(net, row, cuts, public.shape[1:]) for net in nets]
    return sent, {"thresholds": cuts}
