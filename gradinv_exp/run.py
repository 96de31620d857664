"""One experiment, top to bottom: data -> model -> gradient -> defense -> attack -> files.

This is the edge where the Hydra config becomes typed values (``Config`` dataclasses);
below it, functions take tensors and numbers.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from torchvision.transforms import Normalize

from gradinv_exp import artifacts, attacks, checkpoint, data, defenses, faults, metrics, models
from gradinv_exp import pretrain as pretraining
from gradinv_exp.checks import one_of, require
from gradinv_exp.clients import Client
from gradinv_exp.config import Config, UtilityConfig

log = logging.getLogger(__name__)


def to_config(cfg: DictConfig) -> Config:
    """Typed, range-checked config (raises ConfigError with a one-line message)."""
    typed = OmegaConf.to_object(cfg)
    assert isinstance(typed, Config)
    validate(typed)
    return typed


def validate(cfg: Config) -> None:
    """Checks that span groups or need the code's registries."""
    one_of("defense.name", cfg.defense.name, tuple(defenses.DEFENSES))
    one_of("model.name", cfg.model.name, tuple(models.MODELS))
    one_of("attack.name", cfg.attack.name, tuple(attacks.ATTACKS))
    one_of("optimizer.name", cfg.optimizer.name, tuple(attacks.OPTIMIZERS))
    data.check(cfg.dataset)
    needed = attacks.REQUIRED_OPTIMIZER.get(cfg.attack.name, (cfg.optimizer.name,))
    require(
        cfg.optimizer.name in needed,
        "optimizer",
        cfg.optimizer.name,
        f"attack={cfg.attack.name} needs optimizer={'|'.join(needed)}",
    )
    if cfg.device == "cuda" and not torch.cuda.is_available():
        one_of("device", cfg.device, ("auto", "cpu"))  # no GPU here: name what is allowed
    ds = cfg.dataset
    models.check_fits(
        cfg.model.name, ds.channels, ds.num_classes, ds.image_size, cfg.model.activation
    )
    attacked = cfg.trials * ds.batch_size
    data.check_range(cfg.dataset.name, cfg.dataset.index, attacked)
    if cfg.model.pretrain_steps > 0:
        pretraining.check(cfg.dataset.name, attacked, cfg.model.pretrain_images)
    if cfg.model.checkpoint is not None:
        build_model(cfg)  # loads the checkpoint: a wrong file fails here, before any job
    defenses.check(cfg.defense, cfg.dataset.batch_size)


