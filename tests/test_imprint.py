"""server=imprint and attack=imprint (Robbing the Fed): every image alone in its bin comes
back exactly, under FedSGD, FedAvg and a secure aggregation; bad settings are one line."""

import pytest
import torch
from helpers import preflight_check, typed_config

from gradinv_exp import experiment
from gradinv_exp.attacks import ATTACKS, Context, Target
from gradinv_exp.base.options import ConfigError
from gradinv_exp.base.streams import generator
from gradinv_exp.servers.imprint import thresholds

BASE = ["server=imprint", "attack=imprint", "dataset=lfw", "dataset.image_size=16"]


def attack(*overrides: str):
    """Truth ``(T, B, C, H, W)``, the reconstruction, and per true image whether it is
    alone in its bin (from the thresholds the server kept)."""
    cfg = typed_config(*BASE, *overrides)
    images, labels, _ = experiment.load_data(cfg)
    nets, sent = experiment.send(cfg, experiment.build_models(cfg, torch.device("cpu")))
    _, shared = experiment.share(cfg, nets, images, labels)
    observed = experiment.observe(cfg, shared, labels)
    stream = generator(cfg.seed, "attack")
    target = Target(observed, sent, cfg.attack, stream, lambda *a: None)
    (result,) = ATTACKS["imprint"].reconstruct([target], Context())
    row = sent.model[1].weight[0].detach()
    cuts = sent.secrets["thresholds"]
    bins = torch.bucketize(images.flatten(2) @ row, cuts)  # (T, B): bin of each image
    alone = torch.stack([(b[:, None] == b[None]).sum(1) == 1 for b in bins])
    return images, result, alone


