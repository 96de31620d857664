"""``hydra/launcher=batched``: the jobs of a sweep that differ only in their defense solved
as one batched attack.

The engine already runs N = trials x restarts problems in lockstep as one computation
(``attacks/engine.py``). Jobs whose configs agree on everything but ``defense.*`` and
``tags.*`` (model, data, client, attack, optimiser, seed, trials ...) attack the same
images through the same model(s) from the same start; only the target update differs.
This launcher appends those jobs to the problem axis: rows are restart-major over
(job, trial), row ``r * J*T + j * T + t``. Each job draws its start from its own
``generator(seed, "attack")`` exactly as alone, its target is its own defense's share,
and its snapshots and result are its rows, so it is scored and written into its own
folder (metrics.json, images, history, ``.hydra/``) as if it had run alone.

Per job, as under the basic launcher: a finished job is skipped; a job with a checkpoint
(interrupted earlier under another launcher) runs alone and resumes from it; a stop signal
saves every job of the running batch as ``interrupted`` (a batch keeps no checkpoint:
rerun, those jobs start again); an error records every job of the batch as ``failed``.
A batch larger than ``max_problems`` rows (0: no cap) is split. Jobs that share a batch
with no other job run through the normal job path.

The batches and the jobs alone are the sweep's units of work; ``workers`` processes forked
from this one run them at once (``runs/pool.py``), the largest batch split in two while
there are fewer units than workers (``spread``). A worker that dies loses its unit only
(``lost``). Jobs on an accelerator run in this process.
"""

from __future__ import annotations

import copy
import logging
import math
import resource
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from gradinv_exp import config, tracking
from gradinv_exp.options import require
from gradinv_exp.runs import display, faults, pool, resume
from gradinv_exp.runs import job as runs_job
from gradinv_exp.runs.workers import started_since

log = logging.getLogger(__name__)

APART = ("defense.", "tags.")  # the config keys in which jobs of one batch may differ


