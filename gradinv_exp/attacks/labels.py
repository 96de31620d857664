"""Labels in the attack: the label modes (``attack.labels``) and analytic label recovery.

A label mode gives each problem's starting label distributions ``(N, B, num_classes)``
and says whether the engine optimises them: ``joint`` draws logits from N(0, 1) and
optimises them with the images (DLG); ``given`` uses the true labels (the threat model
where the server knows them). The others read the labels from the shared gradient and
keep them, each by its own rule: ``idlg`` (iDLG; batches: negative row sums, repeats by
an equal share), ``yin`` (GradInversion's rule for distinct labels: row minima) and
``llg`` (counts per class from the last layer's bias gradient, for repeated labels).

Recovery: with softmax cross-entropy, the last linear layer's weight gradient is
``dL/dW[k] = mean_i (p_ik - y_ik) * h_i`` where ``h_i >= 0`` are the features entering
that layer (after a ReLU/sigmoid/pooling). Row ``k`` is therefore negative exactly when
class ``k`` is in the batch and the model does not already predict it with certainty;
all other rows are positive. For one image the row with the negative sum is the label.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gradinv_exp.base import lazy
from gradinv_exp.base.options import Registry

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn
else:
    torch = lazy.module("torch", __name__)  # loaded on first use (see base/lazy.py)


@dataclass(frozen=True)
class Evidence:
    """What a label mode may look at, for T trials of B images."""

    model: nn.Module
    gradient: Sequence[Tensor]  # the shares with a gradient's sign, (T, *param.shape) each
    batch: int  # B
    num_classes: int
    known: Tensor | None  # (T, B) true labels, where the threat model grants them
    generator: torch.Generator
    image: tuple[int, ...] = ()  # (C, H, W) of one image, for modes that probe the model


@dataclass(frozen=True)
class LabelMode:
    """``start(evidence, restarts)`` -> ``(restarts * T, B, num_classes)``, restart-major:
    logits when ``optimised``, else fixed label distributions. ``granted``: it needs the
    true labels, which the threat model then grants the server. ``reads_last_linear``: it
    reads the gradient of the model's last ``nn.Linear`` (which the model must have)."""

    name: str
    optimised: bool
    start: Callable[[Evidence, int], Tensor]
    granted: bool = False
    reads_last_linear: bool = False


LABELS: Registry[LabelMode] = Registry("attack.labels")


def _joint(evidence: Evidence, restarts: int) -> Tensor:
    trials = len(evidence.gradient[0])
    shape = (restarts * trials, evidence.batch, evidence.num_classes)
    return torch.randn(shape, generator=evidence.generator)


def _idlg(evidence: Evidence, restarts: int) -> Tensor:
    weight = evidence.gradient[last_linear_weight(evidence.model)]
    labels = idlg_labels(weight, evidence.batch)
    return _onehot(labels, evidence.num_classes).repeat(restarts, 1, 1)


def _given(evidence: Evidence, restarts: int) -> Tensor:
    if evidence.known is None:
        raise ValueError("attack.labels=given needs the true labels, which were not granted")
    return _onehot(evidence.known, evidence.num_classes).repeat(restarts, 1, 1)


def _yin(evidence: Evidence, restarts: int) -> Tensor:
    weight = evidence.gradient[last_linear_weight(evidence.model)]
    labels = yin_labels(weight, evidence.batch)
    return _onehot(labels, evidence.num_classes).repeat(restarts, 1, 1)


def _llg(evidence: Evidence, restarts: int) -> Tensor:
    bias = last_linear_bias(evidence.model)
    index = last_linear_weight(evidence.model) if bias is None else bias
    offset, share = expected_rows(evidence.model, evidence.image, weighted=bias is None)
    labels = count_labels(evidence.gradient[index], evidence.batch, offset, share)
    return _onehot(labels, evidence.num_classes).repeat(restarts, 1, 1)


LABELS.add(LabelMode("joint", optimised=True, start=_joint))
LABELS.add(LabelMode("idlg", optimised=False, start=_idlg, reads_last_linear=True))
LABELS.add(LabelMode("given", optimised=False, start=_given, granted=True))
LABELS.add(LabelMode("yin", optimised=False, start=_yin, reads_last_linear=True))
LABELS.add(LabelMode("llg", optimised=False, start=_llg, reads_last_linear=True))


def _onehot(labels: Tensor, num_classes: int) -> Tensor:
    return torch.nn.functional.one_hot(labels.cpu(), num_classes).float()


def _last_linear(model: nn.Module) -> torch.nn.Linear:
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    if not linears:
        raise ValueError("label recovery needs a model that ends in an nn.Linear layer")
    return linears[-1]


def last_linear_weight(model: nn.Module) -> int:
    """Index, in ``list(model.parameters())``, of the last ``nn.Linear``'s weight."""
    ids = [id(p) for p in model.parameters()]
    return ids.index(id(_last_linear(model).weight))


def last_linear_bias(model: nn.Module) -> int | None:
    """Index, in ``list(model.parameters())``, of the last ``nn.Linear``'s bias (None
    when it has none)."""
    bias = _last_linear(model).bias
    return None if bias is None else [id(p) for p in model.parameters()].index(id(bias))