def nearest(truth: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    """Per true image ``(B, C, H, W)``, the MSE ``(B,)`` to the reconstruction closest to
    it: whether the read-out holds that image (the scorer's one-to-one matching, which
    minimises the total MSE, may pair an exact image with another, similar truth)."""
    return (torch.cdist(truth.flatten(1), recon.flatten(1)) ** 2 / truth[0].numel()).amin(1)


# FedAvg's update is theta_1 - theta_0 in float32: its rounding leaves MSE ~1e-5, and
# empty bins with rounding noise (~1e-8 of a bias ~0.5) that a floor of 1e-3 x the largest
# bias-gradient difference (~1e-4) sets aside
@pytest.mark.parametrize(
    ("overrides", "exact"),
    [
        (["dataset.batch_size=16", "server.bins=32"], 1e-8),
        (["dataset.batch_size=4", "clients=4", "server.bins=32"], 1e-8),
        (["dataset.batch_size=16", "server.bins=32", "client=fedavg",
          "attack.min_bias_grad=1e-3"], 5e-5),
        (["dataset.batch_size=8", "server.bins=16", "server.measurement=random", "trials=2"],
         1e-8),
    ],
    ids=["fedsgd", "clients4", "fedavg1", "random"],
)  # fmt: skip
def test_every_image_alone_in_its_bin_is_read_back_exactly(overrides, exact):
    images, result, alone = attack(*overrides)
    assert alone.float().mean() > 0.25  # the quantile bins spread the images
    for t in range(len(images)):
        errors = nearest(images[t], result.images[t])
        assert bool((errors[alone[t]] < exact).all()), errors[alone[t]]
        assert bool((errors[~alone[t]] > exact).all())  # a shared bin gives a blend


def test_local_steps_blur_the_read_out():
    """FedAvg with 5 local steps: each step moves the imprint rows and the layer behind
    them, so bins shift and units stop receiving equal gradients; an image alone in its
    bin comes back close, not exactly (measured on these 4 random batches of lfw: 18 of 30
    within MSE 1e-2, i.e. PSNR > 20 dB; 13 within 1e-3; 5 exactly)."""
    images, result, alone = attack(
        "dataset.batch_size=16", "server.bins=32", "client=fedavg", "client.local_steps=5",
        "client.local_batch=4", "trials=4",
    )  # fmt: skip
    errors = torch.cat([nearest(images[t], result.images[t])[alone[t]] for t in range(4)])
    assert float((errors < 1e-2).float().mean()) >= 0.5
    assert float((errors > 1e-6).float().mean()) >= 0.5  # most are not exact any more


def test_thresholds_increase_and_put_every_image_above_the_first():
    values = torch.tensor([0.3, 0.3, 0.3, 0.5, 0.9])
    cuts = thresholds(values, 4)
    assert bool((cuts[1:] > cuts[:-1]).all()) and cuts[0] < values.min()


@pytest.mark.parametrize(
    ("overrides", "start"),
    [
        (["server.bins=1"], "server.bins=1 is not allowed: must be >= 2"),
        (["dataset.batch_size=64", "server.bins=32"],
         "dataset.batch_size=64 is not allowed: the server reads one image per bin"),
        (["dataset.batch_size=16", "clients=4", "server.bins=32"],
         "dataset.batch_size=16 is not allowed: the server reads one image per bin"),
        (["server=honest"], "server='honest' is not allowed: attack=imprint works with "
         "server=imprint"),
        (["server.measurement=edges"], "server.measurement='edges' is not allowed"),
    ],
)  # fmt: skip
def test_bad_settings_are_one_line_before_any_job(overrides, start):
    with pytest.raises(ConfigError) as info:
        preflight_check([*BASE, *overrides])
    assert str(info.value).startswith(start) and "\n" not in str(info.value)


def test_a_run_reports_how_much_of_each_batch_came_back(tmp_path):
    """batch_recovered: per trial, the fraction of its batch under the success criterion
    (mean, worst, best); summary.csv and the comparison figure carry it."""
    import json

    from gradinv_exp.analysis import figures, summary

    cfg = typed_config(*BASE, "dataset.batch_size=16", "server.bins=32", "trials=2")
    metrics = experiment.run(cfg, tmp_path / "run")
    psnr = torch.tensor(metrics["per_image"]["psnr"])  # (T, B)
    per_trial = (psnr >= 20).float().mean(1)
    assert 0 < metrics["batch_recovered"] < 1
    assert metrics["batch_recovered"] == pytest.approx(float(per_trial.mean()))
    assert metrics["batch_recovered_min"] == pytest.approx(float(per_trial.min()))
    assert metrics["batch_recovered_max"] == pytest.approx(float(per_trial.max()))
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["batch_recovered"]
    frame, problems = summary.collect([tmp_path / "run"])
    assert not problems
    assert frame["batch_recovered"].tolist() == [metrics["batch_recovered"]]
    pooled = summary.pool(frame, ["defense"])
    assert pooled["batch_recovered"].tolist() == pytest.approx([metrics["batch_recovered"]])
    fig = figures.comparison(frame, ["imprint"])
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == 1  # no shared truth panel: the run's best and worst, over truth
    height, width = shown[0].images[0].get_array().shape[:2]
    assert width < height * 2  # two images side by side, not a row of 16
    assert "best | worst" in shown[0].get_title()


def test_a_random_batch_of_64_lfw_images_is_more_than_half_recovered(tmp_path):
    """B=64 with 128 bins on lfw (faces and non-faces, sorted by class on disk): a batch
    drawn at random, bins fitted on public images of the same distribution, recovers
    >= 0.55 of the batch (equal-mass bins give 0.61 in expectation; a batch that was a
    contiguous slice, one class, with the other class as public images gave 0.44)."""
    cfg = typed_config("server=imprint", "attack=imprint", "dataset=lfw",
                       "dataset.batch_size=64", "server.bins=128", "metrics.lpips=off")  # fmt: skip
    metrics = experiment.run(cfg, tmp_path / "run")
    assert metrics["batch_recovered"] >= 0.55
    labels = torch.tensor(metrics["labels"]).flatten()
    assert 0 < labels.float().mean() < 1  # both classes in the batch
