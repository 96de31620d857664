"""The closed-form attack on a fully connected first layer (``attack=analytic``).

For a first layer ``z = W x + b`` the update's rows satisfy, for every unit j,
``dL/dW_j = mean_i d_ij x_i`` and ``dL/db_j = mean_i d_ij`` with ``d_ij = dL/dz_ij`` for
image i. With one image (B = 1) every unit with ``dL/db_j != 0`` gives the image exactly:
``x = (dL/dW_j) / (dL/db_j)`` (Phong et al. 2017; Geiping et al. 2020, sec. 3). With a
batch, a unit's ratio is the mean of the images it responded to, weighted by ``d_ij``:
the image itself where only one image reached the unit (a ReLU unit active for one image
alone, or a class row of a softmax regression whose other images' weights are small),
a blend otherwise. The attack therefore computes every unit's ratio, groups ratios that
agree (the units that saw one image alone agree on it exactly), and returns the B largest
groups, each as the least-squares image of its units (``sum_j b_j W_j / sum_j b_j^2``,
exact at B = 1). Labels are read from the last layer (``labels.idlg_labels``).

It needs no optimisation and no dummy data: it reads the observed update alone. What it
assumes goes into the result: the first layer, and how many units each image rests on.
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
from gradinv_exp.base.options import ConfigError, require

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn
else:
    torch = lazy.module("torch", __name__)  # loaded on first use (see base/lazy.py)


@dataclass
class AnalyticConfig(BaseAttackConfig):
    """The closed form; ``tolerance``: two units' ratios whose RMS difference is below it
    (on [0, 1] pixels) show the same image."""

    family: str = "analytic"
    tolerance: float = 1e-3
    min_bias_grad: float = 1e-12  # units whose |dL/db_j| is below this carry no image

    def __post_init__(self) -> None:
        require(0 < self.tolerance < 1, "attack.tolerance", self.tolerance, "must be in (0, 1)")
        require(
            self.min_bias_grad >= 0,
            "attack.min_bias_grad",
            self.min_bias_grad,
            "must be >= 0",
        )


def first_linear(model: nn.Module) -> nn.Module | None:
    """The normalisation in front of the model's first layer (None: none), once the first
    layer is checked to be an ``nn.Linear`` with a bias, whose weight and bias are then
    the first two of ``model.parameters()``; a ValueError says why not."""
    from torchvision.transforms import Normalize

    normalise = None
    for module in model.modules():
        if isinstance(module, Normalize):
            normalise = module
        elif isinstance(module, torch.nn.Linear):
            if module.bias is None:
                raise ValueError("its first nn.Linear has no bias")
            return normalise
        elif any(True for _ in module.parameters(recurse=False)):
            raise ValueError(f"its first layer with parameters is a {type(module).__name__}")
    raise ValueError("it has no nn.Linear layer")


def check(cfg: RunConfig, net: nn.Module) -> None:
    """Preflight: the model must start with a fully connected layer (one line otherwise)."""
    try:
        first_linear(net)
    except ValueError as err:
        raise ConfigError(
            f"model={cfg.model.name!r} is not allowed with attack={cfg.attack.name}: the "
            f"closed form reads a fully connected first layer, and {err} "
            "(use model=mlp or model=linear)"
        ) from None


def ratios(weight: Tensor, bias: Tensor, floor: float) -> tuple[Tensor, Tensor]:
    """Each unit's image ``(U, D)`` = ``weight (U, D) / bias (U,)`` for the units whose
    ``|bias| > floor``, and those units' bias gradients ``(U,)``."""
    keep = bias.abs() > floor
    return weight[keep] / bias[keep, None], bias[keep]


def group(candidates: Tensor, bias: Tensor, count: int, tolerance: float) -> tuple[Tensor, Tensor]:
    """The ``count`` largest groups of agreeing ratios: images ``(count, D)`` (each the
    least-squares image of its units) and each group's size ``(count,)`` (0: no unit
    left, a blank image). Greedy: the unit with the largest ``|bias|`` seeds a group,
    every unit within ``tolerance`` RMS of its ratio joins, repeat."""
    dim = candidates.shape[1]
    left = torch.ones(len(candidates), dtype=torch.bool)
    order = torch.argsort(bias.abs(), descending=True)
    groups: list[tuple[int, Tensor]] = []
    for seed in order.tolist():
        if not left[seed]:
            continue
        rms = (candidates - candidates[seed]).pow(2).mean(1).sqrt()
        members = left & (rms < tolerance)
        members[seed] = True
        left &= ~members
        b = bias[members]
        weight = candidates[members] * b[:, None]
        groups.append((int(members.sum()), (b[:, None] * weight).sum(0) / b.pow(2).sum()))
    groups.sort(key=lambda g: -g[0])
    images = torch.full((count, dim), 0.5, dtype=candidates.dtype)
    sizes = torch.zeros(count, dtype=torch.long)
    for k, (size, image) in enumerate(groups[:count]):
        images[k], sizes[k] = image, size
    return images, sizes


@family(AnalyticConfig, check=check)
@each
def reconstruct(target: Target, context: Context) -> AttackResult:
    """Read ``observed.images`` images per trial from the first layer's rows (see the
    module docstring); images ``(T, B, C, H, W)`` clamped to [0, 1]."""
    from gradinv_exp.attacks.labels import idlg_labels, last_linear_weight
    from gradinv_exp.client import CLIENTS

    observed, server, cfg = target.observed, target.server, target.cfg
    normalise = first_linear(server.model)
    sign = -1.0 if CLIENTS[observed.protocol.name].descent else 1.0
    weight, bias = observed.update[0], observed.update[1]
    trials, count = observed.trials, observed.images
    images = []
    for t in range(trials):
        w, b = (sign * weight[t]).double().cpu(), (sign * bias[t]).double().cpu()
        images.append(group(*ratios(w, b, cfg.min_bias_grad), count, cfg.tolerance)[0])
    out = torch.stack(images).view(observed.shape)
    if normalise is not None:  # the layer saw normalised images: undo it
        mean = torch.tensor(normalise.mean, dtype=out.dtype).view(-1, 1, 1)
        std = torch.tensor(normalise.std, dtype=out.dtype).view(-1, 1, 1)
        out = out * std + mean
    last = observed.update[last_linear_weight(server.model)]
    labels = idlg_labels(sign * last, count)
    return AttackResult.read_out(out.float().clamp(0, 1), labels, {"assumed.first_layer": "linear"})
