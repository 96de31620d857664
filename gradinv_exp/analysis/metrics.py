"""Reconstruction quality: per-image MSE, PSNR and SSIM (scikit-image), LPIPS
(``perceptual.py``, when its weights are available), label accuracy.

Images are ``(B, C, H, W)`` in [0, 1]; reconstructions are clamped to [0, 1] before
scoring. With B > 1 the attack may find the images in any order, so reconstructions are
first matched one-to-one to the truth by minimum total MSE (Hungarian assignment).
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from torch import Tensor, nn

from gradinv_exp.analysis import perceptual
from gradinv_exp.analysis.metric_table import METRICS, PSNR_CAP_DB


def _numpy(images: Tensor) -> np.ndarray:
    """(B, C, H, W) tensor -> (B, H, W, C) float64 array in [0, 1]."""
    return images.detach().clamp(0, 1).permute(0, 2, 3, 1).cpu().double().numpy()


def mse(truth: Tensor, recon: Tensor) -> np.ndarray:
    """Per-image mean squared error, shape (B,)."""
    diff = _numpy(truth) - _numpy(recon)
    return (diff**2).reshape(len(diff), -1).mean(axis=1)


def psnr(truth: Tensor, recon: Tensor) -> np.ndarray:
    """Per-image PSNR in dB on [0, 1] images, capped at ``PSNR_CAP_DB``; shape (B,)."""
    t, r = _numpy(truth), _numpy(recon)
    with np.errstate(divide="ignore"):
        values = [peak_signal_noise_ratio(a, b, data_range=1.0) for a, b in zip(t, r)]
    return np.minimum(np.array(values), PSNR_CAP_DB)


def ssim(truth: Tensor, recon: Tensor) -> np.ndarray:
    """Per-image SSIM (scikit-image, 7x7 window or the image side if smaller); shape (B,)."""
    t, r = _numpy(truth), _numpy(recon)
    win = min(7, t.shape[1], t.shape[2]) | 1  # odd, at most the image side
    return np.array(
        [
            structural_similarity(a, b, data_range=1.0, channel_axis=-1, win_size=win)
            for a, b in zip(t, r)
        ]
    )


def match(truth: Tensor, recon: Tensor) -> np.ndarray:
    """Permutation ``p`` minimising total MSE: recon[p[i]] is matched to truth[i]."""
    t = _numpy(truth).reshape(len(truth), -1)
    r = _numpy(recon).reshape(len(recon), -1)
    cost = ((t[:, None, :] - r[None, :, :]) ** 2).mean(axis=2)
    rows, cols = linear_sum_assignment(cost)
    return cols[np.argsort(rows)]


def matched(truth: Tensor, recon: Tensor) -> Tensor:
    """``recon`` reordered so that image i is the one matched to ``truth[i]``."""
    return recon[torch.as_tensor(match(truth, recon), device=recon.device)]


@dataclass(frozen=True)
class Scored:
    """One batch to score, its reconstructions already matched to it: ``truth`` and
    ``recon`` ``(B, C, H, W)``, their labels ``(B,)``, the LPIPS network if loaded."""

    truth: Tensor
    recon: Tensor
    labels: Tensor
    recon_labels: Tensor
    lpips: nn.Module | None = None


def psnr_of(s: Scored) -> np.ndarray:
    return psnr(s.truth, s.recon)


def ssim_of(s: Scored) -> np.ndarray:
    return ssim(s.truth, s.recon)


def mse_of(s: Scored) -> np.ndarray:
    return mse(s.truth, s.recon)


def lpips_of(s: Scored) -> np.ndarray:
    """NaN without an LPIPS network (see ``perceptual.load``)."""
    if s.lpips is None:
        return np.full(len(s.truth), np.nan)
    return perceptual.distance(s.lpips, s.truth, s.recon).double().numpy()


def label_acc_of(s: Scored) -> np.ndarray:
    return (s.labels.cpu() == s.recon_labels.cpu()).double().numpy()


@functools.cache
def function(target: str) -> Callable[[Scored], np.ndarray]:
    """A metric entry's function, ``module:function`` imported once (the table is the
    package's own: no user path is searched)."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def evaluate(
    truth: Tensor,
    labels: Tensor,
    recon: Tensor,
    recon_labels: Tensor,
    lpips: nn.Module | None = None,
) -> dict[str, np.ndarray]:
    """Every metric of ``metric_table.METRICS`` per image after matching, each of shape
    (B,) and in the table's order (each entry's ``fn``), then the matching ``order``."""
    order = torch.as_tensor(match(truth, recon), device=recon.device)
    scored = Scored(truth, recon[order], labels, recon_labels[order], lpips)
    values = {m.name: function(m.fn)(scored) for m in METRICS}
    return values | {"order": order.cpu().numpy()}
