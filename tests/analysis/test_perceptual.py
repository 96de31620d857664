"""LPIPS: computed with AlexNet weights from the torch hub cache (a test writes random
weights there, never the network); without them a run records null and warns, and
metrics.lpips=required is a one-line error before any job."""

import logging
import urllib.error

import pytest
import torch
import torchvision
from helpers import FAST, typed_config

from gradinv_exp import experiment
from gradinv_exp.analysis import perceptual
from gradinv_exp.base.options import ConfigError


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty torch hub cache (TORCH_HOME) and no network for torch.hub."""

    def offline(*args, **kwargs):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    perceptual.load.cache_clear()
    yield tmp_path
    perceptual.load.cache_clear()


def cache_weights() -> None:
    """Random AlexNet weights where torchvision's ImageNet weights would be cached."""
    torch.manual_seed(0)
    file = perceptual.backbone_file()
    file.parent.mkdir(parents=True)
    torch.save(torchvision.models.alexnet().state_dict(), file)


def test_lpips_with_cached_backbone_weights(hub):
    cache_weights()
    net, why = perceptual.load()
    assert net is not None and why == ""
    conv = dict(net.net.slice1.named_children())["0"]
    assert torch.equal(conv.weight, torch.load(perceptual.backbone_file())["features.0.weight"])
    gen = torch.Generator().manual_seed(0)
    truth = torch.rand(3, 3, 32, 32, generator=gen)
    noisy = (truth + 0.3 * torch.randn(3, 3, 32, 32, generator=gen)).clamp(0, 1)
    same = perceptual.distance(net, truth, truth)
    assert same.shape == (3,) and torch.allclose(same, torch.zeros(3), atol=1e-6)
    assert (perceptual.distance(net, truth, noisy) > 1e-3).all()
    grey = perceptual.distance(net, truth[:, :1], noisy[:, :1])  # one channel: repeated
    assert grey.shape == (3,) and (grey > 0).all()


def test_a_run_reports_lpips_when_weights_are_cached(hub, tmp_path):
    cache_weights()
    cfg = typed_config(*FAST, "trials=2", "metrics.lpips=required")
    experiment.check(cfg)  # required and available: passes
    metrics = experiment.run(cfg, tmp_path / "run")
    assert len(metrics["per_image"]["lpips"]) == 2 and metrics["lpips"] > 0
    assert metrics["lpips_ci_low"] <= metrics["lpips"] <= metrics["lpips_ci_high"]


def test_without_weights_lpips_is_null_with_one_warning_or_a_config_error(hub, tmp_path, caplog):
    net, why = perceptual.load()
    assert net is None and "not downloadable" in why and str(hub) in why
    with caplog.at_level(logging.WARNING):
        metrics = experiment.run(typed_config(*FAST), tmp_path / "run")
    assert metrics["lpips"] != metrics["lpips"]  # NaN, null in metrics.json
    assert "lpips" not in metrics["per_image"] and metrics["psnr"] > 0
    assert [r.message for r in caplog.records if "lpips" in r.message] == [f"lpips: null ({why})"]
    with pytest.raises(ConfigError) as info:
        experiment.check(typed_config(*FAST, "metrics.lpips=required"))
    assert str(info.value).startswith("metrics.lpips='required' is not allowed: AlexNet")
    assert "\n" not in str(info.value)
