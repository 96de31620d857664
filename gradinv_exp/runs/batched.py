"""``hydra/launcher=batched``: the jobs of a sweep planned into batches, each attacked as
one problem set, on forked workers.

This module only launches: it plans the sweep's jobs into units (a batch, or a job
alone), runs the units on workers and keeps the per-job rules of the basic launcher. A
batch runs the pipeline's steps (``runs.job.run_batch`` -> ``experiment.run_batch``: each
job's case, one attack call of all of them, each job's score and files); the engine
solves its jobs as one problem set in which every row has its own target, its own
weights and start (each job's seed) and, for an adaptive job, its own defense model
(``attacks/engine.py``). Jobs whose configs agree on everything but ``APART`` (the
defense, the seed, the data's index, scoring, tracking, the sweep's tags) and the
attack's own ``apart`` fields (the engine's ``adaptive``) share a batch, naive and
adaptive attackers and every defense together; each job is scored and written into its
own folder (metrics.json, images, history, ``.hydra/``) as if it had run alone.

Per job, as under the basic launcher: a finished job is skipped; a job with a checkpoint
(interrupted earlier under another launcher) runs alone and resumes from it; a stop signal
saves every job of the running batch as ``interrupted`` (a batch keeps no checkpoint:
rerun, those jobs start again); an error records every job of the batch as ``failed``.
A batch larger than ``max_problems`` rows (0: no cap) is split. Jobs that share a batch
with no other job run through the normal job path.

The batches and the jobs alone are the sweep's units of work; ``workers`` processes forked
from this one run them at once (``runs/pool.py``), the largest batch split in two while
there are fewer units than workers (``spread``). A worker that dies loses its unit only
(``lost``). Jobs on an accelerator run in this process. With ``cluster`` set, each unit
is a job on a cluster instead (``runs/cluster.py``: SLURM through submitit).
"""

from __future__ import annotations

import logging
import math
import resource
import sys
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from gradinv_exp import config
from gradinv_exp.analysis.metric_table import PRIMARY
from gradinv_exp.base.options import ConfigError
from gradinv_exp.runs import cluster, faults, folder, pool, preflight, resume
from gradinv_exp.runs import job as runs_job
from gradinv_exp.runs.workers import started_since

log = logging.getLogger(__name__)

# the config keys in which the jobs of one batch may differ: each row of the engine has its
# own target (defense), weights and start (seed), truth (dataset.index), scoring and logging
APART = ("defense.", "tags.", "seed", "dataset.index", "metrics.", "tracking.")