def generator(seed: int, purpose: str) -> torch.Generator:
    """An independent, reproducible random stream per purpose ("model", "attack", ...).

    Separate streams keep e.g. the dummy initialisation identical across defenses, so a
    sweep compares defenses on the same attack start.
    """
    digest = hashlib.sha256(f"{seed}:{purpose}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))


def device_of(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_model(cfg: Config | UtilityConfig) -> nn.Module:
    """The model under attack (seeded init, then ``model.checkpoint``'s weights if set),
    with the dataset's normalisation (if any) in front. Pretraining comes later, in run."""
    ds = cfg.dataset
    model = models.build(
        cfg.model.name,
        channels=ds.channels,
        num_classes=ds.num_classes,
        image_size=ds.image_size,
        activation=cfg.model.activation,
        init=cfg.model.init,
        init_range=cfg.model.init_range,
        generator=generator(cfg.seed, "model"),
    )
    if cfg.model.checkpoint is not None:
        checkpoint.load_into(model, cfg.model.checkpoint)
    if ds.mean is not None and ds.std is not None:
        model = nn.Sequential(Normalize(ds.mean, ds.std), model)
    return model


def identity(cfg: Config | DictConfig) -> dict[str, Any]:
    """The config values that tell runs apart, flat (``defense.ratio`` ...), for tables."""
    return pd.json_normalize(OmegaConf.to_container(OmegaConf.structured(cfg))).to_dict("records")[
        0
    ]


def aggregate(name: str, values: np.ndarray) -> dict[str, float]:
    """Mean, std, min and max over trials (std 0 for one trial), as ``name``, ``name_std`` ..."""
    return {
        name: float(values.mean()),
        f"{name}_std": float(values.std()),
        f"{name}_min": float(values.min()),
        f"{name}_max": float(values.max()),
    }


def score(truth: Tensor, labels: Tensor, result: attacks.AttackResult) -> dict[str, np.ndarray]:
    """Per-trial metrics: each ``(T, B)`` array holds per-image values after matching."""
    per_trial = [
        metrics.evaluate(truth[t], labels[t], result.images[t].cpu(), result.labels[t].cpu())
        for t in range(len(truth))
    ]
    return {key: np.stack([p[key] for p in per_trial]) for key in per_trial[0]}


@dataclass
class Progress:
    """What a run has computed so far: enough to save it if the run is stopped midway."""

    images: Tensor | None = None  # (T, B, C, H, W) the attacked images
    labels: Tensor | None = None  # (T, B)
    facts: dict[str, Any] = field(default_factory=dict)  # data_source, defense cost ...
    snapshots: list[tuple[int, Tensor]] = field(default_factory=list)  # (step, (T,B,C,H,W))
    rows: list[dict[str, float]] = field(default_factory=list)  # history.csv rows
    losses: Tensor | None = None  # (T,) objective at the last snapshot
    start: float = field(default_factory=time.perf_counter)


def run(cfg: Config, run_dir: Path) -> dict[str, Any]:
    """Run the experiment ``cfg``, write its files into ``run_dir``, return metrics.json.

    Stopped by a signal (``faults.Interrupted``): writes every artifact of the steps so far
    with ``status: interrupted``, then re-raises. Any other exception: writes metrics.json
    with ``status: failed`` and the error, then re-raises.
    """
    progress = Progress()
    try:
        return attack_run(cfg, run_dir, progress)
    except faults.Interrupted as stop:
        log.warning("%s: saving the results of the steps so far", stop)
        save_interrupted(cfg, run_dir, progress, stop)
        raise
    except Exception as err:
        faults.record_failure(run_dir, err, identity(cfg))
        raise


def attack_run(cfg: Config, run_dir: Path, progress: Progress) -> dict[str, Any]:
    """The experiment itself; fills ``progress`` as it goes."""
    torch.set_num_threads(cfg.threads)
    device = device_of(cfg.device)
    ds = cfg.dataset
    flat, flat_labels, source = data.load(ds, cfg.trials * ds.batch_size)
    images = flat.reshape(cfg.trials, ds.batch_size, *flat.shape[1:])  # (T, B, C, H, W)
    labels = flat_labels.reshape(cfg.trials, ds.batch_size)
    progress.images, progress.labels = images, labels
    progress.facts["data_source"] = source
    log.info(
        "data %s: %d trial(s) x %d image(s) %s, labels %s | model %s | defense %s | "
        "attack %s/%s | device %s",
        source, cfg.trials, ds.batch_size, tuple(images.shape[2:]), labels.tolist(),
        cfg.model.name, cfg.defense, cfg.attack.name, cfg.optimizer.name, device,
    )  # fmt: skip
    model = build_model(cfg).to(device)
    if cfg.model.pretrain_steps > 0:
        x, y = pretraining.images(ds, cfg.trials * ds.batch_size, cfg.model.pretrain_images)
        onehot_x = torch.nn.functional.one_hot(y, ds.num_classes).float().to(device)
        pretraining.train(
            model, x.to(device), onehot_x, steps=cfg.model.pretrain_steps, lr=cfg.model.pretrain_lr
        )
    onehot = torch.nn.functional.one_hot(labels, ds.num_classes).float().to(device)
    noise = generator(cfg.seed, "defense")
    true, shared = [], []
    for t in range(cfg.trials):
        client = Client(model, images[t].to(device), onehot[t])
        g = attacks.gradient(model, client.images, client.targets)
        true.append(g)
        shared.append(defenses.apply(g, cfg.defense, generator=noise, client=client))
    progress.facts |= defenses.cost(
        [torch.stack(p) for p in zip(*true)], [torch.stack(p) for p in zip(*shared)]
    )
    progress.facts |= defenses.report(cfg.defense)  # defense_steps; epsilon for DP

    def on_snapshot(step: int, grad_loss: Tensor, recon: Tensor) -> None:
        recon = recon.detach().cpu().clone()
        pairs = [(images[t], metrics.matched(images[t], recon[t])) for t in range(len(recon))]
        row = {
            "step": step,
            "grad_loss": float(grad_loss.mean()),
            "mse": float(np.mean([metrics.mse(*p) for p in pairs])),
            "psnr": float(np.mean([metrics.psnr(*p) for p in pairs])),
        }
        progress.snapshots.append((step, recon))
        progress.rows.append(row)
        progress.losses = grad_loss.detach().cpu().clone()
        log.info(
            "step %4d/%d  grad_loss %.3e  psnr %6.2f dB",
            step, cfg.attack.iterations, row["grad_loss"], row["psnr"],
        )  # fmt: skip

    progress.start = time.perf_counter()
    result = attacks.ATTACKS[cfg.attack.name](
        model,
        [torch.stack(p) for p in zip(*shared)],
        shape=tuple(images.shape),
        num_classes=ds.num_classes,
        attack=cfg.attack,
        optimizer=cfg.optimizer,
        generator=generator(cfg.seed, "attack"),
        on_snapshot=on_snapshot,
        known_labels=labels.to(device),
    )
    status = "diverged" if result.diverged.any() else "ok"
    return finish(cfg, run_dir, progress, result, status)


def finish(
    cfg: Config, run_dir: Path, progress: Progress, result: attacks.AttackResult, status: str
) -> dict[str, Any]:
    """Score ``result`` against the truth, write every file, return metrics.json."""
    assert progress.images is not None and progress.labels is not None
    images, labels = progress.images, progress.labels
    wall = time.perf_counter() - progress.start
    scores = score(images, labels, result)
    if (result.labels < 0).all():  # the attack did not report labels (interrupted)
        scores["label_acc"] = np.full(scores["label_acc"].shape, np.nan)
    summary: dict[str, Any] = {
        "status": status,
        "data_source": progress.facts["data_source"],
        "trials": cfg.trials,
        "trials_diverged": int(result.diverged.sum()),
    }
    for name in ("mse", "psnr", "ssim", "label_acc"):
        summary |= aggregate(name, scores[name].mean(axis=1))
    summary |= aggregate("grad_loss", result.grad_loss.numpy())
    summary |= {"steps": int(result.steps.max()), "wall_s": wall}
    summary |= {k: v for k, v in progress.facts.items() if k not in summary}
    summary["per_image"] = {k: v.tolist() for k, v in scores.items()}
    summary["labels"] = labels.tolist()
    summary["recovered_labels"] = result.labels.tolist()  # in the attack's order
    summary["config"] = identity(cfg)
    log.info(
        "done: status %s  psnr %.2f dB  ssim %.3f  label_acc %.2f  %.1f s",
        summary["status"], summary["psnr"], summary["ssim"], summary["label_acc"], wall,
    )  # fmt: skip
    ordered = torch.stack([result.images[t].cpu()[scores["order"][t]] for t in range(cfg.trials)])
    write(run_dir, summary, pd.DataFrame(progress.rows), progress.snapshots, images, ordered)
    return summary


def save_interrupted(
    cfg: Config, run_dir: Path, progress: Progress, stop: faults.Interrupted
) -> dict[str, Any]:
    """Write the run as far as it got, ``status: interrupted``: scored on the last snapshot
    when the attack had reported one (labels are not reported, so label_acc is NaN), else
    metrics.json alone with the config, the signal and ``steps: 0``."""
    progress.facts["signal"] = stop.signal_name
    if not progress.snapshots or progress.losses is None:
        record = {"status": "interrupted", "steps": 0, **progress.facts, "config": identity(cfg)}
        artifacts.write_json(run_dir / "metrics.json", record)
        return record
    step, last = progress.snapshots[-1]
    trials = last.shape[0]
    partial = attacks.AttackResult(
        images=last,
        labels=torch.full(last.shape[:2], -1, dtype=torch.long),  # not reported: unknown
        grad_loss=progress.losses,
        steps=torch.full((trials,), step, dtype=torch.long),
        diverged=torch.zeros(trials, dtype=torch.bool),
    )
    return finish(cfg, run_dir, progress, partial, "interrupted")


def write(
    run_dir: Path,
    summary: dict[str, Any],
    history: pd.DataFrame,
    snapshots: list[tuple[int, Tensor]],
    truth: Tensor,
    recon: Tensor,
) -> None:
    """All files of a run; metrics.json last, so its presence means the run is complete.

    ``truth`` and ``recon`` are ``(T, B, C, H, W)``, ``recon`` already matched to truth.
    """
    title = f"{summary['status']}  PSNR {summary['psnr']:.2f} dB  SSIM {summary['ssim']:.3f}"
    artifacts.write_csv(run_dir / "history.csv", history)
    artifacts.save_figure(run_dir / "progress.png", artifacts.progress_figure(snapshots))
    artifacts.save_figure(
        run_dir / "reconstruction.png", artifacts.reconstruction_figure(truth, recon, title)
    )
    artifacts.save_figure(run_dir / "loss.png", artifacts.loss_figure(history))
    artifacts.write_images(run_dir / "images.npz", truth, recon.clamp(0, 1))
    artifacts.write_json(run_dir / "metrics.json", summary)