def peak_rss_mb() -> float:
    """This process's peak resident memory in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def check(max_problems: Any, workers: Any) -> None:
    """The launcher's settings (``conf/hydra/launcher/batched.yaml``, any type as they come
    from a command line): ConfigError naming the bad one. The command line checks them
    before any job (``preflight.plan``)."""
    for key, value, least, allowed in (
        ("max_problems", max_problems, 0, "an integer >= 0 (0 = no cap)"),
        ("workers", workers, 1, "an integer >= 1 (1 = in this process)"),
    ):
        whole = isinstance(value, int) and not isinstance(value, bool)
        require(whole and value >= least, f"hydra.launcher.{key}", value, allowed)


def batch_key(flat: dict[str, Any]) -> str:
    """What a job must share with the others of its batch: every config value but the
    defense's (and the sweep's tags)."""
    return repr(sorted((k, repr(v)) for k, v in flat.items() if not k.startswith(APART)))


def chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def plan_units(jobs: list[Job], max_problems: int, workers: int) -> list[list[Job]]:
    """The sweep's units of work: each job that shares a batch with no other, in job
    order, then the batches: jobs with one ``batch_key``, at most ``max_problems`` rows
    (0: no cap) each, ``spread`` over ``workers``."""
    groups: dict[str, list[Job]] = {}
    for j in jobs:
        if j.key is not None:
            groups.setdefault(j.key, []).append(j)
    batches: list[list[Job]] = []
    for members in groups.values():
        per = max(1, max_problems // members[0].problems) if max_problems else len(members)
        batches += [b for b in chunks(members, per) if len(b) > 1]
    batched = {j.idx for b in batches for j in b}
    return spread([[j] for j in jobs if j.idx not in batched] + batches, workers)


def spread(units: list[list[Job]], workers: int) -> list[list[Job]]:
    """The sweep's units (batches, jobs alone) with the batch of most problems split in
    two halves until there are ``workers`` units or no batch is left to split, so that
    every worker has a unit. A fixed rule of the config (the job list and ``workers``),
    not of the machine: the same command always forms the same batches."""
    units = list(units)
    while len(units) < workers:
        splittable = [u for u in units if len(u) > 1]
        if not splittable:
            break
        big = max(splittable, key=lambda u: sum(j.problems for j in u))
        at, half = units.index(big), (len(big) + 1) // 2
        units[at : at + 1] = [big[:half], big[half:]]
    return units


def lost(j: Job, since: float) -> JobReturn:
    """The return of a job whose worker process died (or raised) while running its unit:
    a job that started (Hydra wrote its ``.hydra`` files at or after ``since``) and left
    no metrics.json is recorded as failed (``faults.DIED``); one that never started stays
    without a record (the sweep's summary lists it as never started)."""
    metrics = j.run_dir / "metrics.json"
    if started_since(j.run_dir, since) and (
        not metrics.exists()
        or metrics.stat().st_mtime < (j.run_dir / ".hydra" / "overrides.yaml").stat().st_mtime
    ):
        with faults.logged("the death could not be recorded in metrics.json"):
            faults.record_death(j.run_dir, config.flat(task_config(j.sweep_config)))
        print(f"gradinv-exp: job {j.idx} failed: {faults.DIED}", file=sys.stderr)
    return JobReturn(status=JobStatus.COMPLETED, _return_value=math.nan)


@dataclass
class Job:
    """One planned job of the sweep: its composed config (hydra node included) and folder."""

    idx: int
    sweep_config: DictConfig
    run_dir: Path
    key: str | None  # None: runs alone
    problems: int  # trials x restarts
    device: str = "cpu"  # the device type its attack runs on


@dataclass
class Prepared:
    """A batch member after its steps up to the attack (``experiment.prepare``)."""

    job: Job
    ret: JobReturn
    typed: Any  # experiment's Config
    progress: Any  # experiment.Progress
    server: Any  # server.Server: the model(s) sent, the same for every member
    observed: Any  # attacks.Observed: what the server sees of this member


class BatchedLauncher(Launcher):
    """Runs the sweep's units in this process or on forked workers; see the module
    docstring. Its settings and their defaults: conf/hydra/launcher/batched.yaml."""

    def __init__(self, max_problems: int, workers: int) -> None:
        check(max_problems, workers)
        self.max_problems, self.workers = max_problems, workers
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config, self.task_function, self.hydra_context = config, task_function, hydra_context

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        assert self.config is not None and self.hydra_context is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        jobs = [self.plan(initial_job_idx + i, o) for i, o in enumerate(job_overrides)]
        accelerated = sorted({j.device for j in jobs} - {"cpu"})
        workers = 1 if accelerated else self.workers
        if workers < self.workers:
            log.info(
                "batched launcher: jobs on %s run in this process, not on %d workers (a "
                "forked process cannot use a device its parent may have initialised)",
                accelerated[0], self.workers,
            )  # fmt: skip
        units = plan_units(jobs, self.max_problems, workers)
        together = [u for u in units if len(u) > 1]
        log.info(
            "batched launcher: %d jobs, %d in %d batch(es), %d alone%s",
            len(jobs), sum(map(len, together)), len(together), len(units) - len(together),
            f", {min(workers, len(units))} workers" if workers > 1 else "",
        )  # fmt: skip
        returns: dict[int, JobReturn] = {}
        if workers > 1 and len(units) > 1:
            since = time.time() - 1.0  # file times come from a coarser clock
            largest_first = sorted(units, key=lambda u: -sum(j.problems for j in u))
            for done in pool.run_all(
                largest_first, self.unit, workers=workers,
                lost=lambda u: {j.idx: lost(j, since) for j in u},
            ):  # fmt: skip
                returns |= done
        else:
            for unit in units:
                returns |= self.unit(unit)
        return [returns[j.idx] for j in jobs]

    def unit(self, jobs: list[Job]) -> dict[int, JobReturn]:
        """Run one unit of the sweep: a batch, or a job alone (the normal job path)."""
        if len(jobs) == 1:
            return {jobs[0].idx: self.alone(jobs[0])}
        return self.together(jobs)

    def plan(self, idx: int, overrides: Sequence[str]) -> Job:
        """Compose job ``idx``; its batch key, None when it must run alone (finished,
        holding a checkpoint, or its config cannot be read here)."""
        assert self.config is not None and self.hydra_context is not None
        log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
        sweep_config = self.hydra_context.config_loader.load_sweep_config(
            self.config, list(overrides)
        )
        with open_dict(sweep_config):
            sweep_config.hydra.job.id = idx
            sweep_config.hydra.job.num = idx
        HydraConfig.instance().set_config(sweep_config)
        run_dir = Path(str(sweep_config.hydra.sweep.dir)) / str(sweep_config.hydra.sweep.subdir)
        key, problems, device = None, 1, "cpu"
        from gradinv_exp import experiment  # torch: not when Hydra scans its plugins
        from gradinv_exp.runs import checkpoints

        if not (resume.finished(run_dir) or (run_dir / checkpoints.NAME).exists()):
            try:
                typed = experiment.to_config(task_config(sweep_config))
            except Exception:  # the normal job path reports it
                typed = None
            if typed is not None:
                device = experiment.device_of(typed.device).type
            if typed is not None and batchable(typed):
                key = batch_key(config.flat(typed))
                problems = typed.trials * typed.attack.restarts
        return Job(idx, sweep_config, run_dir, key, problems, device)

    def alone(self, j: Job) -> JobReturn:
        """The normal job path (Hydra's task function), as the basic launcher runs it."""
        assert self.config is not None and self.hydra_context is not None
        assert self.task_function is not None
        ret = run_job(
            hydra_context=self.hydra_context,
            task_function=self.task_function,
            config=j.sweep_config,
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return ret

    def together(self, batch: list[Job]) -> dict[int, JobReturn]:
        """Run ``batch`` as one attack; every member's JobReturn (its PSNR, NaN if it failed)."""

        assert self.config is not None and self.hydra_context is not None
        returns: dict[int, JobReturn] = {}
        ready: list[Prepared] = []
        start = time.perf_counter()
        with ExitStack() as held:
            for j in batch:
                box: dict[str, Any] = {}

                def prepare(cfg: DictConfig, j: Job = j, box: dict[str, Any] = box) -> float:
                    return enter(held, cfg, j.run_dir, box)

                ret = run_job(
                    hydra_context=self.hydra_context,
                    task_function=prepare,
                    config=j.sweep_config,
                    job_dir_key="hydra.sweep.dir",
                    job_subdir_key="hydra.sweep.subdir",
                )
                returns[j.idx] = ret
                if "prepared" in box:
                    ready.append(Prepared(j, ret, **box["prepared"]))
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
            if ready:
                for p, psnr in zip(ready, run_batch(ready)):
                    p.ret.return_value = psnr
        log.info(
            "batched launcher: %d job(s) as one attack of %d problems in %.1f s, peak RSS %.0f MiB",
            len(ready), sum(p.job.problems for p in ready), time.perf_counter() - start,
            peak_rss_mb(),
        )  # fmt: skip
        return returns


def task_config(sweep_config: DictConfig) -> DictConfig:
    """The job's own config (Hydra's node removed), as the task function gets it."""
    cfg = copy.deepcopy(sweep_config)
    with open_dict(cfg):
        del cfg["hydra"]
    OmegaConf.set_readonly(cfg, False)
    return cfg


def enter(held: ExitStack, cfg: DictConfig, run_dir: Path, box: dict[str, Any]) -> float:
    """A batch member's start, inside Hydra's ``run_job`` (its folder and ``.hydra`` files
    made): skip it if finished, else hold its lock for the batch (``runs.job.started``, as
    every job starts) and prepare it (into ``box``). Returns its PSNR when it finished
    before, NaN while it is still to run or when it failed (its metrics.json says so)."""
    from gradinv_exp import experiment

    previous = held.enter_context(runs_job.started(run_dir))
    if previous is not None:
        return previous["psnr"]
    try:
        typed = experiment.to_config(cfg)
        box["prepared"] = prepare(typed)
    except Exception as err:
        with faults.logged("the failure could not be recorded in metrics.json"):
            faults.record_failure(run_dir, err, config.flat(cfg))
        print(f"gradinv-exp: job {run_dir.name} failed: {faults.error_line(err)}", file=sys.stderr)
    return math.nan


def batchable(cfg: Any) -> bool:
    """Whether a job can share a batch with jobs that differ in their defense: its attack
    family says so (``Attack.batchable``: the optimisation engine, whose objective is the
    same function of each job's own target, unless it runs the job's own defense inside
    it). Any other job runs alone; see docs/batched_sweeps.md."""
    from gradinv_exp.attacks import ATTACKS

    return ATTACKS[cfg.attack.family].batchable(cfg.attack)


def prepare(cfg: Any) -> dict[str, Any]:
    """The steps of ``experiment.attack_run`` up to the attack, for one batch member: its
    data, model(s), and the share its own defense lets through (``Prepared``'s fields)."""
    import torch

    from gradinv_exp import defenses, experiment
    from gradinv_exp.runs import provenance

    torch.set_num_threads(cfg.threads)
    device = experiment.device_of(cfg.device)
    progress = experiment.Progress()
    progress.facts |= provenance.started(device)
    images, labels, source = experiment.load_data(cfg)
    progress.images, progress.labels = images, labels
    progress.facts["data_source"] = source
    log.info(
        "batch member: data %s | model %s | defense %s | attack %s/%s | device %s",
        source, cfg.model.name, cfg.defense, cfg.attack.name, cfg.optimizer.name, device,
    )  # fmt: skip
    nets, sent = experiment.send(cfg, experiment.build_models(cfg, device))
    true, shared = experiment.share(cfg, nets, images, labels)
    progress.facts |= defenses.cost(true, shared)
    progress.facts |= defenses.report(cfg.defense)
    progress.facts |= experiment.threat_model(cfg)
    progress.facts["adaptive"] = False  # adaptive attacks never join a batch
    observed = experiment.observe(cfg, shared, labels)
    return {"typed": cfg, "progress": progress, "server": sent, "observed": observed}


def run_batch(batch: list[Prepared]) -> list[float]:
    """Attack every member's share in one engine run, then score and write each member
    into its own folder. Returns each member's PSNR (NaN for one that failed to be
    written). A stop signal saves every member as interrupted and goes on to the caller;
    an error in the attack records every member as failed."""
    from gradinv_exp import experiment

    first = batch[0].typed
    device = experiment.device_of(first.device)
    # the rules of attack_backend for the batch's rows: eager, one problem alone takes
    # native convolution, a batch oneDNN (vmap over native convolutions is slow)
    backend = experiment.attack_backend(first, device, jobs=len(batch))
    for p in batch:
        p.progress.facts |= {"compile": backend.compile, "conv_backend": backend.conv}
        p.progress.start = time.perf_counter()
    try:
        results = attack_jobs(
            batch[0].server,
            [p.observed for p in batch],
            cfg=first.attack,
            optimizer=first.optimizer,
            generators=[experiment.generator(p.typed.seed, "attack") for p in batch],
            on_snapshots=[  # many jobs at once: log lines, not one bar each
                experiment.recorder(p.typed, p.progress.images, p.progress, display.LINES)
                for p in batch
            ],
            backend=backend,
        )
    except faults.Interrupted as stop:
        log.warning("%s: saving the results of the steps so far", stop)
        for p in batch:
            with faults.logged("the results of the steps so far could not be saved"):
                experiment.save_interrupted(p.typed, p.job.run_dir, p.progress, stop)
        raise
    except Exception as err:
        for p in batch:
            with faults.logged("the failure could not be recorded in metrics.json"):
                faults.record_failure(p.job.run_dir, err, config.flat(p.typed))
        print(f"gradinv-exp: batch of {len(batch)} job(s) failed: {faults.error_line(err)}",
              file=sys.stderr)  # fmt: skip
        return [math.nan] * len(batch)
    wall = (time.perf_counter() - batch[0].progress.start) / len(batch)
    psnrs = []
    for p, result in zip(batch, results):
        p.progress.facts |= {"compile": result.compiled, "compile_s": result.compile_s}
        p.progress.facts["batched_jobs"] = len(batch)
        p.progress.start = time.perf_counter() - wall  # its share of the batch's time
        status = "diverged" if result.diverged.any() else "ok"
        try:
            psnrs.append(
                experiment.finish(p.typed, p.job.run_dir, p.progress, result, status)["psnr"]
            )
            tracking.log_run(p.typed.tracking, p.job.run_dir)  # as runs.job.run does
        except Exception as err:
            with faults.logged("the failure could not be recorded in metrics.json"):
                faults.record_failure(p.job.run_dir, err, config.flat(p.typed))
            psnrs.append(math.nan)
    return psnrs


def attack_jobs(
    server: Any,
    observed: list[Any],
    *,
    cfg: Any,
    optimizer: Any,
    generators: list[Any],
    on_snapshots: list[Callable[[int, Any, Any], None]],
    backend: Any,
) -> list[Any]:
    """The optimisation family's ``reconstruct`` for J jobs at once: job j attacks what
    ``observed[j]`` holds (its update, one ``(T, *param.shape)`` tensor per parameter, and
    what its threat model grants) on the model ``server`` sent to every job, from the
    start its own ``generators[j]`` draws, as it would alone; every job's reconstruction
    has the same shape (T, B, C, H, W).

    The rows are restart-major over (job, trial): row ``r * J*T + j * T + t``, so the
    engine sees J*T trials; per-trial weights (``simulator.params``, T rows) repeat J
    times. Returns one ``AttackResult`` ``(T, ...)`` per job."""
    import dataclasses

    import torch

    from gradinv_exp import client
    from gradinv_exp.attacks import engine
    from gradinv_exp.attacks.backend import convolution
    from gradinv_exp.attacks.labels import LABELS, Evidence

    backend = engine.eager_if_needed(backend, cfg)
    first = observed[0]
    shape, num_classes = first.shape, first.num_classes
    simulator = client.Simulator(server.model, first.protocol, server.params, clients=first.clients)
    jobs, trials, restarts = len(observed), shape[0], cfg.restarts
    device = first.update[0].device
    mode = LABELS[cfg.labels]
    x0s, y0s = [], []
    for seen, gen in zip(observed, generators):
        x0s.append(torch.randn((restarts * trials, *shape[1:]), generator=gen))
        gradient = simulator.as_gradient(list(seen.update))
        evidence = Evidence(
            simulator.model, gradient, shape[1], num_classes, seen.labels, gen, shape[2:]
        )
        y0s.append(mode.start(evidence, restarts))

    def rows(parts: list[Any]) -> Any:  # J x (R*T, ...) -> (R*J*T, ...), restart-major
        stacked = torch.stack([p.view(restarts, trials, *p.shape[1:]) for p in parts], 1)
        return stacked.reshape(restarts * jobs * trials, *parts[0].shape[1:])

    x0, y0 = rows(x0s).to(device), rows([y.to(device) for y in y0s])
    shared = [torch.cat(p) for p in zip(*(seen.update for seen in observed))]  # (J*T, ...)
    if simulator.params is not None:
        simulator = dataclasses.replace(
            simulator, params={k: torch.cat([v] * jobs) for k, v in simulator.params.items()}
        )
    timings: dict[str, float] = {}
    problem = engine.build_problem(
        simulator, shared, x0, y0, cfg, optimizer, optimised=mode.optimised,
        compiled=backend.compile, timings=timings,
    )  # fmt: skip

    def split(step: int, losses: Any, images: Any) -> None:
        for j, report in enumerate(on_snapshots):
            part = slice(j * trials, (j + 1) * trials)
            report(step, losses[part], images[part])

    with convolution(backend.conv):
        result = engine.optimise(problem, cfg, engine.best_of_restarts(restarts, split))
    best = engine.select(result, engine.best_restart(result.grad_loss, restarts))
    compiled = backend.compile and not timings.get("compile_failed")
    out = []
    for j in range(jobs):
        part = slice(j * trials, (j + 1) * trials)
        out.append(
            engine.AttackResult(
                images=best.images[part],
                labels=best.labels[part],
                grad_loss=best.grad_loss[part],
                steps=best.steps[part],
                diverged=best.diverged[part],
                restart=best.restart[part],
                compiled=compiled,
                compile_s=timings.get("compile_s", 0.0),
            )
        )
    return out