def peak_rss_mb() -> float:
    """This process's peak resident memory in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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
            faults.record_death(j.run_dir, {} if j.typed is None else folder.flat(j.typed))
        print(f"gradinv-exp: job {j.idx} failed: {faults.DIED}", file=sys.stderr)
    return JobReturn(status=JobStatus.COMPLETED, _return_value=math.nan)


@dataclass
class Job:
    """One planned job of the sweep: its overrides, folder and, when it is to run, its
    typed config and batch key."""

    idx: int
    overrides: list[str]
    run_dir: Path
    typed: Any = None  # config.Config; None: finished, holding a checkpoint, or unreadable
    key: str | None = None  # None: runs alone
    problems: int = 1  # trials x restarts
    device: str = "cpu"  # the device type its attack runs on


class BatchedLauncher(Launcher):
    """Runs the sweep's units in this process or on forked workers; see the module
    docstring. Its settings and their defaults: conf/hydra/launcher/batched.yaml."""

    def __init__(
        self,
        max_problems: int,
        workers: int,
        cluster: str | None = None,
        submitit: dict[str, Any] | None = None,
    ) -> None:
        preflight.check_batched(max_problems, workers, cluster)
        self.max_problems, self.workers, self.cluster = max_problems, workers, cluster
        settings = OmegaConf.to_container(submitit) if OmegaConf.is_config(submitit) else submitit
        self.submitit: dict[str, Any] = dict(settings or {})
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None
        self.composer = preflight.Composer(self.task)

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
        workers = 1 if accelerated and self.cluster is None else self.workers
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
        since = time.time() - 1.0  # file times come from a coarser clock
        largest_first = sorted(units, key=lambda u: -sum(j.problems for j in u))
        if self.cluster is not None:
            folder = Path(str(self.config.hydra.sweep.dir)) / ".submitit"
            for done in cluster.run_all(
                largest_first, self.unit, cluster=self.cluster, folder=folder,
                settings=self.submitit, lost=lambda u: {j.idx: lost(j, since) for j in u},
            ):  # fmt: skip
                returns |= done
        elif workers > 1 and len(units) > 1:
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
        """Job ``idx``: its folder and, unless it finished or holds a checkpoint (it then
        runs alone), its typed config and batch key (None: it runs alone). Composed with
        the defaults of its choices made once (``preflight.Composer``); Hydra composes the
        job whole only when it runs (``sweep_config``)."""
        assert self.config is not None
        log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
        sweep = Path(str(self.config.hydra.sweep.dir))
        subdir = OmegaConf.to_container(self.config.hydra.sweep, resolve=False).get("subdir")
        run_dir = sweep / str(idx) if subdir == preflight.JOB_NUM else None
        if run_dir is None:  # another subdir: resolved with the job's own config
            run_dir = sweep / str(self.sweep_config(idx, overrides).hydra.sweep.subdir)
        job = Job(idx, list(overrides), run_dir)
        from gradinv_exp import experiment  # torch: not when Hydra scans its plugins
        from gradinv_exp.runs import checkpoints

        if resume.finished(run_dir) or (run_dir / checkpoints.NAME).exists():
            return job
        try:
            job.typed = config.to_config(self.composer(overrides))
        except Exception:  # the normal job path reports it
            return job
        job.device = experiment.device_of(job.typed.device).type
        job.key = batch_key(job.typed)
        job.problems = job.typed.trials * experiment.attack_entry(job.typed).restarts(
            job.typed.attack
        )
        return job

    def task(self, overrides: list[str]) -> DictConfig:
        """The task config of ``overrides`` (no ``hydra`` node), as the sweep composes it."""
        assert self.config is not None and self.hydra_context is not None
        return folder.task(preflight.sweep_job(self.config, self.hydra_context, overrides))

    def sweep_config(self, idx: int, overrides: Sequence[str]) -> DictConfig:
        """Job ``idx`` composed whole by Hydra (its ``hydra`` node included), as Hydra's
        launchers hand a job to ``run_job``."""
        assert self.config is not None and self.hydra_context is not None
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(cfg):
            cfg.hydra.job.id = idx
            cfg.hydra.job.num = idx
        return cfg

    def alone(self, j: Job) -> JobReturn:
        """The normal job path (Hydra's task function), as the basic launcher runs it."""
        assert self.config is not None and self.hydra_context is not None
        assert self.task_function is not None
        previous = resume.finished_run(j.run_dir)
        if previous is not None:  # finished before: not run again, not even composed
            return JobReturn(status=JobStatus.COMPLETED, _return_value=previous[PRIMARY])
        ret = run_job(
            hydra_context=self.hydra_context,
            task_function=self.task_function,
            config=self.sweep_config(j.idx, j.overrides),
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return ret

    def together(self, batch: list[Job]) -> dict[int, JobReturn]:
        """Run ``batch`` as one attack (``runs.job.run_batch``); every member's JobReturn
        (its PSNR, NaN if it failed)."""
        assert self.config is not None and self.hydra_context is not None
        returns: dict[int, JobReturn] = {}
        members: list[Member] = []
        start = time.perf_counter()
        with ExitStack() as held:
            for j in batch:

                def prepare(cfg: DictConfig, j: Job = j) -> float:
                    return enter(held, cfg, j, members)

                returns[j.idx] = run_job(
                    hydra_context=self.hydra_context,
                    task_function=prepare,
                    config=self.sweep_config(j.idx, j.overrides),
                    job_dir_key="hydra.sweep.dir",
                    job_subdir_key="hydra.sweep.subdir",
                )
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
            if members:
                psnrs = runs_job.run_batch(
                    [m.typed for m in members], [m.job.run_dir for m in members]
                )
                for m, psnr in zip(members, psnrs):
                    returns[m.job.idx].return_value = psnr
        log.info(
            "batched launcher: %d job(s) as one attack of %d problems in %.1f s, peak RSS %.0f MiB",
            len(members), sum(m.job.problems for m in members), time.perf_counter() - start,
            peak_rss_mb(),
        )  # fmt: skip
        return returns


def enter(held: ExitStack, cfg: DictConfig, j: Job, members: list[Member]) -> float:
    """A batch member's start, inside Hydra's ``run_job`` (its folder and ``.hydra`` files
    made): skip it if finished, else hold its lock for the batch (``runs.job.started``, as
    every job starts) and add its typed config to ``members``. Returns its PSNR when it
    finished before, NaN while it is still to run or when its config failed (its
    metrics.json says so)."""
    previous = held.enter_context(runs_job.started(j.run_dir))
    if previous is not None:
        return previous[PRIMARY]
    try:
        members.append(Member(j, runs_job.typed(cfg, j.run_dir)))
    except ConfigError as err:
        print(f"gradinv-exp: job {j.idx} failed: {err}", file=sys.stderr)
    return math.nan


@dataclass
class Member:
    """A batch member ready to run: its planned job and its typed config."""

    job: Job
    typed: Any  # config.Config


def batch_key(typed: Any) -> str | None:
    """What a job must share with the others of its batch (None: it runs alone): every
    config value but the ones each row of the engine holds for itself (``APART``: the
    defense, the seed, the data's index, scoring and tracking settings, the sweep's
    tags) and the attack fields its family lets differ (``Attack.apart``: the optimisation
    engine's ``adaptive``). Only attacks that gain from sharing a call batch
    (``Attack.batchable``)."""
    from gradinv_exp.attacks import ATTACKS

    entry = ATTACKS[typed.attack.family]
    if not entry.batchable(typed.attack):
        return None
    apart = (*APART, *(f"attack.{name}" for name in entry.apart))
    shared = sorted((k, repr(v)) for k, v in folder.flat(typed).items() if not k.startswith(apart))
    return repr(shared)
