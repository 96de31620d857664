"""The one attack engine: its presets (DLG, iDLG, Inverting Gradients) on a real photo,
divergence, restarts, the step rules (signed, boxed, lr decay), and T problems as one
batched computation."""

import dataclasses
import math

import pytest
import torch
from helpers import attack_one, typed_config

from gradinv_exp import data, models
from gradinv_exp.analysis import metrics
from gradinv_exp.analysis.metrics import psnr
from gradinv_exp.attacks import AttackConfig, AttackResult, check_optimizer, engine
from gradinv_exp.attacks.backend import value_and_grad
from gradinv_exp.attacks.objectives import l2_distance
from gradinv_exp.attacks.optimizers import AdamConfig, LBFGSConfig
from gradinv_exp.base.options import ConfigError
from gradinv_exp.base.streams import generator
from gradinv_exp.client import Client, FedSGDConfig, Simulator, gradient
from gradinv_exp.data import DatasetConfig


def sim(model) -> Simulator:
    """The attacker's simulation of a FedSGD client of ``model``."""
    return Simulator(model, FedSGDConfig())


IG_STEPS, IG_PSNR_DB = 200, 25.0  # measured 29.1 dB (16x16 coffee photo, seed 0)

# conf/attack/*.yaml: each attack is a configuration of the engine
PRESETS = {
    "dlg": AttackConfig(name="dlg", objective="l2", labels="joint"),
    "idlg": AttackConfig(name="idlg", objective="l2", labels="idlg"),
    "ig": AttackConfig(
        name="ig", objective="cosine", priors={"tv": 1e-4}, labels="idlg", signed=True,
        boxed=True, lr_decay=True, iterations=4800, snapshot_every=100,
    ),
}  # fmt: skip


def preset(name: str, **changes) -> AttackConfig:
    return dataclasses.replace(PRESETS[name], **changes)


def setup(index: int, size: int = 32, model: str = "lenet", classes: int = 100):
    images, labels, _ = data.load(DatasetConfig(name="photos", index=index, image_size=size), 1)
    net = models.build(
        model, channels=3, num_classes=classes, image_size=size, activation="sigmoid",
        init_range=0.5, generator=generator(0, "model"),
    )  # fmt: skip
    onehot = torch.nn.functional.one_hot(labels, classes).float()
    return net, images, labels, [g[None] for g in gradient(Client(net, images, onehot))]


@pytest.mark.parametrize(
    ("name", "optimizer"), [("dlg", "lbfgs"), ("idlg", "lbfgs"), ("ig", "adam")]
)
def test_presets_are_configurations_of_the_engine(name, optimizer):
    cfg = typed_config(f"attack={name}")
    assert cfg.attack == PRESETS[name] and cfg.attack.restarts == 1
    assert cfg.optimizer.name == optimizer  # ig selects Adam (lr 0.1) itself
    assert cfg.optimizer == (AdamConfig() if optimizer == "adam" else LBFGSConfig())


def test_signed_and_lr_decay_need_a_first_order_optimizer():
    check_optimizer(PRESETS["ig"], AdamConfig())
    check_optimizer(PRESETS["dlg"], LBFGSConfig())
    check_optimizer(PRESETS["dlg"], AdamConfig())
    with pytest.raises(ConfigError) as info:
        check_optimizer(PRESETS["ig"], LBFGSConfig())
    assert str(info.value) == (
        "optimizer='lbfgs' is not allowed: attack=ig sets attack.signed=true and "
        "attack.lr_decay=true, which needs optimizer=adam"
    )
    with pytest.raises(ConfigError, match=r"attack=dlg sets attack.signed=true, which"):
        check_optimizer(preset("dlg", signed=True), LBFGSConfig())


def test_dlg_recovers_a_bundled_photo_without_defense():
    model, images, labels, target = setup(index=1)
    snapshots = []
    result = attack_one(
        sim(model), target, shape=(1, *images.shape), num_classes=100,
        cfg=preset("dlg", iterations=120, snapshot_every=40), optimizer=LBFGSConfig(),
        generator=generator(0, "attack"), on_snapshot=lambda s, loss, x: snapshots.append(s),
    )  # fmt: skip
    assert psnr(images, result.images[0])[0] > 28.0
    assert result.labels.tolist() == [labels.tolist()]
    assert snapshots == [0, 40, 80, 120]
    assert not result.diverged.any() and result.steps.tolist() == [120]


def test_diverging_attack_is_reported_not_raised():
    model, images, _, target = setup(index=0)
    result = attack_one(
        sim(model), target, shape=(1, *images.shape), num_classes=100,
        cfg=preset("dlg", iterations=5), optimizer=AdamConfig(lr=float("inf")),
        generator=generator(0, "attack"), on_snapshot=lambda *a: None,
    )  # fmt: skip
    assert result.diverged.tolist() == [True]
    assert torch.isfinite(result.images).all()  # the last finite reconstruction is kept
    assert math.isfinite(float(result.grad_loss[0]))


