"""attack=learned (Learning to Invert): it simulates clients exactly as the real ones
share, beats the auxiliary set's mean image, caches its inverter per setting (and never
reuses it for another), refuses bad settings in one line before any work, and runs end to
end under noise and DP. That it never receives a client's image is
tests/attacks/test_contract.py's check."""

import json

import pytest
import torch
from helpers import cli, preflight_check, typed_config

from gradinv_exp import experiment
from gradinv_exp.attacks import learned
from gradinv_exp.base.options import ConfigError

# 8x8 grey crops, DLG's LeNet, a small inverter: a few seconds per training on one core
TINY = [
    "attack=learned", "dataset=crops", "dataset.image_size=8", "dataset.channels=1",
    "model=lenet_dlg", "attack.aux_images=256", "attack.updates=512", "attack.steps=300",
    "attack.width=128", "attack.features=128", "attack.batch_size=32",
]  # fmt: skip
QUICK = [*TINY, "attack.updates=64", "attack.steps=20"]  # where quality does not matter


def case(*overrides: str):
    """The run's truth ``(T, B, C, H, W)``, what the server observes and the ``Server``."""
    cfg = typed_config(*TINY, *overrides)
    images, labels, _ = experiment.load_data(cfg)
    nets, sent = experiment.send(cfg, experiment.build_models(cfg, torch.device("cpu")))
    _, shared = experiment.share(cfg, nets, images, labels)
    return cfg, images, labels, experiment.observe(cfg, shared, labels), sent


def test_the_simulated_clients_share_what_the_real_clients_share():
    """With no defense, the server's simulation of a client on images x gives exactly the
    update a real client holding x shares (two clients of two images each, FedAvg)."""
    cfg, images, labels, observed, sent = case(
        "clients=2", "dataset.batch_size=2", "client=fedavg", "client.local_steps=2", "trials=2"
    )
    gen = torch.Generator().manual_seed(0)
    simulated = learned.simulate(sent.model, observed, images, labels, gen)
    for sim, real in zip(simulated, observed.update, strict=True):
        assert torch.allclose(sim, real, atol=1e-7)


@pytest.mark.slow
def test_it_beats_the_auxiliary_sets_mean_image(tmp_path):
    cfg = typed_config(*TINY, "trials=8", f"attack.cache_dir={tmp_path}")
    summary = experiment.run(cfg, tmp_path / "run")
    truth = torch.tensor(json.loads((tmp_path / "run" / "metrics.json").read_text())["labels"])
    assert truth.shape == (8, 1)
    images, _, _ = experiment.load_data(cfg)
    _, sent = experiment.send(cfg, experiment.build_models(cfg, torch.device("cpu")))
    mean_image = sent.images[: cfg.attack.aux_images].mean(0)  # the trivial baseline
    baseline = (images - mean_image).pow(2).mean().item()
    assert summary["mse"] < 0.6 * baseline, (summary["mse"], baseline)
    assert summary["label_acc"] == 1.0  # iDLG's rule on one image


@pytest.mark.slow
def test_the_inverter_is_cached_per_setting_and_survives_a_rerun(tmp_path):
    cache = tmp_path / "cache"
    run = ["defense=noise", "defense.sigma=1e-3", f"attack.cache_dir={cache}", "trials=2"]
    first = experiment.run(typed_config(*QUICK, *run), tmp_path / "a")
    assert first["learned.cached"] == 0 and first["learned.train_s"] > 0
    assert len(list(cache.glob("*.pt"))) == 1
    again = experiment.run(typed_config(*QUICK, *run), tmp_path / "b")  # a rerun: loaded
    assert again["learned.cached"] == 1 and again["learned.train_s"] == 0
    recon = [json.loads((tmp_path / d / "metrics.json").read_text()) for d in "ab"]
    assert recon[0]["per_image"]["mse"] == recon[1]["per_image"]["mse"]  # the same inverter
    # another defense strength, another model, another protocol: never the cached one
    for i, other in enumerate([
        ["defense.sigma=1e-2"], ["seed=1"], ["client=fedavg"], ["attack.width=64"],
    ]):  # fmt: skip
        result = experiment.run(typed_config(*QUICK, *run, *other), tmp_path / f"o{i}")
        assert result["learned.cached"] == 0, other
    assert len(list(cache.glob("*.pt"))) == 5
    assert not list(cache.glob(".*.tmp"))  # written atomically, nothing left half-written


def test_a_cached_inverter_is_the_one_training_gives(tmp_path):
    """Training is a pure function of the cache key: without a cache, two trainings give
    the same inverter, and the one read back from the cache reconstructs the same."""
    _, _, _, observed, sent = case("defense=quantize", "defense.bits=4")
    aux, aux_labels = sent.images[:256], sent.labels[:256]
    plain = typed_config(*QUICK, "attack.cache_dir=null").attack
    cached = typed_config(*QUICK, f"attack.cache_dir={tmp_path}").attack
    one, _, _ = learned.inverter(sent.model, observed, aux, aux_labels, plain)
    two, _, _ = learned.inverter(sent.model, observed, aux, aux_labels, plain)
    learned.inverter(sent.model, observed, aux, aux_labels, cached)
    three, was_cached, _ = learned.inverter(sent.model, observed, aux, aux_labels, cached)
    assert was_cached
    shape = observed.shape[1:]
    out = [inv(observed.update, shape) for inv in (one, two, three)]
    assert torch.equal(out[0], out[1]) and torch.equal(out[0], out[2])


