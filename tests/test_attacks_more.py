"""iDLG and Inverting Gradients: their pieces (objectives, schedule, boxing, signed steps,
restarts) and the attacks on a real photo; trials aggregate into statistics."""

import numpy as np
import pytest
import torch

from gradinv_exp import attacks, data, metrics, models, restarts, run, steps
from gradinv_exp.config import AdamConfig, DatasetConfig, IDLGConfig, IGConfig, LBFGSConfig
from gradinv_exp.objectives import cosine_distance, l2_distance, total_variation
from gradinv_exp.run import generator

IG_STEPS, IG_PSNR_DB = 200, 25.0  # measured 29.1 dB (16x16 coffee photo, seed 0)


def setup(index: int, size: int = 32, model: str = "lenet", classes: int = 100):
    images, labels, _ = data.load(DatasetConfig(name="photos", index=index, image_size=size), 1)
    net = models.build(
        model, channels=3, num_classes=classes, image_size=size, activation="sigmoid",
        generator=generator(0, "model"),
    )  # fmt: skip
    onehot = torch.nn.functional.one_hot(labels, classes).float()
    return net, images, labels, [g[None] for g in attacks.gradient(net, images, onehot)]


def test_cosine_distance_ignores_scale_and_spans_all_layers():
    a = [torch.tensor([1.0, 2.0]), torch.tensor([[3.0]])]
    assert cosine_distance(a, [3 * t for t in a]).item() == pytest.approx(0.0, abs=1e-7)
    assert cosine_distance(a, [-t for t in a]).item() == pytest.approx(2.0)
    # orthogonal as whole vectors although the second layer alone agrees
    b = [torch.tensor([2.0, -1.0]), torch.tensor([[0.0]])]
    assert cosine_distance(a, b).item() == pytest.approx(1.0)
    assert l2_distance(a, b).item() == pytest.approx(1 + 9 + 9)


def test_total_variation_known_value():
    x = torch.zeros(1, 1, 2, 3)
    x[..., 1:] = 1.0  # one vertical edge: |dx| = 1 on half of the horizontal pairs
    assert total_variation(x).item() == pytest.approx(0.5)
    assert total_variation(torch.ones(2, 3, 4, 4)).item() == 0.0


def test_step_decay_divides_the_lr_by_ten_at_three_five_seven_eighths():
    opt = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=0.1)
    schedule = steps.step_decay(opt, 16)
    lrs = []
    for _ in range(16):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        schedule.step()
    assert lrs == pytest.approx([0.1] * 6 + [0.01] * 4 + [0.001] * 4 + [0.0001] * 2)


def test_boxing_clamps_to_the_image_range():
    x = torch.tensor([-0.5, 0.3, 1.7], requires_grad=True)
    steps.box_(x)
    assert x.tolist() == pytest.approx([0.0, 0.3, 1.0])


def test_restarts_keep_per_trial_the_lowest_final_loss():
    # R = 2 restarts x T = 3 trials, restart-major; trial 1's second restart diverged (nan)
    result = attacks.AttackResult(
        images=torch.arange(6.0).view(6, 1, 1, 1, 1),
        labels=torch.arange(6).view(6, 1),
        grad_loss=torch.tensor([0.5, 0.1, 0.9, 0.2, float("nan"), 0.3]),
        steps=torch.arange(6),
        diverged=torch.tensor([False, False, False, False, True, False]),
    )
    best = restarts.best_restart(result.grad_loss, 2)
    assert best.tolist() == [1, 0, 1]
    chosen = attacks.select(result, best)
    assert chosen.images.flatten().tolist() == [3.0, 1.0, 5.0]
    assert chosen.grad_loss.tolist() == pytest.approx([0.2, 0.1, 0.3])
    assert chosen.labels.tolist() == [[3], [1], [5]] and not chosen.diverged.any()


def test_idlg_attack_keeps_the_recovered_label_fixed():
    model, images, labels, target = setup(index=3)
    result = attacks.idlg(
        model, target, shape=(1, *images.shape), num_classes=100,
        attack=IDLGConfig(iterations=2, snapshot_every=1), optimizer=LBFGSConfig(max_iter=5),
        generator=generator(0, "attack"), on_snapshot=lambda *a: None,
    )  # fmt: skip
    assert result.labels.tolist() == [labels.tolist()]
    assert result.steps.tolist() == [2] and not result.diverged.any()


