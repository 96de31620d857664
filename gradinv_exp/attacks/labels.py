"""Labels in the attack: the label modes (``attack.labels``) and analytic label recovery.

A label mode gives each problem's starting label distributions ``(N, B, num_classes)``
and says whether the engine optimises them: ``joint`` draws logits from N(0, 1) and
optimises them with the images (DLG); ``idlg`` reads the labels from the shared gradient
and keeps them (iDLG); ``given`` uses the true labels (the threat model where the server
knows them).

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

from gradinv_exp import lazy
from gradinv_exp.options import Registry

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn
else:
    torch = lazy.module("torch", __name__)  # loaded on first use (see lazy.py)


@dataclass(frozen=True)
class Evidence:
    """What a label mode may look at, for T trials of B images."""

    model: nn.Module
    gradient: Sequence[Tensor]  # the shares with a gradient's sign, (T, *param.shape) each
    batch: int  # B
    num_classes: int
    known: Tensor | None  # (T, B) true labels, where the threat model grants them
    generator: torch.Generator


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


LABELS.add(LabelMode("joint", optimised=True, start=_joint))
LABELS.add(LabelMode("idlg", optimised=False, start=_idlg, reads_last_linear=True))
LABELS.add(LabelMode("given", optimised=False, start=_given, granted=True))


def _onehot(labels: Tensor, num_classes: int) -> Tensor:
    return torch.nn.functional.one_hot(labels.cpu(), num_classes).float()


def last_linear_weight(model: nn.Module) -> int:
    """Index, in ``list(model.parameters())``, of the last ``nn.Linear``'s weight."""
    linears = [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)]
    if not linears:
        raise ValueError("label recovery needs a model that ends in an nn.Linear layer")
    ids = [id(p) for p in model.parameters()]
    return ids.index(id(linears[-1]))


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
