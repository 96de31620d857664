"""LPIPS (Zhang et al. 2018), the perceptual distance the field reports next to PSNR and
SSIM, with the AlexNet backbone as breaching reports it: 0 for identical images, larger
for images that look more different.

The ``lpips`` package (the authors' own) ships the calibrated linear layers; the AlexNet
backbone's ImageNet weights are torchvision's, read from the torch hub cache
(``$TORCH_HOME/hub/checkpoints``) or downloaded there once. Without them and without
internet, LPIPS cannot be computed: ``load`` returns None and says why, and the run
records ``lpips: null``. AlexNet needs images of at least 32x32 (its strides shrink
smaller ones to nothing), so smaller images have no LPIPS either.
"""

from __future__ import annotations

import contextlib
import functools
import io
import socket
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from torch import Tensor, nn

MIN_SIZE = 32
DOWNLOAD_TIMEOUT_S = 20.0


def backbone_file() -> Path:
    """Where torchvision keeps the AlexNet weights in the torch hub cache."""
    from torchvision.models import AlexNet_Weights

    name = Path(AlexNet_Weights.IMAGENET1K_V1.url).name
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def _backbone_state() -> dict[str, Tensor]:
    """AlexNet's ImageNet state dict, from the hub cache or downloaded into it (with a
    socket timeout, so a closed network fails in seconds; torch's "Downloading ..." line
    is kept off stdout, where the compare and help commands print)."""
    from torchvision.models import AlexNet_Weights

    file = backbone_file()
    if file.is_file():
        return torch.load(file, map_location="cpu", weights_only=True)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return torch.hub.load_state_dict_from_url(
                AlexNet_Weights.IMAGENET1K_V1.url, progress=False, map_location="cpu"
            )
    finally:
        socket.setdefaulttimeout(previous)


@functools.lru_cache(maxsize=1)
def load() -> tuple[nn.Module | None, str]:
    """The LPIPS network (eval mode, CPU) and "" or None and the reason it is missing.
    Cached: one load per process, shared by every run and sweep job in it."""
    try:
        state = _backbone_state()
    except Exception as err:  # URLError, socket timeout, HTTP error, corrupt file
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return (
            None,
            f"AlexNet weights not in {backbone_file().parent} and not downloadable ({first})",
        )
    import lpips  # the authors' package: calibrated linear heads on the backbone's features

    with warnings.catch_warnings():  # it asks torchvision with the deprecated `pretrained=`
        warnings.simplefilter("ignore")
        net = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False)
    features = {f"{k.split('.', 1)[1]}": v for k, v in state.items() if k.startswith("features.")}
    for part in net.net.children():  # slices of AlexNet's `features`, same layer indices
        for index, layer in part.named_children():
            own = {k.split(".", 1)[1]: v for k, v in features.items() if k.split(".")[0] == index}
            if own:
                layer.load_state_dict(own)
    return net.eval(), ""


def distance(net: nn.Module, truth: Tensor, recon: Tensor) -> Tensor:
    """Per-image LPIPS ``(B,)`` between images ``(B, C, H, W)`` in [0, 1] (grey images are
    repeated to three channels)."""
    if truth.shape[1] == 1:
        truth, recon = truth.expand(-1, 3, -1, -1), recon.expand(-1, 3, -1, -1)
    with torch.no_grad():
        return net(truth.float().cpu(), recon.float().clamp(0, 1).cpu(), normalize=True).flatten()
