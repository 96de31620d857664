"""T trials as one batched computation give each trial the result it gets alone."""

import pytest
import torch

from gradinv_exp import attacks, batched, data, models
from gradinv_exp.config import AdamConfig, DatasetConfig, DLGConfig, LBFGSConfig
from gradinv_exp.objectives import l2_distance
from gradinv_exp.run import generator

TRIALS = 4


def setup(trials: int = TRIALS, device: str = "cpu"):
    """The seed's LeNet and the true gradients of ``trials`` bundled photos, one per trial."""
    images, labels, _ = data.load(DatasetConfig(name="photos"), trials)
    model = models.build(
        "lenet", channels=3, num_classes=100, image_size=32, activation="sigmoid",
        init_range=0.5, generator=generator(0, "model"),
    ).to(device)  # fmt: skip
    onehot = torch.nn.functional.one_hot(labels, 100).float().to(device)
    grads = [attacks.gradient(model, images[t : t + 1].to(device), onehot[t : t + 1])
             for t in range(trials)]  # fmt: skip
    target = [torch.stack(p) for p in zip(*grads)]
    return model, images[:, None], target  # images (T, 1, C, H, W)


def starts(trials: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Dummy images (T, 1, 3, 32, 32) and label logits (T, 1, 100), seeded."""
    gen = generator(0, "attack")
    return torch.randn((trials, 1, 3, 32, 32), generator=gen), torch.randn(
        (trials, 1, 100), generator=gen
    )


def attack(model, target, x0, y0, optimizer, iterations):
    """DLG from the given starts, through the engine every attack uses."""
    problem = attacks.problems(
        model, target, x0, y0, joint=True, objective=l2_distance, optimizer=optimizer
    )
    done = DLGConfig(iterations=iterations, snapshot_every=iterations)
    return attacks.optimise(problem, done, lambda *a: None)


def test_vmapped_gradients_equal_each_trials_own():
    model, _, _ = setup()
    gen = torch.Generator().manual_seed(0)
    x = torch.rand((TRIALS, 2, 3, 32, 32), generator=gen)
    y = torch.softmax(torch.randn((TRIALS, 2, 100), generator=gen), -1)
    together = batched.gradients(model, x, y)
    for t in range(TRIALS):
        alone = batched.gradients(model, x[t : t + 1], y[t : t + 1])  # the plain T=1 path
        for a, b in zip(together, alone):
            assert torch.allclose(a[t], b[0], rtol=1e-4, atol=1e-6)


# Float32 DLG under L-BFGS is chaotic: torch.optim.LBFGS itself turns a 1e-7 relative
# change of the start into 5e-7 after 2 iterations and 7e-3 after 8. The batched (vmap)
# and the single (plain autograd) gradients differ in rounding only (~1e-7), so trials are
# compared after 4 L-BFGS iterations (measured max |diff| 1e-3, movement 0.07) and after
# 10 Adam steps, which are not chaotic (measured 4e-5).
@pytest.mark.parametrize(
    "optimizer, iterations, tol",
    [(LBFGSConfig(max_iter=2), 2, 5e-3), (AdamConfig(lr=0.1), 10, 2e-4)],
)
def test_each_batched_trial_matches_its_run_alone(optimizer, iterations, tol):
    model, _, target = setup()
    x0, y0 = starts(TRIALS)
    together = attack(model, target, x0, y0, optimizer, iterations)
    assert together.steps.tolist() == [iterations] * TRIALS
    for t in range(TRIALS):
        one = slice(t, t + 1)
        alone = attack(model, [g[one] for g in target], x0[one], y0[one], optimizer, iterations)
        diff = (together.images[t] - alone.images[0]).abs().max()
        assert diff < tol, (t, float(diff))
        assert torch.allclose(together.grad_loss[t], alone.grad_loss[0], rtol=0.05)
    assert (together.images - x0).abs().max() > 0.05  # the attack did move


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_batched_attack_runs_on_cuda():
    model, _, target = setup(device="cuda")
    x0, y0 = starts(TRIALS)
    result = attack(model, target, x0.cuda(), y0.cuda(), LBFGSConfig(), 2)
    assert result.images.device.type == "cuda"
    assert torch.isfinite(result.grad_loss).all() and not result.diverged.any()
