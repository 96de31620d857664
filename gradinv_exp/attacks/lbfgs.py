"""Batched L-BFGS: T independent ``torch.optim.LBFGS`` runs in lockstep, as one computation.

Each row of the parameter matrix ``(T, D)`` is one trial with its own history, direction,
step size and stopping state. Without a line search (torch's default) the L-BFGS update is
plain arithmetic, so it batches exactly; the control flow of ``torch.optim.LBFGS.step``
(first-step scaling ``lr * min(1, 1/|g|_1)``, ``max_iter`` inner iterations, the
``tolerance_grad`` / ``tolerance_change`` exits, the ``ys > 1e-10`` curvature check, a
``history_size`` window dropping the oldest pair) is reproduced per trial with masks: a
trial that has stopped for this step keeps its state while the others go on.

Why not a loop over torch's optimiser: its two-loop recursion costs ~4 small tensor ops per
history pair (a full 100-pair history is ~800 ops per iteration, as much time as the DLG
closure on LeNet). Here the two loops run on the scalars only: with the Gram matrix
``SY[i, j] = s_i . y_j`` kept up to date, the first loop's ``alpha`` and the second's
``beta`` are two unit-triangular solves of size ``history_size``, and the vectors are formed
by four batched matrix products, plus one per new pair for its column of ``SY`` (the loops
only ever pair an older ``s`` with a newer ``y``, so the new pair's row is never needed).
That is the same recursion in exact arithmetic (equal to torch's within float rounding, see
tests/attacks/test_lbfgs.py) at a cost independent of the history length in op count. At T = 16
the history is 2 x 20 MB, beyond the L3 cache, and these five passes are most of the
update's cost (11-14 ms per iteration measured, 15-19 ms with the unused row computed).

Layout: the big vectors ``s``, ``y`` ``(T, H, D)`` sit in a ring (slot = pair number % H,
so a new pair costs one row write), while the small per-pair scalars (``SY``, ``rho``) are
kept in age order (index H-1 newest; a new pair rolls them by one). The triangular solves
need age order, and rolling the ``(T, H, H)`` Gram once per pair is ~10x cheaper than
gathering it into age order every iteration (0.1 vs 1.4 ms at T=16, H=100).

Trials whose loss or gradient becomes NaN/inf are frozen for good (they stop changing).

``state_dict()`` / ``load_state_dict()`` give and take every per-trial tensor (the history
ring, the age-ordered scalars, the last direction, step, gradient and loss, the counters),
so an attack stopped at a step boundary continues exactly (``attacks/checkpoint.py``).

On the CPU a step ends as soon as no trial is active (reading that flag is free). On an
accelerator every such read waits for the device, so there a step always runs its
``max_iter`` iterations with the stopped trials masked: the same result, no waiting.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

# what changes as the optimiser runs (the rest follows from the constructor's arguments)
STATE = (
    "s",
    "y",
    "sy",
    "rho",
    "pairs",
    "h_diag",
    "d",
    "t",
    "prev_grad",
    "prev_loss",
    "iters",
    "frozen",
)


class BatchedLBFGS:
    """L-BFGS over the rows of ``params`` (a leaf ``(T, D)``); ``step(closure)`` like torch.

    ``closure()`` evaluates all T objectives at ``params``, stores their gradient
    ``(T, D)`` in ``params.grad`` and returns the losses ``(T,)``; ``step`` returns the
    losses at the start of the step (as ``torch.optim.LBFGS`` returns the first loss).
    ``max_eval`` is torch's default ``max_iter * 5 // 4``, which without a line search
    never binds (at most ``max_iter`` evaluations per step), so it is not a parameter.
    """

    def __init__(
        self,
        params: Tensor,
        *,
        lr: float = 1.0,
        max_iter: int = 20,
        history_size: int = 100,
        tolerance_grad: float = 1e-7,
        tolerance_change: float = 1e-9,
    ) -> None:
        trials, dim = params.shape
        like = {"dtype": params.dtype, "device": params.device}
        self.params = params
        self.lr, self.max_iter, self.size = lr, max_iter, history_size
        self.tolerance_grad, self.tolerance_change = tolerance_grad, tolerance_change
        self.rows = torch.arange(trials, device=params.device)
        self.ages = torch.arange(history_size, device=params.device)
        # vectors: a ring per trial, slot = pair number % size (empty slots are zero)
        self.s = torch.zeros(trials, history_size, dim, **like)
        self.y = torch.zeros(trials, history_size, dim, **like)
        # scalars in age order, oldest first; empty (leading) entries are zero
        # s_i . y_j for i not newer than j: both loops pair an older s with a newer y only,
        # so the entries below the diagonal stay zero and cost no pass over the history
        self.sy = torch.zeros(trials, history_size, history_size, **like)
        self.rho = torch.zeros(trials, history_size, **like)  # 1 / (y_i . s_i), 0 = empty
        self.upper = torch.ones(history_size, history_size, **like).triu(1)
        self.pairs = torch.zeros(trials, dtype=torch.long, device=params.device)
        self.h_diag = torch.ones(trials, **like)
        self.d = torch.zeros(trials, dim, **like)  # last direction
        self.t = torch.zeros(trials, **like)  # last step size
        self.prev_grad = torch.zeros(trials, dim, **like)
        self.prev_loss = torch.zeros(trials, dtype=torch.float64, device=params.device)
        self.iters = torch.zeros(trials, dtype=torch.long, device=params.device)
        self.frozen = torch.zeros(trials, dtype=torch.bool, device=params.device)
        self.early_exit = params.device.type == "cpu"  # see the module docstring

    def state_dict(self) -> dict[str, Tensor]:
        """The optimiser's state: each ``STATE`` tensor (references, like torch's
        optimisers); ``s`` and ``y`` are ``(T, history_size, D)``, the rest ``(T, ...)``."""
        return {name: getattr(self, name) for name in STATE}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Continue from ``state_dict()`` of an optimiser built with the same shapes and
        settings (ValueError naming the first tensor whose shape differs)."""
        for name in STATE:
            current = getattr(self, name)
            if state[name].shape != current.shape:
                raise ValueError(
                    f"L-BFGS state {name!r} has shape {tuple(state[name].shape)}, "
                    f"this optimiser needs {tuple(current.shape)}"
                )
            setattr(self, name, state[name].to(device=current.device, dtype=current.dtype))

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor]) -> Tensor:
        """One ``torch.optim.LBFGS.step`` per trial (up to ``max_iter`` iterations)."""
        with torch.enable_grad():
            first_loss = closure()
        loss = first_loss.double()
        grad = self.params.grad.clone()
        self.frozen |= ~torch.isfinite(first_loss) | ~torch.isfinite(grad).all(1)
        active = ~self.frozen & (grad.abs().amax(1) > self.tolerance_grad)
        for n_iter in range(1, self.max_iter + 1):
            if self.early_exit and not bool(active.any()):
                break
            first = self.iters == 0
            self.iters += active
            direction = -grad
            later = active & ~first
            if not self.early_exit or bool(later.any()):
                self._remember(grad, later)
                direction = torch.where(later[:, None], self._two_loop(grad), direction)
            keep = active[:, None]
            self.d = torch.where(keep, direction, self.d)
            self.prev_grad = torch.where(keep, grad, self.prev_grad)
            self.prev_loss = torch.where(active, loss, self.prev_loss)
            scaled = torch.clamp(1.0 / grad.abs().sum(1), max=1.0) * self.lr
            self.t = torch.where(active, torch.where(first, scaled, self.lr), self.t)
            descent = torch.linalg.vecdot(grad, self.d) <= -self.tolerance_change
            active = active & descent
            self.params.add_(torch.where(active[:, None], self.d * self.t[:, None], 0.0))
            if n_iter == self.max_iter:
                break
            with torch.enable_grad():
                new_loss = closure()
            loss = torch.where(active, new_loss.double(), loss)
            grad = torch.where(active[:, None], self.params.grad, grad)
            moved = (self.d * self.t[:, None]).abs().amax(1) > self.tolerance_change
            changed = (loss - self.prev_loss).abs() >= self.tolerance_change
            active = active & (grad.abs().amax(1) > self.tolerance_grad) & moved & changed
        return first_loss

    def _remember(self, grad: Tensor, rows: Tensor) -> None:
        """Store the pair (s, y) of the last move for ``rows`` whose curvature ys > 1e-10."""
        y = grad - self.prev_grad
        s = self.d * self.t[:, None]
        ys = torch.linalg.vecdot(y, s)
        push = rows & (ys > 1e-10)
        if self.early_exit and not bool(push.any()):
            return
        slot = self.pairs % self.size
        r, p = self.rows, push[:, None]
        self.s[r, slot] = torch.where(p, s, self.s[r, slot])
        self.y[r, slot] = torch.where(p, y, self.y[r, slot])
        self.pairs += push
        sy = self.sy.roll((-1, -1), (1, 2))  # the oldest pair (or an empty one) drops out
        sy[:, -1, :] = 0.0
        sy[:, :, -1] = self._aged(_dots(self.s, y))  # s_i . y, the new pair being the newest
        self.sy = torch.where(p[..., None], sy, self.sy)
        rho = torch.cat([self.rho[:, 1:], (1.0 / ys)[:, None]], 1)
        self.rho = torch.where(p, rho, self.rho)
        self.h_diag = torch.where(push, ys / torch.linalg.vecdot(y, y), self.h_diag)

    def _aged(self, v: Tensor) -> Tensor:
        """Per-slot values ``(T, H)`` in age order: age a holds pair ``pairs - H + a``."""
        return v.gather(1, (self.ages + self.pairs[:, None]) % self.size)

    def _slotted(self, v: Tensor) -> Tensor:
        """Age-ordered values ``(T, H)`` back in ring-slot order (inverse of ``_aged``)."""
        return v.gather(1, (self.ages - self.pairs[:, None]) % self.size)

    def _two_loop(self, grad: Tensor) -> Tensor:
        """torch's two-loop recursion for every trial: the direction ``-H grad``, ``(T, D)``.

        In age order (oldest first; empty entries have rho = 0 and drop out):
        first loop  alpha_k = rho_k (s_k.q0 - sum_{m>k} (s_k.y_m) alpha_m),  q0 = -grad;
        second loop c_k = alpha_k - beta_k with beta_k = rho_k (y_k.r0 + sum_{m<k}
        (y_k.s_m) c_m), r0 = h_diag (q0 - sum_m alpha_m y_m); result r0 + sum_m c_m s_m.
        """
        rho = self.rho
        q0 = -grad
        sq = self._aged(_dots(self.s, q0))
        upper = self.sy * (rho[..., None] * self.upper)
        alpha = torch.linalg.solve_triangular(
            upper, (rho * sq)[..., None], upper=True, unitriangular=True
        ).squeeze(-1)
        r0 = (q0 - _combine(self._slotted(alpha), self.y)) * self.h_diag[:, None]
        yr = self._aged(_dots(self.y, r0))
        lower = self.sy.transpose(1, 2) * (rho[..., None] * self.upper.T)
        c = torch.linalg.solve_triangular(
            lower, (alpha - rho * yr)[..., None], upper=False, unitriangular=True
        ).squeeze(-1)
        return r0 + _combine(self._slotted(c), self.s)


def _dots(pairs: Tensor, v: Tensor) -> Tensor:
    """``(T, H, D), (T, D) -> (T, H)``: every stored vector dotted with the trial's ``v``.

    Written as a row vector times the transposed history: on CPU this is ~5x faster than
    ``bmm(pairs, v[..., None])`` (measured 2.3 vs 12 ms at T=16, H=100, D=3172).
    """
    return torch.bmm(v[:, None, :], pairs.transpose(1, 2)).squeeze(1)


def _combine(weights: Tensor, pairs: Tensor) -> Tensor:
    """``(T, H), (T, H, D) -> (T, D)``: per trial, the weighted sum of its stored vectors."""
    return torch.bmm(weights[:, None, :], pairs).squeeze(1)