def test_the_key_changes_with_everything_the_inverter_depends_on():
    _, _, _, observed, sent = case()
    aux, labels = sent.images[:256], sent.labels[:256]
    cfg = typed_config(*TINY).attack
    key = learned.cache_key(sent.model, observed, aux, labels, cfg)
    assert key == learned.cache_key(sent.model, observed, aux.clone(), labels, cfg)
    changed = aux.clone()
    changed[0, 0, 0, 0] += 0.5
    other_model = typed_config(*TINY, "seed=1")
    _, sent1 = experiment.send(
        other_model, experiment.build_models(other_model, torch.device("cpu"))
    )
    longer = typed_config(*TINY, "attack.steps=301").attack
    others = [
        learned.cache_key(sent.model, observed, changed, labels, cfg),
        learned.cache_key(sent1.model, observed, aux, labels, cfg),
        learned.cache_key(sent.model, observed, aux, labels, longer),
    ]
    assert key not in others
    # what only the attack's read-out uses does not retrain
    refine = typed_config(*TINY, "attack.refine=3", "attack.labels=yin").attack
    assert key == learned.cache_key(sent.model, observed, aux, labels, refine)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["attack.aux_images=0"], "attack.aux_images=0 is not allowed: must be >= 1"),
        (["dataset.batch_size=9"],
         "dataset.batch_size=9 is not allowed: the inverter decodes at most "
         "attack.max_images=8 images from one update and clients x dataset.batch_size = 9"),
        (["clients=4", "dataset.batch_size=5", "attack.max_images=20", "attack.aux_images=16"],
         "attack.aux_images=16 is not allowed: must be >= the images behind one update "
         "(clients x dataset.batch_size = 20): each simulated update needs that many distinct "
         "images"),
        (["attack.aux_images=2049"],
         "attack.aux_images=2049 is not allowed: crops has 4096 images and 2048 of them are "
         "the server's own (dataset.server_fraction=0.5), so at most 2048"),
        (["attack.labels=joint"],
         "attack.labels='joint' is not allowed: choose one of idlg, given, yin, llg"),
        (["attack.lr=0"], "attack.lr=0.0 is not allowed: must be a finite number > 0"),
    ],
    ids=["aux-small", "batch-too-large", "aux-below-one-update", "aux-above-server-part",
         "labels", "lr"],
)  # fmt: skip
def test_bad_settings_are_one_line_before_any_work(overrides, expected):
    with pytest.raises(ConfigError) as info:
        typed_config(*TINY, *overrides)
    assert str(info.value) == expected


def test_layers_the_model_lacks_are_refused_in_preflight():
    with pytest.raises(
        ConfigError, match=r"attack.layers=\[0, 9\] is not allowed: model=lenet_dlg"
    ):
        preflight_check([*TINY, "attack.layers=[0,9]"])
    preflight_check([*TINY, "attack.layers=[-2,-1]"])  # the last layer's weight and bias


def test_chosen_layers_and_no_projection_read_only_those_entries():
    _, _, _, observed, sent = case()
    cfg = typed_config(*TINY, "attack.layers=[-2]", "attack.features=null").attack
    shapes = [p.shape for p in sent.model.parameters()]
    reducer = learned.reducer_for(cfg, shapes, observed.update)
    assert reducer.raw(observed.update).shape == (1, shapes[-2].numel())
    assert reducer.layers == (len(shapes) - 2,) and reducer.buckets is None


def test_refine_continues_from_the_inverters_images(tmp_path):
    cache = f"attack.cache_dir={tmp_path}"
    plain = experiment.run(typed_config(*QUICK, cache), tmp_path / "plain")
    refined = experiment.run(typed_config(*QUICK, cache, "attack.refine=4"), tmp_path / "run")
    # steps: those that moved it (L-BFGS rows that stop moving leave the problem early)
    assert refined["status"] == "ok" and 1 <= refined["steps"] <= 4
    assert refined["learned.cached"] == 1 and refined["psnr"] != plain["psnr"]
    history = (tmp_path / "run" / "history.csv").read_text().splitlines()
    step, _, _, psnr = history[1].split(",")  # the engine's start: the inverter's images
    assert step == "0" and float(psnr) == pytest.approx(plain["psnr"], abs=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("defense", [["defense=noise", "defense.sigma=1e-2"], ["defense=dp"]])
def test_it_runs_end_to_end_under_noise_and_dp(defense, tmp_path):
    out = tmp_path / "run"
    args = [*QUICK, *defense, f"attack.cache_dir={tmp_path / 'cache'}", "trials=2"]
    proc = cli([*args, f"hydra.run.dir={out}"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    m = json.loads((out / "metrics.json").read_text())
    assert m["status"] == "ok" and m["config"]["attack.name"] == "learned"
    assert m["config"]["defense.name"] == defense[0].split("=")[1]
    assert m["learned.inverters"] == 1 and m["learned.cached"] == 0
    assert m["assumed.aux_images"] == 256 and len(m["per_image"]["psnr"]) == 2
