"""One experiment, top to bottom, as named steps:

    data -> model(s) -> client share -> defense -> attack -> score -> files

It takes the typed config (``config.to_config``: Hydra's config as typed values); below it,
functions take tensors and numbers. Every random draw comes from the run's seed, one
independent stream per purpose (``base.streams.generator``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from torchvision.transforms import Normalize

from gradinv_exp import attacks, client, data, defenses, models, servers
from gradinv_exp.analysis import figures, metrics, perceptual, report, uncertainty
from gradinv_exp.analysis.metric_table import METRICS
from gradinv_exp.base.options import one_of, require
from gradinv_exp.base.status import Status
from gradinv_exp.base.streams import generator
from gradinv_exp.config import Config, UtilityConfig
from gradinv_exp.runs import artifacts, checkpoints, display, faults, provenance
from gradinv_exp.runs.folder import flat

log = logging.getLogger(__name__)


def check(cfg: Config) -> None:
    """The checks that need torch or the disk, run by preflight for every job before the
    first starts: the device, the folder data set, the model against the data's shapes
    (one forward pass), the checkpoint against the model, the user's own code on a probe
    (``plugins``)."""
    if cfg.device == "cuda" and not torch.cuda.is_available():
        one_of("device", cfg.device, ("auto", "cpu"))  # no GPU here: name what is allowed
    data.check(cfg.dataset, cfg.attacked)
    ds = cfg.dataset
    models.check_fits(
        cfg.model.name, ds.channels, ds.num_classes, ds.image_size, cfg.model.activation,
        cfg.model.target,
    )  # fmt: skip
    if cfg.model.checkpoint is not None:
        build_model(cfg)  # loads the checkpoint: a wrong file fails here, before any job
    if cfg.metrics.lpips == "required":
        require(
            cfg.dataset.image_size >= perceptual.MIN_SIZE,
            "metrics.lpips",
            "required",
            f"LPIPS needs images of at least {perceptual.MIN_SIZE} px "
            f"(dataset.image_size={cfg.dataset.image_size})",
        )
        require(perceptual.load()[0] is not None, "metrics.lpips", "required", perceptual.load()[1])
    # the user's own model or defense (code that is not built in) runs once on a probe
    own = models.MODELS[cfg.model.name].load is not None or defenses.has_checks(cfg.defense)
    net = build_model(cfg) if own or attack_entry(cfg).check else None
    if own:
        ds = cfg.dataset
        shape = (ds.channels, ds.image_size, ds.image_size)
        defenses.check(cfg.defense, client.probe(net, ds.batch_size, shape, ds.num_classes))
    if attack_entry(cfg).check is not None:
        attack_entry(cfg).check(cfg, net)


def attack_entry(cfg: Config) -> attacks.contract.Attack:
    """The attack family ``cfg.attack`` configures (its ``ATTACKS`` entry)."""
    return attacks.ATTACKS[cfg.attack.family]


def device_of(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


# --- the steps ------------------------------------------------------------------------


def load_data(cfg: Config) -> tuple[Tensor, Tensor, str]:
    """Images ``(T, B, C, H, W)`` in [0, 1], labels ``(T, B)`` and the data's source name;
    B = ``cfg.images`` (clients x dataset.batch_size, client k's batch in turn).

    Each trial's batches are drawn at random from the clients' images (``data.draw``, the
    "data" stream; disjoint across trials, ``dataset.index`` first), or all trials attack
    the same batch when only the models vary (``trials_vary=models``)."""
    flat_images, flat_labels, source = data.draw(
        cfg.dataset, cfg.attacked, generator(cfg.seed, "data")
    )
    images = flat_images.reshape(-1, cfg.images, *flat_images.shape[1:])
    labels = flat_labels.reshape(-1, cfg.images)
    if len(images) < cfg.trials:  # one batch, attacked through every trial's model
        images = images.expand(cfg.trials, *images.shape[1:])
        labels = labels.expand(cfg.trials, -1)
    return images, labels, source


def build_model(cfg: Config | UtilityConfig, seed: int | None = None) -> nn.Module:
    """The model under attack (init seeded by ``seed``, default the run's, then
    ``model.checkpoint``'s weights if set), with the dataset's normalisation (if any) in
    front."""
    ds = cfg.dataset
    net = models.build(
        cfg.model.name,
        channels=ds.channels,
        num_classes=ds.num_classes,
        image_size=ds.image_size,
        activation=cfg.model.activation,
        init=cfg.model.init,
        init_range=cfg.model.init_range,
        generator=generator(cfg.seed if seed is None else seed, "model"),
        target=cfg.model.target,
    )
    if cfg.model.checkpoint is not None:
        models.load_checkpoint(net, cfg.model.checkpoint)
    if ds.mean is not None and ds.std is not None:
        net = nn.Sequential(Normalize(ds.mean, ds.std), net)
    return net


def pretrain(cfg: Config, net: nn.Module, device: torch.device) -> None:
    """``model.pretrain_steps`` of SGD on images of the server's own (never a client's)."""
    ds = cfg.dataset
    count = cfg.model.pretrain_images
    x, y = data.server_images(ds, count, generator(cfg.seed, "data"), "model.pretrain_images")
    onehot = nn.functional.one_hot(y, ds.num_classes).float().to(device)
    models.pretrain(
        net, x.to(device), onehot, steps=cfg.model.pretrain_steps, lr=cfg.model.pretrain_lr,
        batch_norm=cfg.model.pretrain_bn,
    )  # fmt: skip


def build_models(cfg: Config, device: torch.device) -> list[nn.Module]:
    """The model each trial attacks, pretrained if asked: one shared by all trials, or
    (``trials_vary=models|both``) trial t's own, the model of seed ``seed + t``."""
    seeds = [cfg.seed + t for t in range(cfg.trials)] if cfg.models_vary else [cfg.seed]
    nets = [build_model(cfg, seed).to(device) for seed in seeds]
    if cfg.model.pretrain_steps > 0:
        for net in nets:
            pretrain(cfg, net, device)
    return nets


def send(cfg: Config, nets: list[nn.Module]) -> tuple[list[nn.Module], servers.Server]:
    """What the server sends the clients (``cfg.server``: the models as they are, or
    modified by a malicious server, which may use its public images), in the order of
    ``nets``, and the ``Server`` that the attack receives, with the images of the server's
    own that the server option and the attack ask for (never a client's)."""
    option = servers.SERVERS[cfg.server.name]
    public = option.public_images(cfg.server)
    count = max(public, attack_entry(cfg).server_images(cfg.attack))
    own = (
        data.server_images(cfg.dataset, count, generator(cfg.seed, "data"), "server")
        if count
        else None
    )
    device = next(nets[0].parameters()).device
    images = own[0][:public] if public else None
    sent, secrets = option.send(cfg.server, nets, images, generator(cfg.seed, "server"))
    sent = [net.to(device) for net in sent]
    return sent, servers.controlled(cfg.server.name, sent, secrets, own)


def share(
    cfg: Config, nets: list[nn.Module], images: Tensor, labels: Tensor
) -> tuple[list[Tensor], list[Tensor]]:
    """What each trial's clients compute on the model the server sent (``nets[t]``, or
    the one shared model) and what their defense lets them share: two lists with one
    ``(T, *param.shape)`` tensor per parameter (true, shared). Trial t's ``cfg.clients``
    clients hold ``images[t]`` in turn, ``dataset.batch_size`` each; each client's update
    goes through the defense, and the server sees their mean (a secure aggregation's sum
    over the known number of clients)."""
    device = next(nets[0].parameters()).device
    onehot = nn.functional.one_hot(labels, cfg.dataset.num_classes).float().to(device)
    noise = generator(cfg.seed, "defense")
    per_example = client.CLIENTS[cfg.client.name].per_example
    size = cfg.dataset.batch_size
    true, shared = [], []
    for t in range(cfg.trials):
        net = nets[t % len(nets)]
        updates, defended = [], []
        for k in range(cfg.clients):
            rows = slice(k * size, (k + 1) * size)
            who = client.Client(
                net, images[t, rows].to(device), onehot[t, rows], per_example=per_example
            )
            g = client.share(who, cfg.client)
            updates.append(g)
            defended.append(defenses.apply(g, cfg.defense, generator=noise, client=who))
        true.append(mean_update(updates))
        shared.append(mean_update(defended))
    return [torch.stack(p) for p in zip(*true)], [torch.stack(p) for p in zip(*shared)]


def mean_update(updates: list[list[Tensor]]) -> list[Tensor]:
    """The mean of clients' updates, parameter by parameter (one client: its own)."""
    if len(updates) == 1:
        return updates[0]
    return [torch.stack(p).mean(0) for p in zip(*updates)]


def observe(cfg: Config, shared: list[Tensor], labels: Tensor) -> attacks.Observed:
    """What the server observes (``shared``: the aggregated, defended updates) and what the
    threat model grants it: the true labels only when the attack's configuration asks for
    them (``attack.labels=given``), the clients' local hyperparameters only when
    ``client.known_hyperparameters``, the defense always (Kerckhoffs)."""
    ds = cfg.dataset
    granted = attack_entry(cfg).labels_granted(cfg.attack)
    return attacks.Observed(
        update=shared,
        protocol=client.CLIENTS[cfg.client.name].assumed(cfg.client),
        images=cfg.images,
        image_shape=(ds.channels, ds.image_size, ds.image_size),
        num_classes=ds.num_classes,
        defense=cfg.defense,
        clients=cfg.clients,
        labels=labels.clone().to(shared[0].device) if granted else None,
    )


def threat_model(cfg: Config) -> dict[str, Any]:
    """metrics.json's record of the threat model (flat keys for summary.csv and compare):
    the server (honest or malicious), what the attacker was told, what it modelled."""
    entry = attack_entry(cfg)
    return {
        "threat.server": cfg.server.name,
        "threat.malicious": servers.SERVERS[cfg.server.name].malicious,
        "threat.labels_known": entry.labels_granted(cfg.attack),
        "threat.hyperparameters_known": (
            client.CLIENTS[cfg.client.name].assumed(cfg.client) == cfg.client
        ),
        "threat.defense_modelled": entry.models_defense(cfg.attack),
        "threat.clients": cfg.clients,
    }


def lpips_network(cfg: Config) -> nn.Module | None:
    """The LPIPS network when ``metrics.lpips`` asks for it and it can be had (one WARNING
    when ``auto`` finds no weights; ``required`` was checked before the run)."""
    if cfg.metrics.lpips == "off":
        return None
    if cfg.dataset.image_size < perceptual.MIN_SIZE:
        log.warning("lpips: null (AlexNet needs images of at least %d px)", perceptual.MIN_SIZE)
        return None
    net, why = perceptual.load()
    if net is None:
        log.warning("lpips: null (%s)", why)
    return net


def score(
    truth: Tensor, labels: Tensor, result: attacks.AttackResult, lpips: nn.Module | None
) -> dict[str, np.ndarray]:
    """Per-trial metrics: each ``(T, B)`` array holds per-image values after matching."""
    per_trial = [
        metrics.evaluate(truth[t], labels[t], result.images[t].cpu(), result.labels[t].cpu(), lpips)
        for t in range(len(truth))
    ]
    return {key: np.stack([p[key] for p in per_trial]) for key in per_trial[0]}


def passed(cfg: Config, scores: dict[str, np.ndarray]) -> np.ndarray:
    """Per image ``(T, B)``: did the attack reconstruct it (``metrics`` success criterion)?
    An image whose metric is missing (LPIPS without weights) did not pass."""
    chosen = cfg.metrics.success_metric
    return METRICS[chosen].passes(scores[chosen], cfg.metrics.success_threshold)


def attack_backend(cfg: Config, device: torch.device, jobs: int = 1) -> attacks.Backend:
    """Compiled or eager, and which CPU convolution, for this run's attack (with ``jobs``
    runs like it batched together): the fixed rules of ``attacks.backend.choose`` on the
    model's registry facts and the attack's batched problems and objective evaluations."""
    entry = attack_entry(cfg)
    return attacks.choose_backend(
        cfg.compile,
        cfg.conv_backend,
        model=cfg.model.name,
        device=device.type,
        problems=jobs * cfg.trials * entry.restarts(cfg.attack),
        closures=entry.closures(cfg.attack, cfg.optimizer),
    )


# --- the pipeline: case -> attack -> result ---------------------------------------------


@dataclass
class Case:
    """One job up to its attack: the truth (``images`` ``(T, B, C, H, W)`` in [0, 1],
    ``labels`` ``(T, B)``: only the scorer reads them), what the server controls
    (``server``: the model(s) it sent) and what it observed (``observed``), and the facts
    metrics.json records about them (data source, the defense's cost ...)."""

    cfg: Config
    images: Tensor
    labels: Tensor
    server: servers.Server
    observed: attacks.Observed
    facts: dict[str, Any]


def build_case(cfg: Config) -> Case:
    """The case step: data, the model(s) and what the server sent, the clients' defended
    shares, and what the server observes of them."""
    device = device_of(cfg.device)
    facts = provenance.started(device)
    images, labels, source = load_data(cfg)
    facts["data_source"] = source
    log.info(
        "data %s: %d trial(s) x %d image(s) %s, labels %s | model %s | defense %s | "
        "attack %s | device %s",
        source, cfg.trials, cfg.dataset.batch_size, tuple(images.shape[2:]), labels.tolist(),
        cfg.model.name, cfg.defense, attack_name(cfg), device,
    )  # fmt: skip
    nets, sent = send(cfg, build_models(cfg, device))
    true, shared = share(cfg, nets, images, labels)
    facts |= defenses.cost(true, shared)
    facts |= defenses.report(cfg.defense)  # defense_steps; epsilon for DP
    facts |= threat_model(cfg)
    facts["adaptive"] = facts["threat.defense_modelled"]
    return Case(cfg, images, labels, sent, observe(cfg, shared, labels), facts)


def attack_name(cfg: Config) -> str:
    """The attack as the log names it: the preset, and the optimiser where it uses one."""
    entry = attack_entry(cfg)
    uses = entry.closures(cfg.attack, cfg.optimizer) > 0
    return f"{cfg.attack.name}/{cfg.optimizer.name}" if uses else cfg.attack.name


@dataclass
class Progress:
    """What a job has computed so far: enough to save it if the job is stopped midway."""

    case: Case | None = None
    facts: dict[str, Any] = field(default_factory=dict)  # the case's, the backend's ...
    snapshots: list[tuple[int, Tensor]] = field(default_factory=list)  # (step, (T,B,C,H,W))
    rows: list[dict[str, float]] = field(default_factory=list)  # history.csv rows
    losses: Tensor | None = None  # (T,) objective at the last snapshot
    start: float = field(default_factory=time.perf_counter)  # of the attack (this attempt)
    begun: float = field(default_factory=time.perf_counter)  # of the run (this attempt)

    def state(self) -> dict[str, Any]:
        """The attack's part of the progress, for a checkpoint (snapshots, rows, losses,
        attack time so far)."""
        return {
            "snapshots": self.snapshots,
            "rows": self.rows,
            "losses": self.losses,
            "elapsed": time.perf_counter() - self.start,
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from ``state()``: the attack's time keeps counting from its elapsed."""
        self.snapshots = [(step, images.cpu()) for step, images in state["snapshots"]]
        self.rows, self.losses = state["rows"], state["losses"].cpu()
        self.start = time.perf_counter() - state["elapsed"]


def recorder(
    cfg: Config, images: Tensor, progress: Progress, show: str | None = None
) -> Callable[[int, Tensor, Tensor], None]:
    """The attack's ``on_snapshot`` for a job attacking ``images`` ``(T, B, C, H, W)``: each
    snapshot becomes a history row and a progress image in ``progress``, and moves the
    progress bar or logs one line (``display.kind``; ``show`` picks one)."""
    shown = display.Display(attack_entry(cfg).steps(cfg.attack), log, show)

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
        shown(step, row["grad_loss"], row["psnr"])

    return on_snapshot


def attack(
    cases: Sequence[Case],
    progress: Sequence[Progress],
    *,
    show: str | None = None,
    save_state: Callable[[dict[str, Any]], None] | None = None,
    saved_state: dict[str, Any] | None = None,
) -> list[attacks.AttackResult]:
    """The attack step: every case's attack in one call of its family's ``reconstruct``
    (cases of a batch share the family and its settings; the optimisation engine solves
    them as one problem set), each with its own random stream, its progress recorded
    into its ``progress``. ``save_state``/``saved_state``: the call's checkpoints. A
    family that reports no snapshot (a read-out) gets its result recorded as the one
    snapshot, at step 0."""
    first = cases[0].cfg
    backend = attack_backend(first, device_of(first.device), jobs=len(cases))
    targets = []
    for case, done in zip(cases, progress, strict=True):
        done.facts |= {"compile": backend.compile, "conv_backend": backend.conv}
        on_snapshot = recorder(case.cfg, case.images, done, show)
        stream = generator(case.cfg.seed, "attack")
        target = attacks.Target(case.observed, case.server, case.cfg.attack, stream, on_snapshot)
        targets.append(target)
    context = attacks.Context(first.optimizer, backend, save_state, saved_state)
    results = attack_entry(first).reconstruct(targets, context)
    for target, done, result in zip(targets, progress, results, strict=True):
        if not done.snapshots:
            target.on_snapshot(0, result.grad_loss, result.images)
    return results


def run(cfg: Config, run_dir: Path) -> dict[str, Any]:
    """Run the experiment ``cfg``, write its files into ``run_dir``, return metrics.json;
    ``run_batch`` of this one job (see there for what a stop or an error does)."""
    summary = run_batch([cfg], [run_dir])[0]
    assert summary is not None  # a lone job that fails raises
    return summary


def run_batch(cfgs: Sequence[Config], run_dirs: Sequence[Path]) -> list[dict[str, Any] | None]:
    """Run the jobs ``cfgs`` (one, or a batch whose attacks share one call) into their
    folders: each job's case, the attack of all of them, each job's score and files.
    Returns each job's metrics.json (None: it failed, and its metrics.json says so).

    A job whose case cannot be built is recorded as ``failed`` and the others go on; when
    none is left to attack, the last error is raised. A job alone keeps a checkpoint of
    its attack in its folder and continues from one it finds there; a batch keeps none.
    Stopped by a signal (``faults.Interrupted``): every job is saved as far as it got with
    ``status: interrupted``, then the signal goes on. Any other error in the attack (or,
    for a job alone, in its scoring): every job's metrics.json records it as ``failed``,
    and it is raised.
    """
    torch.set_num_threads(cfgs[0].threads)
    every = [(cfg, run_dir, Progress()) for cfg, run_dir in zip(cfgs, run_dirs, strict=True)]
    jobs, error = [], None
    for cfg, run_dir, done in every:
        try:
            done.case = build_case(cfg)
        except faults.Interrupted as stop:
            save_all(every, stop)
            raise
        except Exception as err:
            failed(cfg, run_dir, err)
            error = err
            continue
        done.facts |= done.case.facts
        jobs.append((cfg, run_dir, done))
    if not jobs:
        assert error is not None
        raise error
    alone = len(jobs) == 1
    config, run_dir, lead = jobs[0][0], jobs[0][1], jobs[0][2]
    saved = checkpoints.load(run_dir, flat(config), device_of(config.device)) if alone else None
    if saved is not None:
        lead.restore(saved["progress"])
        log.info("resuming from the checkpoint at step %d", saved["attack"]["step"])
    else:
        for _, _, done in jobs:
            done.start = time.perf_counter()

    def save_checkpoint(state: dict[str, Any]) -> None:
        checkpoints.save(run_dir, flat(config), {"attack": state, "progress": lead.state()})

    try:
        results = attack(
            [done.case for _, _, done in jobs],  # type: ignore[misc]  # all built
            [done for _, _, done in jobs],
            show=None if alone else display.LINES,  # many jobs at once: lines, not bars
            save_state=save_checkpoint if alone else None,
            saved_state=None if saved is None else saved["attack"],
        )
    except faults.Interrupted as stop:
        save_all(jobs, stop)
        raise
    except Exception as err:
        for cfg, job_dir, _ in jobs:
            failed(cfg, job_dir, err)
        raise
    share = (time.perf_counter() - lead.start) / len(jobs)
    out: dict[Path, dict[str, Any] | None] = dict.fromkeys(run_dirs)
    for (cfg, job_dir, done), result in zip(jobs, results, strict=True):
        done.facts |= {"compile": result.compiled, "compile_s": result.compile_s}
        if not alone:
            done.facts["batched_jobs"] = len(jobs)
            done.start = time.perf_counter() - share  # its share of the batch's time
        status = Status.DIVERGED if result.diverged.any() else Status.OK
        try:
            out[job_dir] = finish(cfg, job_dir, done, result, status)
        except Exception as err:
            failed(cfg, job_dir, err)
            if alone:
                raise
        checkpoints.remove(job_dir)  # finished: never run again
    return [out[d] for d in run_dirs]


def failed(cfg: Config, run_dir: Path, err: Exception) -> None:
    """Record ``err`` as the job's end (metrics.json ``status: failed``)."""
    with faults.logged("the failure could not be recorded in metrics.json"):
        faults.record_failure(run_dir, err, flat(cfg))


def save_all(jobs: Sequence[tuple[Config, Path, Progress]], stop: faults.Interrupted) -> None:
    """Save every job as far as it got (``save_interrupted``), after a stop signal."""
    log.warning("%s: saving the results of the steps so far", stop)
    for cfg, run_dir, done in jobs:
        with faults.logged("the results of the steps so far could not be saved"):
            save_interrupted(cfg, run_dir, done, stop)


def finish(
    cfg: Config, run_dir: Path, progress: Progress, result: attacks.AttackResult, status: str
) -> dict[str, Any]:
    """Score ``result`` against the truth, write every file, return metrics.json."""
    assert progress.case is not None
    images, labels = progress.case.images, progress.case.labels
    wall = time.perf_counter() - progress.start
    scores = score(images, labels, result, lpips_network(cfg))
    if (result.labels < 0).all():  # the attack did not report labels (interrupted)
        scores["label_acc"] = np.full(scores["label_acc"].shape, np.nan)
    summary: dict[str, Any] = {
        "status": status,
        "data_source": progress.facts["data_source"],
        "trials": cfg.trials,
        "trials_diverged": int(result.diverged.sum()),
    }
    for metric in METRICS:
        summary |= uncertainty.per_image_summary(metric.name, scores[metric.name])
    ok = passed(cfg, scores)
    summary |= uncertainty.success(ok)
    summary |= uncertainty.summary("batch_recovered", ok.mean(1))  # per trial's batch
    summary["success_criterion"] = cfg.metrics.criterion
    summary |= uncertainty.summary("grad_loss", result.grad_loss.numpy())
    summary |= {"steps": int(result.steps.max()), "wall_s": wall}
    summary |= result.assumed
    summary |= {"ended": provenance.now(), "run_s": time.perf_counter() - progress.begun}
    summary |= {k: v for k, v in progress.facts.items() if k not in summary}
    # per image: every metric that could be computed (LPIPS may have no weights)
    summary["per_image"] = {k: v.tolist() for k, v in scores.items() if not np.isnan(v).all()}
    summary["per_trial"] = {
        "restart": result.restart.tolist(),  # the winning start of attack.restarts
        "grad_loss": result.grad_loss.tolist(),
        "steps": result.steps.tolist(),
        "diverged": result.diverged.tolist(),
    }
    summary["labels"] = labels.tolist()
    summary["recovered_labels"] = result.labels.tolist()  # in the attack's order
    summary["config"] = flat(cfg)
    log.info(
        "done: status %s  psnr %.2f dB  ssim %.3f  label_acc %.2f  %.1f s",
        summary["status"], summary["psnr"], summary["ssim"], summary["label_acc"], wall,
    )  # fmt: skip
    ordered = torch.stack([result.images[t].cpu()[scores["order"][t]] for t in range(cfg.trials)])
    write(run_dir, summary, pd.DataFrame(progress.rows), progress.snapshots, images, ordered)
    return summary


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
    title = report.run_title(summary)  # says so when bundled photos stood in for the data
    artifacts.write_csv(run_dir / "history.csv", history)
    artifacts.save_figure(run_dir / "progress.png", figures.progress(snapshots))
    artifacts.save_figure(
        run_dir / "reconstruction.png", figures.reconstruction(truth, recon, title)
    )
    artifacts.save_figure(run_dir / "loss.png", figures.loss(history))
    artifacts.write_images(run_dir / "images.npz", truth, recon.clamp(0, 1))
    artifacts.write_json(run_dir / "metrics.json", summary)


def save_interrupted(
    cfg: Config, run_dir: Path, progress: Progress, stop: faults.Interrupted
) -> dict[str, Any]:
    """Write the run as far as it got, ``status: interrupted``: scored on the last snapshot
    when the attack had reported one (labels are not reported, so label_acc is NaN), else
    metrics.json alone with the config, the signal and ``steps: 0``."""
    progress.facts["signal"] = stop.signal_name
    if not progress.snapshots or progress.losses is None:
        record = {"status": Status.INTERRUPTED, "steps": 0, **progress.facts, "config": flat(cfg)}
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
        restart=torch.zeros(trials, dtype=torch.long),
    )
    return finish(cfg, run_dir, progress, partial, Status.INTERRUPTED)
