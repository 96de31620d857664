"""Label recovery from a shared gradient, analytically (iDLG and its batch extension).

With softmax cross-entropy, the last linear layer's weight gradient is
``dL/dW[k] = mean_i (p_ik - y_ik) * h_i`` where ``h_i >= 0`` are the features entering
that layer (after a ReLU/sigmoid/pooling). Row ``k`` is therefore negative exactly when
class ``k`` is in the batch and the model does not already predict it with certainty;
all other rows are positive. For one image the row with the negative sum is the label.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def last_linear_weight(model: nn.Module) -> int:
    """Index, in ``list(model.parameters())``, of the last ``nn.Linear``'s weight."""
    linears = [m.weight for m in model.modules() if isinstance(m, nn.Linear)]
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
    sums = weight_grad.flatten(2).sum(-1).double()  # (T, K)
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
