"""Metrics: known values, one-to-one matching that ignores the attack's order, and trials
aggregated into statistics."""

import numpy as np
import pytest
import torch

from gradinv_exp import experiment
from gradinv_exp.analysis import metric_table, metrics, uncertainty
from gradinv_exp.attacks import AttackResult


def images(seed: int, n: int = 3) -> torch.Tensor:
    return torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def test_psnr_and_mse_known_values():
    truth = torch.zeros(1, 3, 8, 8)
    recon = torch.full((1, 3, 8, 8), 0.1)
    assert metrics.mse(truth, recon)[0] == pytest.approx(0.01)
    assert metrics.psnr(truth, recon)[0] == pytest.approx(20.0)
    assert metrics.psnr(truth, truth)[0] == metric_table.PSNR_CAP_DB  # exact: capped, not inf


def test_ssim_is_one_for_identical_and_low_for_noise():
    x = images(0)
    assert metrics.ssim(x, x) == pytest.approx(np.ones(3))
    assert (metrics.ssim(x, images(1)) < 0.2).all()


def test_ssim_of_flat_images_is_the_luminance_term_on_a_unit_range():
    """Flat images a and b have no contrast or structure, so SSIM = (2ab + C1) / (a^2 + b^2
    + C1) with C1 = (0.01 * data range)^2: a hand value that pins the [0, 1] data range."""
    a, b, c1 = 0.02, 0.04, 0.01**2
    truth, recon = torch.full((1, 3, 8, 8), a), torch.full((1, 3, 8, 8), b)
    expected = (2 * a * b + c1) / (a**2 + b**2 + c1)
    assert metrics.ssim(truth, recon)[0] == pytest.approx(expected, rel=1e-5)


def test_reconstructions_are_clamped_to_the_valid_range():
    x = images(0, 1)
    assert metrics.mse(x, x + 10)[0] == pytest.approx(((1 - x) ** 2).mean().item(), rel=1e-6)


def test_every_metric_scores_the_image_that_is_saved():
    """The attack's pixels may leave [0, 1]; the saved reconstruction is clamped
    (images.npz, reconstruction.png), and every metric scores that same clamped image."""
    truth = images(3, 2)
    recon = 3 * torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    saved = recon.clamp(0, 1)
    labels = torch.tensor([0, 1])
    raw, clamped = (metrics.evaluate(truth, labels, r, labels) for r in (recon, saved))
    for name in ("mse", "psnr", "ssim"):
        assert raw[name] == pytest.approx(clamped[name], rel=1e-12), name
    assert metrics.psnr(truth, recon) == pytest.approx(metrics.psnr(truth, saved), rel=1e-12)
    assert (metrics.mse(truth, recon) <= 1).all()  # [0, 1] images differ by at most 1


def test_match_recovers_a_known_permutation():
    truth = images(2, 4)
    perm = torch.tensor([2, 0, 3, 1])
    recon = truth[perm] + 0.01 * torch.randn(
        4, 3, 16, 16, generator=torch.Generator().manual_seed(0)
    )
    order = metrics.match(truth, recon)
    assert torch.equal(recon[order], recon[torch.argsort(perm)])
    assert torch.allclose(metrics.matched(truth, recon), truth, atol=0.05)


def test_evaluate_scores_swapped_batch_as_if_in_order():
    truth = images(3, 2)
    labels = torch.tensor([5, 7])
    scores = metrics.evaluate(truth, labels, truth.flip(0), labels.flip(0))
    assert scores["order"].tolist() == [1, 0]
    assert scores["psnr"].tolist() == [metric_table.PSNR_CAP_DB] * 2
    assert scores["label_acc"].tolist() == [1.0, 1.0]


def test_trials_aggregate_per_trial_means_into_mean_std_min_max():
    truth = torch.rand(3, 2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    noise = [0.0, 0.05, 0.1]
    recon = torch.stack([truth[t] + n for t, n in enumerate(noise)]).flip(1)  # swapped
    result = AttackResult(
        images=recon, labels=torch.tensor([[1, 0], [1, 0], [0, 0]]),
        grad_loss=torch.zeros(3), steps=torch.ones(3), diverged=torch.zeros(3, dtype=bool),
        restart=torch.zeros(3, dtype=torch.long),
    )  # fmt: skip
    scores = experiment.score(truth, torch.tensor([[0, 1]] * 3), result, None)
    assert scores["order"].tolist() == [[1, 0]] * 3  # matched despite the swap
    assert scores["label_acc"].tolist() == [[1, 1], [1, 1], [1, 0]]
    per_trial = scores["psnr"].mean(axis=1)
    stats = uncertainty.summary("psnr", per_trial)
    assert stats["psnr"] == pytest.approx(per_trial.mean())
    assert stats["psnr_std"] == pytest.approx(np.std(per_trial)) and stats["psnr_std"] > 0
    assert stats["psnr_max"] == metric_table.PSNR_CAP_DB and stats["psnr_min"] == per_trial[2]
    assert uncertainty.summary("label_acc", scores["label_acc"].mean(axis=1))["label_acc"] == 5 / 6
    assert np.isnan(scores["lpips"]).all()  # no LPIPS network given
