"""``attack=imprint``: the read-out of the malicious server ``server=imprint``
(``servers/imprint.py``, where the block and its algebra are described). Subtracting
adjacent units' rows of the update leaves the images whose measurement lies between two
thresholds: where that bin holds one image, ``(dW_i - dW_i+1) / (db_i - db_i+1)`` is that
image exactly; a bin with two or more gives their blend.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from gradinv_exp.attacks.contract import (
    AttackResult,
    BaseAttackConfig,
    Context,
    RunConfig,
    Target,
    each,
    family,
)
from gradinv_exp.base import lazy
from gradinv_exp.base.options import require

if TYPE_CHECKING:
    import torch
    from torch import Tensor
else:
    torch = lazy.module("torch", __name__)  # loaded on first use (see base/lazy.py)


@dataclass
class ImprintAttackConfig(BaseAttackConfig):
    """The read-out of ``server=imprint``; ``min_bias_grad``: a bin whose bias-gradient
    difference is at most this (relative to the largest) holds no image."""

    family: str = "imprint"
    min_bias_grad: float = 1e-6

    def __post_init__(self) -> None:
        require(
            0 <= self.min_bias_grad < 1,
            "attack.min_bias_grad",
            self.min_bias_grad,
            "must be in [0, 1)",
        )


def rules(cfg: RunConfig) -> None:
    """The images behind one update must fit the bins (a bin holds one image at best)."""
    bins = cfg.server.bins  # type: ignore[attr-defined]  # server=imprint (its rules' own)
    require(
        cfg.images <= bins,
        "dataset.batch_size",
        cfg.dataset.batch_size,
        f"the server reads one image per bin: clients x dataset.batch_size = {cfg.images} "
        f"must be <= server.bins={bins}",
    )


def read_bins(weight: Tensor, bias: Tensor, floor: float) -> tuple[Tensor, Tensor]:
    """Images ``(K, D)`` from the imprint rows ``weight`` ``(k, D)``, ``bias`` ``(k,)``
    (thresholds increasing), one per bin with ``|bias difference| > floor x`` the largest,
    and those differences ``(K,)``; the top unit is a bin of its own (above every
    threshold)."""
    dw = weight - torch.cat([weight[1:], torch.zeros_like(weight[:1])])
    db = bias - torch.cat([bias[1:], torch.zeros_like(bias[:1])])
    keep = db.abs() > floor * db.abs().max()
    return dw[keep] / db[keep, None], db[keep]


@family(ImprintAttackConfig, servers=("imprint",), rules=rules)
@each
def reconstruct(target: Target, context: Context) -> AttackResult:
    """Read up to ``observed.images`` images per trial, one per occupied bin (largest
    bias-gradient difference first). With fewer occupied bins than images some bins hold
    several: the slots left repeat the bins' images in the same order (a shared bin's
    blend is the update's best guess at each of its images; grey only where no bin is
    occupied). Images ``(T, B, C, H, W)``."""
    from gradinv_exp.attacks.labels import idlg_labels, last_linear_weight
    from gradinv_exp.client import CLIENTS

    observed, server, cfg = target.observed, target.server, target.cfg
    sign = -1.0 if CLIENTS[observed.protocol.name].descent else 1.0
    trials, count = observed.trials, observed.images
    size = observed.update[0].shape[-1]  # D: the imprint rows' width, one image's pixels
    out = torch.full((trials, count, size), 0.5)
    found = []
    for t in range(trials):
        w = (sign * observed.update[0][t]).double().cpu()
        b = (sign * observed.update[1][t]).double().cpu()
        images, db = read_bins(w, b, cfg.min_bias_grad)
        order = torch.argsort(db.abs(), descending=True)[:count]
        if len(order):
            out[t] = images[order[torch.arange(count) % len(order)]].float()
        found.append(len(order))
    out = out.view(observed.shape).clamp(0, 1)
    labels = idlg_labels(sign * observed.update[last_linear_weight(server.model)], count)
    return AttackResult.read_out(out, labels, {"assumed.bins_occupied": float(sum(found)) / trials})