def idlg_labels(weight_grad: Tensor, batch_size: int) -> Tensor:
    """Labels ``(T, B)`` from the last layer's weight gradient ``(T, num_classes, features)``.

    One image (B = 1): the class whose row sums to the most negative value (iDLG, Zhao et
    al. 2020). A batch: every class with a negative row sum is present; the B most
    negative are taken. If fewer than B rows are negative (a label occurs twice), the
    remaining slots are filled by magnitude, as in LLG (Wainakh et al. 2022): each image
    is taken to contribute an equal share ``m`` = |sum of the negative row sums| / B; a
    class that takes a slot has its row sum raised by ``m``, and the most negative class
    takes the next slot. Labels come out in that order, not in the batch's order.
    """
    sums = weight_grad.flatten(2).sum(-1).double().cpu()  # (T, K)
    out = torch.empty(len(sums), batch_size, dtype=torch.long)
    for t, row in enumerate(sums):
        present = torch.nonzero(row < 0).flatten()
        first = present[torch.argsort(row[present])][:batch_size].tolist()
        if not first:  # no negative row (e.g. a defense flipped signs): the smallest sum
            first = [int(row.argmin())]
        share = row.clamp(max=0).sum() / batch_size
        left = row.clone()
        left[first] -= share
        chosen = list(first)
        while len(chosen) < batch_size:
            k = int(left.argmin())
            chosen.append(k)
            left[k] -= share
        out[t] = torch.tensor(chosen)
    return out


def yin_labels(weight_grad: Tensor, batch_size: int) -> Tensor:
    """Labels ``(T, B)`` by GradInversion's rule (Yin et al., CVPR 2021) from the last
    layer's weight gradient ``(T, num_classes, features)``: the B classes whose row has
    the most negative minimum, most negative first.

    A row's minimum is negative exactly when some image of that class is in the batch
    (its coefficient p_ik - 1 < 0 times features h_i >= 0), and it does not shrink with
    the other images' features as a sum does, so distinct labels are read exactly. The
    rule assumes distinct labels: a repeated class takes one slot and an absent class
    the other. With B > num_classes the order repeats from the start.
    """
    minima = weight_grad.flatten(2).amin(-1).double().cpu()  # (T, K)
    order = torch.argsort(minima, dim=-1)
    return order[:, torch.arange(batch_size) % order.shape[-1]]


PROBES = 64  # proxy images the model's mean prediction is estimated on


def expected_rows(
    model: nn.Module, image: tuple[int, ...], *, weighted: bool
) -> tuple[Tensor, float]:
    """What one image contributes, on average, to the last layer's row sums, estimated on
    ``PROBES`` proxy images (uniform noise of shape ``image`` = (C, H, W), a fixed seed):
    the offset ``(num_classes,)``, mean of p_k x w, and the share, mean of w, where w = 1
    for the bias and w = the image's feature sum entering the layer for the weight rows
    (``weighted``). For an untrained model the mean prediction on noise is close to that
    on the client's images (for ResNet-18, ConvNet and LeNet to a few percent of 1/K),
    which is all the count rule needs.
    """
    if not image:
        raise ValueError("attack.labels=llg needs the image shape to probe the model")
    device = next(model.parameters()).device
    probes = torch.rand((PROBES, *image), generator=torch.Generator().manual_seed(0))
    features: list[Tensor] = []
    hook = _last_linear(model).register_forward_hook(lambda m, a, out: features.append(a[0]))
    try:
        with torch.no_grad():
            probs = torch.softmax(model(probes.to(device)), -1).double().cpu()  # (P, K)
    finally:
        hook.remove()
    weight = features[0].flatten(1).sum(-1).double().cpu() if weighted else torch.ones(PROBES)
    return (probs * weight[:, None]).mean(0), float(weight.mean())


def count_labels(grad: Tensor, batch_size: int, offset: Tensor, share: float) -> Tensor:
    """Labels ``(T, B)`` with repeats, counted per class (in the spirit of LLG+, Wainakh
    et al. 2022) from the last layer's bias gradient ``(T, num_classes)`` (or its weight
    gradient ``(T, num_classes, features)``, summed per row), read as one gradient.

    With softmax cross-entropy the bias gradient is ``s_k = pbar_k - n_k / B``: pbar_k the
    batch's mean predicted probability of class k, n_k its count. With ``offset`` an
    estimate of pbar_k and ``share`` = 1 (``expected_rows``), ``n_k = B (offset_k - s_k) /
    share``; the weight rows carry each image's feature sum as a factor, which
    ``expected_rows`` estimates on average. Rounding to B slots: each slot goes to the
    class with the largest count left (its estimate minus its slots so far), so the
    labels come out most frequent first. Exact when ``offset`` is the batch's mean
    prediction (bias gradient).
    """
    sums = grad.flatten(2).sum(-1) if grad.dim() > 2 else grad
    counts = batch_size * (offset - sums.double().cpu()) / share  # (T, K) estimated n_k
    out = torch.empty(len(counts), batch_size, dtype=torch.long)
    rows = torch.arange(len(counts))
    for slot in range(batch_size):
        k = counts.argmax(-1)
        out[:, slot] = k
        counts[rows, k] -= 1
    return out
