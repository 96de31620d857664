"""Checkpoints: an attack continued from its saved state at step k ends exactly where the
attack that was never stopped ends (CPU, one thread: the arithmetic is deterministic),
for L-BFGS (history ring, scalars, counters), Adam with IG's schedule, sign and box, and
batched trials with restarts; and a saved state survives torch.save/load."""

import dataclasses
import io

import pytest
import torch
from helpers import attack_one
from test_engine import PRESETS, setup, sim

from gradinv_exp.attacks import Checkpoints
from gradinv_exp.attacks.lbfgs import STATE, BatchedLBFGS
from gradinv_exp.attacks.optimizers import AdamConfig, LBFGSConfig
from gradinv_exp.base.streams import generator

ITERATIONS, EVERY = 12, 4


def run(cfg, optimizer, model, images, target, start=None):
    """The attack with checkpoints every EVERY steps: its result, its snapshots and the
    saved states (serialised at once, as the run folder's file is)."""
    saved, seen = {}, []

    def save(state):
        buffer = io.BytesIO()
        torch.save(state, buffer)
        saved[state["step"]] = buffer.getvalue()

    result = attack_one(
        sim(model), target, shape=(len(target[0]), *images.shape), num_classes=100, cfg=cfg,
        optimizer=optimizer, generator=generator(0, "attack"),
        on_snapshot=lambda step, loss, x: seen.append((step, loss.clone(), x.clone())),
        checkpoints=Checkpoints(EVERY, save, start),
    )  # fmt: skip
    return result, seen, saved


def load(blob, device="cpu"):
    return torch.load(io.BytesIO(blob), map_location=device, weights_only=True)


CASES = {
    "dlg-lbfgs": (PRESETS["dlg"], LBFGSConfig(max_iter=4, history_size=6)),  # ring wraps
    "ig-adam": (PRESETS["ig"], AdamConfig()),  # signed, boxed, lr decay at 4, 7, 10
    "idlg-adam-restarts": (dataclasses.replace(PRESETS["idlg"], restarts=2), AdamConfig()),
    # three trials, tolerances that let some rows finish (and leave) before a checkpoint
    "dlg-lbfgs-rows-leave": (PRESETS["dlg"], LBFGSConfig(max_iter=4, tolerance_change=1e-2)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_an_attack_continued_from_a_checkpoint_equals_one_never_stopped(case):
    preset, optimizer = CASES[case]
    cfg = dataclasses.replace(preset, iterations=ITERATIONS, snapshot_every=3)
    model, images, _, target = setup(index=2, size=16)
    if case.endswith("restarts"):  # two trials: the same image twice, batched
        target = [torch.cat([g, g]) for g in target]
    if case.endswith("leave"):  # three trials: three scales of the share
        target = [torch.cat([g, 0.3 * g, 3 * g]) for g in target]
    whole, seen, saved = run(cfg, optimizer, model, images, target)
    assert sorted(saved) == [4, 8]  # every 4 steps, not after the last
    if case.endswith("leave"):
        assert len(load(saved[8])["rows"]) < 3  # a row had left by step 8
    for step in (4, 8):
        rest, later, _ = run(cfg, optimizer, model, images, target, start=load(saved[step]))
        for name in ("images", "labels", "grad_loss", "steps", "diverged", "restart"):
            assert torch.equal(getattr(rest, name), getattr(whole, name)), (step, name)
        expected = [s for s in seen if s[0] > step]  # no snapshot is repeated
        assert [s[0] for s in later] == [s[0] for s in expected]
        for (_, loss, x), (_, loss0, x0) in zip(later, expected):
            assert torch.equal(loss, loss0) and torch.equal(x, x0)


def test_lbfgs_state_round_trips_and_refuses_other_shapes():
    v = torch.randn(3, 5, requires_grad=True)
    opt = BatchedLBFGS(v, history_size=4)

    def closure():
        loss = (v**2).sum(1)
        v.grad = torch.autograd.grad(loss.sum(), v)[0]
        return loss.detach()

    opt.step(closure)
    state = opt.state_dict()
    assert set(state) == set(STATE) and state["s"].shape == (3, 4, 5)
    other = BatchedLBFGS(v.detach().clone().requires_grad_(True), history_size=4)
    other.load_state_dict({k: t.clone() for k, t in state.items()})
    assert all(torch.equal(getattr(other, k), state[k]) for k in STATE)
    with pytest.raises(ValueError, match="'s' has shape \\(3, 4, 5\\), this optimiser needs"):
        BatchedLBFGS(v, history_size=7).load_state_dict(state)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_cuda_attack_continues_from_a_checkpoint_loaded_onto_the_gpu():
    """The run's file is loaded with map_location=device: every tensor of the state (the
    CPU random stream included) must end where it belongs. GPU arithmetic need not be
    deterministic, so this checks the continuation runs, not equality."""
    cfg = dataclasses.replace(PRESETS["dlg"], iterations=ITERATIONS, snapshot_every=3)
    model, images, _, target = setup(index=2, size=16)
    model, target = model.cuda(), [g.cuda() for g in target]
    _, _, saved = run(cfg, LBFGSConfig(max_iter=4), model, images, target)
    rest, later, _ = run(cfg, LBFGSConfig(max_iter=4), model, images, target,
                         start=load(saved[8], "cuda"))  # fmt: skip
    assert rest.images.device.type == "cuda" and [s[0] for s in later] == [9, 12]
    assert rest.steps.tolist() == [ITERATIONS] and torch.isfinite(rest.grad_loss).all()