def test_idlg_keeps_the_recovered_labels_fixed_over_a_long_run():
    """At every snapshot of a long iDLG run the reported objective is the L2 distance of the
    dummy's gradient under the recovered one-hot labels: the labels are never optimised."""
    model, images, labels, target = setup(index=3, size=16)
    onehot = torch.nn.functional.one_hot(labels, 100).float()[None]  # (1, B, K)
    seen = []
    result = attack_one(
        sim(model), target, shape=(1, *images.shape), num_classes=100,
        cfg=preset("idlg", iterations=60, snapshot_every=10), optimizer=LBFGSConfig(max_iter=4),
        generator=generator(0, "attack"),
        on_snapshot=lambda step, loss, x: seen.append((step, loss.clone(), x.clone())),
    )  # fmt: skip
    assert [step for step, _, _ in seen] == list(range(0, 61, 10))
    for step, loss, x in seen:
        with torch.no_grad():
            hand = l2_distance([g[0] for g in sim(model)(x, onehot)], [t[0] for t in target])
        assert float(loss[0]) == pytest.approx(float(hand), rel=1e-4), step
    assert float(seen[-1][1][0]) < 0.1 * float(seen[0][1][0])  # the images did move
    assert result.labels.tolist() == [labels.tolist()]
    assert result.steps.tolist() == [60] and not result.diverged.any()


