"""The batched L-BFGS is T copies of torch.optim.LBFGS (no line search), row by row."""

import pytest
import torch

from gradinv_exp.attacks.lbfgs import BatchedLBFGS


def rosenbrock(x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """Per-row Rosenbrock in pairs of coordinates, shape (T,); ``a`` (T,) shifts the minimum."""
    u, v = x[:, 0::2], x[:, 1::2]
    return ((a[:, None] - u) ** 2 + 100 * (v - u**2) ** 2).sum(1)


def quadratic(x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """Per-row convex quadratic; L-BFGS solves it in a few iterations, then stops early."""
    weights = torch.linspace(1, 10, x.shape[1], dtype=x.dtype)
    return (weights * (x - a[:, None]) ** 2).sum(1)


def batched(fn, x0, a, steps, **kw):
    x = x0.clone().requires_grad_(True)
    opt = BatchedLBFGS(x, **kw)

    def closure():
        loss = fn(x, a)
        x.grad = torch.autograd.grad(loss.sum(), x)[0]
        return loss.detach()

    firsts = [opt.step(closure) for _ in range(steps)]
    return x.detach(), torch.stack(firsts)


def alone(fn, x0, a, steps, **kw):
    xs, firsts = [], []
    for t in range(len(x0)):
        x = x0[t : t + 1].clone().requires_grad_(True)
        opt = torch.optim.LBFGS([x], **kw)

        def closure(x=x, t=t):
            x.grad = None
            loss = fn(x, a[t : t + 1]).sum()
            loss.backward()
            return loss

        firsts.append(torch.stack([opt.step(closure).detach() for _ in range(steps)]))
        xs.append(x.detach()[0])
    return torch.stack(xs), torch.stack(firsts, 1)


@pytest.mark.parametrize(
    "fn, kw",
    [
        (rosenbrock, {"max_iter": 10, "history_size": 100}),
        (rosenbrock, {"max_iter": 7, "history_size": 3, "lr": 0.5}),  # history wraps around
        (quadratic, {"max_iter": 20, "history_size": 5}),  # trials converge and stop early
    ],
)
def test_matches_torch_lbfgs_per_trial(fn, kw):
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(4, 6, generator=gen, dtype=torch.float64)
    a = torch.tensor([1.0, 0.5, -0.3, 2.0], dtype=torch.float64)
    # Rosenbrock without a line search amplifies float64 rounding (1e-16 after 5
    # iterations, 1e-13 after 20, visible after ~60), so compare over 21-30 iterations.
    x_ours, loss_ours = batched(fn, x0, a, steps=3, **kw)
    x_torch, loss_torch = alone(fn, x0, a, steps=3, **kw)
    assert torch.allclose(x_ours, x_torch, rtol=1e-9, atol=1e-9)
    assert torch.allclose(loss_ours, loss_torch, rtol=1e-9, atol=1e-12)
    assert not torch.equal(x_ours, x0)  # it did move


def test_diverged_trial_freezes_and_others_go_on():
    x0 = torch.randn(3, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    a = torch.tensor([1.0, float("nan"), 0.5], dtype=torch.float64)
    x, _ = batched(rosenbrock, x0, a, steps=3)
    assert torch.equal(x[1], x0[1])
    x_ref, _ = alone(rosenbrock, x0[[0, 2]], a[[0, 2]], steps=3)
    assert torch.allclose(x[[0, 2]], x_ref, rtol=1e-9, atol=1e-9)
