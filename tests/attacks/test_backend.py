"""How the attack's closure runs: the fixed auto rules, compiled == eager gradients, the
fallback when compiling fails, the convolution switch, and the sync-free L-BFGS loop."""

import logging

import pytest
import torch

from gradinv_exp import client, models
from gradinv_exp.attacks import AttackConfig, choose_backend
from gradinv_exp.attacks import backend as backends
from gradinv_exp.attacks.engine import build_problem, optimise
from gradinv_exp.attacks.optimizers import LBFGSConfig
from gradinv_exp.base.streams import generator


def tiny_problem(trials: int = 1, compiled: bool = False, timings=None, lbfgs=None):
    """DLG on a 8x8 LeNet with 6 classes, ``trials`` problems."""
    net = models.build(
        "lenet", channels=3, num_classes=6, image_size=8, activation="sigmoid",
        generator=generator(0, "model"),
    )  # fmt: skip
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(trials, 3, 8, 8, generator=gen)
    onehot = torch.nn.functional.one_hot(torch.arange(trials) % 6, 6).float()
    shared = [
        torch.stack(p)
        for p in zip(
            *(client.gradient(client.Client(net, images[t : t + 1], onehot[t : t + 1]))
              for t in range(trials))
        )
    ]  # fmt: skip
    x0 = torch.randn((trials, 1, 3, 8, 8), generator=gen)
    y0 = torch.randn((trials, 1, 6), generator=gen)
    return build_problem(
        client.Simulator(net, client.FedSGDConfig()), shared, x0, y0,
        AttackConfig(name="dlg", iterations=4, snapshot_every=2), lbfgs or LBFGSConfig(),
        optimised=True, compiled=compiled, timings={} if timings is None else timings,
    )  # fmt: skip


def test_auto_rules_are_fixed_by_model_length_device_and_problems():
    choose = choose_backend
    default = choose("auto", "auto", model="lenet", device="cpu", problems=1, closures=6000)
    assert default == backends.Backend(compile=True, conv="onednn")  # the default run
    batched = choose("auto", "auto", model="lenet", device="cpu", problems=16, closures=6000)
    assert batched == backends.Backend(compile=True, conv="onednn")
    short = choose("auto", "auto", model="lenet", device="cpu", problems=1, closures=120)
    assert short == backends.Backend(compile=False, conv="native")
    assert not choose("auto", "auto", model="resnet18", device="cpu", problems=1,
                      closures=10**6).compile  # fmt: skip
    assert choose("auto", "auto", model="convnet", device="cpu", problems=1,
                  closures=10**6).conv == "onednn"  # fmt: skip
    assert not choose("auto", "auto", model="lenet", device="cuda", problems=1,
                      closures=10**6).compile  # fmt: skip
    forced = choose("on", "native", model="resnet18", device="cpu", problems=8, closures=1)
    assert forced == backends.Backend(compile=True, conv="native")


def test_convolution_switch_is_restored():
    before = torch.backends.mkldnn.enabled
    with backends.convolution("native"):
        assert torch.backends.mkldnn.enabled is False
    with backends.convolution("onednn"):
        assert torch.backends.mkldnn.enabled is True
    assert torch.backends.mkldnn.enabled == before


def test_compiled_objective_and_gradient_equal_eager():
    """One compile (tens of seconds on a cold inductor cache): the default run's path."""
    timings: dict[str, float] = {}
    eager, compiled = tiny_problem(), tiny_problem(compiled=True, timings=timings)
    gen = torch.Generator().manual_seed(1)
    with backends.convolution("native"):
        for scale in (0.0, 0.5):
            v = eager.variables.detach() + scale * torch.randn(eager.variables.shape, generator=gen)
            (loss_e, grad_e) = eager.value_and_grad(v, eager.data)
            (loss_c, grad_c) = compiled.value_and_grad(v, compiled.data)
            assert torch.allclose(loss_c, loss_e, rtol=1e-4)
            assert torch.allclose(grad_c, grad_e, rtol=1e-3, atol=1e-5 * grad_e.abs().max())
    assert timings["compile_s"] > 0 and "compile_failed" not in timings


def test_a_failed_compile_falls_back_to_eager_with_one_warning(monkeypatch, caplog):
    def broken(fn, **kwargs):
        def run(*args, **kwargs):
            raise RuntimeError("InductorError: no working C++ compiler")

        return run

    monkeypatch.setattr(torch, "compile", broken)
    timings: dict[str, float] = {}
    compiled, eager = tiny_problem(compiled=True, timings=timings), tiny_problem()
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            loss_c, grad_c = compiled.value_and_grad(compiled.variables, compiled.data)
    loss_e, grad_e = eager.value_and_grad(eager.variables, eager.data)  # (its plain-autograd path)
    assert torch.allclose(loss_c, loss_e, rtol=1e-5)
    assert torch.allclose(grad_c, grad_e, rtol=1e-4, atol=1e-6 * grad_e.abs().max())
    assert timings == {"compile_failed": 1.0}
    warnings = [r.message for r in caplog.records if "compile failed" in r.message]
    assert warnings == ["compile failed, running eager (RuntimeError: InductorError: no working "
                        "C++ compiler)"]  # fmt: skip


@pytest.mark.parametrize("trials", [1, 3])
def test_the_sync_free_lbfgs_loop_gives_the_same_result(trials):
    """On an accelerator the L-BFGS step never reads a flag back (it runs max_iter masked
    iterations): stopped rows keep their state, so the result equals the early-exit loop.
    Tolerances high enough that rows stop early within the steps."""
    lbfgs = LBFGSConfig(max_iter=6, tolerance_change=1e-3)
    results = []
    for early_exit in (True, False):
        problem = tiny_problem(trials, lbfgs=lbfgs)
        problem.opt.early_exit = early_exit
        results.append(optimise(problem, AttackConfig(name="dlg", iterations=4), lambda *a: None))
    fast, sync_free = results
    assert torch.equal(fast.images, sync_free.images)
    assert torch.equal(fast.grad_loss, sync_free.grad_loss)


def test_finished_rows_leave_the_problem_and_change_no_result():
    """Rows L-BFGS can no longer move (tolerances high enough that some stop within the
    steps) leave the problem: later closures evaluate fewer rows, and every row ends
    where the same problem with every row kept to the end ends (to float32 rounding:
    the remaining rows run in a smaller batch)."""
    lbfgs = LBFGSConfig(max_iter=6, tolerance_change=1e-3)
    cfg = AttackConfig(name="dlg", iterations=8, snapshot_every=4)
    kept, left = tiny_problem(6, lbfgs=lbfgs), tiny_problem(6, lbfgs=lbfgs)
    kept.stops = False  # every row stays to the end, as an optimiser that never stops
    rows = []
    evaluate = left.value_and_grad

    def counted(v, data):
        rows.append(len(v))
        return evaluate(v, data)

    left.value_and_grad = counted
    whole, shrunk = optimise(kept, cfg, lambda *a: None), optimise(left, cfg, lambda *a: None)
    assert rows[0] == 6 and min(rows) < 6, rows  # rows left while the attack ran
    assert torch.allclose(shrunk.images, whole.images, atol=1e-4)
    assert torch.allclose(shrunk.grad_loss, whole.grad_loss, rtol=1e-3)
    assert torch.equal(shrunk.labels, whole.labels) and not shrunk.diverged.any()
    assert (shrunk.steps < cfg.iterations).any()  # a row's steps count the steps that moved it