def test_ig_lowers_its_objective_and_reaches_a_usable_psnr():
    model, images, labels, target = setup(index=1, size=16)
    seen = []
    result = attack_one(
        sim(model), target, shape=(1, *images.shape), num_classes=100,
        cfg=preset("ig", iterations=IG_STEPS, snapshot_every=IG_STEPS // 2),
        optimizer=AdamConfig(), generator=generator(0, "attack"),
        on_snapshot=lambda step, loss, x: seen.append((step, float(loss[0]))),
    )  # fmt: skip
    losses = [loss for _, loss in seen]
    assert [s for s, _ in seen] == [0, IG_STEPS // 2, IG_STEPS]
    assert losses[-1] < 0.2 * losses[0]
    assert result.labels.tolist() == [labels.tolist()]  # iDLG rule inside IG
    assert metrics.psnr(images, result.images[0])[0] > IG_PSNR_DB
    assert result.images.min() >= 0 and result.images.max() <= 1  # boxed


@pytest.mark.parametrize("mode", ["given", "joint", "idlg"])
def test_ig_label_modes_and_restarts_give_one_result_per_trial(mode):
    images, labels, _ = data.load(DatasetConfig(name="photos", index=2, image_size=12), 2)
    net = models.build(
        "lenet", channels=3, num_classes=10, image_size=12, activation="sigmoid",
        generator=generator(0, "model"),
    )  # fmt: skip
    onehot = torch.nn.functional.one_hot(labels, 10).float()
    target = [torch.stack(p) for p in zip(*(gradient(Client(net, x[None], y[None]))
                                            for x, y in zip(images, onehot)))]  # fmt: skip
    seen = []
    result = attack_one(
        sim(net), target, shape=(2, 1, 3, 12, 12), num_classes=10,
        cfg=preset("ig", iterations=2, snapshot_every=1, restarts=3, labels=mode),
        optimizer=AdamConfig(), generator=generator(0, "attack"),
        on_snapshot=lambda step, loss, x: seen.append((loss.shape, x.shape)),
        known_labels=labels[:, None],
    )  # fmt: skip
    assert result.images.shape == (2, 1, 3, 12, 12) and result.labels.shape == (2, 1)
    assert seen == [((2,), (2, 1, 3, 12, 12))] * 3  # snapshots show the best restart only
    assert result.restart.shape == (2,) and ((result.restart >= 0) & (result.restart < 3)).all()
    if mode != "joint":
        assert result.labels.flatten().tolist() == labels.tolist()


def test_restarts_keep_per_trial_the_lowest_final_loss():
    # R = 2 restarts x T = 3 trials, restart-major; trial 1's second restart diverged (nan)
    result = AttackResult(
        images=torch.arange(6.0).view(6, 1, 1, 1, 1),
        labels=torch.arange(6).view(6, 1),
        grad_loss=torch.tensor([0.5, 0.1, 0.9, 0.2, float("nan"), 0.3]),
        steps=torch.arange(6),
        diverged=torch.tensor([False, False, False, False, True, False]),
        restart=torch.zeros(6, dtype=torch.long),
    )
    best = engine.best_restart(result.grad_loss, 2)
    assert best.tolist() == [1, 0, 1]
    chosen = engine.select(result, best)
    assert chosen.images.flatten().tolist() == [3.0, 1.0, 5.0]
    assert chosen.grad_loss.tolist() == pytest.approx([0.2, 0.1, 0.3])
    assert chosen.labels.tolist() == [[3], [1], [5]] and not chosen.diverged.any()
    assert chosen.restart.tolist() == [1, 0, 1]


def test_step_decay_divides_the_lr_by_ten_at_three_five_seven_eighths():
    opt = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=0.1)
    schedule = engine.step_decay(opt, 16)
    lrs = []
    for _ in range(16):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        schedule.step()
    assert lrs == pytest.approx([0.1] * 6 + [0.01] * 4 + [0.001] * 4 + [0.0001] * 2)


def bare_problem(v, shape, loss, labels=None, **rules) -> engine.Problem:
    """A ``Problem`` of the variables ``v`` under ``loss`` and no optimiser."""
    rows = engine.Rows(goal=[], params=None, labels=labels, groups=[])
    return engine.Problem(
        variables=v, rows=torch.arange(len(v)), shape=shape, num_classes=2, data=rows,
        loss_of=loss, value_and_grad=value_and_grad(loss, compiled=False, timings={}),
        opt=None, make_opt=None, **rules,
    )  # fmt: skip


def test_boxing_clamps_to_the_image_range():
    # one problem: a 1x1x1x3 image, then two label logits that boxing must leave alone
    v = torch.tensor([[-0.5, 0.3, 1.7, -2.0, 3.0]], requires_grad=True)
    problem = bare_problem(v, (1, 1, 1, 1, 3), lambda x, rows: x.sum(1), boxed=True)
    problem.after_step()
    assert problem.images().flatten().tolist() == pytest.approx([0.0, 0.3, 1.0])
    assert v[0, 3:].tolist() == [-2.0, 3.0]


def test_signed_problem_steps_on_the_sign_of_the_image_gradient():
    v = torch.zeros(1, 4, requires_grad=True)  # one problem: a 1x1x2x2 image, fixed labels
    scale = torch.tensor([[-3.0, 0.0, 0.2, 5.0]])
    problem = bare_problem(
        v, (1, 1, 1, 2, 2), lambda x, rows: (x * scale).sum(1), torch.zeros(1, 1, 2), signed=True
    )
    assert problem.closure().tolist() == [0.0]
    assert v.grad.tolist() == [[-1.0, 0.0, 1.0, 1.0]]


# --- T trials as one batched computation give each trial the result it gets alone ---

TRIALS = 4


def batch_setup(trials: int = TRIALS, device: str = "cpu"):
    """The original notebook's LeNet and the true gradients of ``trials`` bundled photos,
    one per trial."""
    images, labels, _ = data.load(DatasetConfig(name="photos"), trials)
    model = models.build(
        "lenet", channels=3, num_classes=100, image_size=32, activation="sigmoid",
        init_range=0.5, generator=generator(0, "model"),
    ).to(device)  # fmt: skip
    onehot = torch.nn.functional.one_hot(labels, 100).float().to(device)
    grads = [
        gradient(Client(model, images[t : t + 1].to(device), onehot[t : t + 1]))
        for t in range(trials)
    ]
    target = [torch.stack(p) for p in zip(*grads)]
    return model, images[:, None], target  # images (T, 1, C, H, W)


def starts(trials: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Dummy images (T, 1, 3, 32, 32) and label logits (T, 1, 100), seeded."""
    gen = generator(0, "attack")
    return torch.randn((trials, 1, 3, 32, 32), generator=gen), torch.randn(
        (trials, 1, 100), generator=gen
    )


def dlg_from(model, target, x0, y0, optimizer, iterations):
    """DLG from the given starts, through the engine every attack uses."""
    done = preset("dlg", iterations=iterations, snapshot_every=iterations)
    problem = engine.build_problem(sim(model), target, x0, y0, done, optimizer, optimised=True)
    return engine.optimise(problem, done, lambda *a: None)


def test_vmapped_gradients_equal_each_trials_own():
    model, _, _ = batch_setup()
    gen = torch.Generator().manual_seed(0)
    x = torch.rand((TRIALS, 2, 3, 32, 32), generator=gen)
    y = torch.softmax(torch.randn((TRIALS, 2, 100), generator=gen), -1)
    together = sim(model)(x, y)
    for t in range(TRIALS):
        alone = sim(model)(x[t : t + 1], y[t : t + 1])  # the plain T=1 path
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
    model, _, target = batch_setup()
    x0, y0 = starts(TRIALS)
    together = dlg_from(model, target, x0, y0, optimizer, iterations)
    assert together.steps.tolist() == [iterations] * TRIALS
    for t in range(TRIALS):
        one = slice(t, t + 1)
        alone = dlg_from(model, [g[one] for g in target], x0[one], y0[one], optimizer, iterations)
        diff = (together.images[t] - alone.images[0]).abs().max()
        assert diff < tol, (t, float(diff))
        assert torch.allclose(together.grad_loss[t], alone.grad_loss[0], rtol=0.05)
    assert (together.images - x0).abs().max() > 0.05  # the attack did move


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_batched_attack_runs_on_cuda():
    model, _, target = batch_setup(device="cuda")
    x0, y0 = starts(TRIALS)
    result = dlg_from(model, target, x0.cuda(), y0.cuda(), LBFGSConfig(), 2)
    assert result.images.device.type == "cuda"
    assert torch.isfinite(result.grad_loss).all() and not result.diverged.any()