def test_ig_lowers_its_objective_and_reaches_a_usable_psnr():
    model, images, labels, target = setup(index=1, size=16)
    seen = []
    result = attacks.ig(
        model, target, shape=(1, *images.shape), num_classes=100,
        attack=IGConfig(iterations=IG_STEPS, snapshot_every=IG_STEPS // 2),
        optimizer=AdamConfig(), generator=generator(0, "attack"),
        on_snapshot=lambda step, loss, x: seen.append((step, float(loss[0]))),
    )  # fmt: skip
    losses = [loss for _, loss in seen]
    assert [s for s, _ in seen] == [0, IG_STEPS // 2, IG_STEPS]
    assert losses[-1] < 0.2 * losses[0]
    assert result.labels.tolist() == [labels.tolist()]  # iDLG rule inside IG
    assert metrics.psnr(images, result.images[0])[0] > IG_PSNR_DB
    assert result.images.min() >= 0 and result.images.max() <= 1  # boxed


def test_trials_aggregate_per_trial_means_into_mean_std_min_max():
    truth = torch.rand(3, 2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    noise = [0.0, 0.05, 0.1]
    recon = torch.stack([truth[t] + n for t, n in enumerate(noise)]).flip(1)  # swapped
    result = attacks.AttackResult(
        images=recon, labels=torch.tensor([[1, 0], [1, 0], [0, 0]]),
        grad_loss=torch.zeros(3), steps=torch.ones(3), diverged=torch.zeros(3, dtype=bool),
    )  # fmt: skip
    scores = run.score(truth, torch.tensor([[0, 1]] * 3), result)
    assert scores["order"].tolist() == [[1, 0]] * 3  # matched despite the swap
    assert scores["label_acc"].tolist() == [[1, 1], [1, 1], [1, 0]]
    per_trial = scores["psnr"].mean(axis=1)
    stats = run.aggregate("psnr", per_trial)
    assert stats["psnr"] == pytest.approx(per_trial.mean())
    assert stats["psnr_std"] == pytest.approx(np.std(per_trial)) and stats["psnr_std"] > 0
    assert stats["psnr_max"] == metrics.MAX_PSNR_DB and stats["psnr_min"] == per_trial[2]
    assert run.aggregate("label_acc", scores["label_acc"].mean(axis=1))["label_acc"] == 5 / 6


@pytest.mark.parametrize("mode", ["given", "joint", "idlg"])
def test_ig_label_modes_and_restarts_give_one_result_per_trial(mode):
    images, labels, _ = data.load(DatasetConfig(name="photos", index=2, image_size=12), 2)
    net = models.build(
        "lenet", channels=3, num_classes=10, image_size=12, activation="sigmoid",
        generator=generator(0, "model"),
    )  # fmt: skip
    onehot = torch.nn.functional.one_hot(labels, 10).float()
    target = [torch.stack(p) for p in zip(*(attacks.gradient(net, x[None], y[None])
                                            for x, y in zip(images, onehot)))]  # fmt: skip
    seen = []
    result = attacks.ig(
        net, target, shape=(2, 1, 3, 12, 12), num_classes=10,
        attack=IGConfig(iterations=2, snapshot_every=1, restarts=3, labels=mode),
        optimizer=AdamConfig(), generator=generator(0, "attack"),
        on_snapshot=lambda step, loss, x: seen.append((loss.shape, x.shape)),
        known_labels=labels[:, None],
    )  # fmt: skip
    assert result.images.shape == (2, 1, 3, 12, 12) and result.labels.shape == (2, 1)
    assert seen == [((2,), (2, 1, 3, 12, 12))] * 3  # snapshots show the best restart only
    if mode != "joint":
        assert result.labels.flatten().tolist() == labels.tolist()


def test_signed_problem_steps_on_the_sign_of_the_image_gradient():
    v = torch.zeros(1, 4, requires_grad=True)  # one problem: a 1x1x2x2 image, fixed labels
    scale = torch.tensor([[-3.0, 0.0, 0.2, 5.0]])
    problem = attacks.Problem(
        v, (1, 1, 1, 2, 2), 2, torch.zeros(1, 1, 2), lambda x: (x * scale).sum(1), opt=None,
        signed=True,
    )  # fmt: skip
    assert problem.closure().tolist() == [0.0]
    assert v.grad.tolist() == [[-1.0, 0.0, 1.0, 1.0]]
