"""The batched launcher's units on a cluster: one submitit job per unit (a batch of jobs,
or one job alone) instead of a forked local worker (``hydra.launcher.cluster``).

``hydra/launcher=slurm`` (Hydra's submitit plugin) sends one cluster job per sweep job,
so nothing is batched there. Here the command line plans the batches as for local workers
(``runs/batched.py``) and submits each unit as one job of a submitit job array
(``cluster=slurm``; ``cluster=local`` runs them as local processes through submitit's
local executor, which is how the tests exercise this path). The launcher itself is
pickled into each job, as Hydra's submitit plugin does, with Hydra's global state, so a
unit runs exactly as it would on a local worker.

The per-job rules hold as on local workers:

- **A stop signal** to a unit's process (SLURM's SIGTERM at ``scancel``, a preemption)
  saves the jobs of its running batch as interrupted; submitit's time-limit signal
  requeues the unit (``Remote.checkpoint``), whose rerun skips the jobs that finished.
  A stop signal to the command line ends its wait; the cluster's jobs go on.
- **A unit that dies** (out of memory, a node failure) loses only its own jobs: the
  command line gets ``lost(unit)`` for it (the launcher records its jobs that started and
  left no record as failed).
- **Finished jobs are skipped** by a rerun of the same command, as always.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from gradinv_exp.runs import faults

log = logging.getLogger(__name__)

Unit = TypeVar("Unit")
Result = TypeVar("Result")
CLUSTERS = ("slurm", "local")  # submitit's executors (local: processes on this machine)


@dataclass
class Remote:
    """What a cluster job runs: ``run(unit)`` in a process with Hydra's global state
    (``singletons``) restored and the job processes' stop handling installed."""

    run: Callable[[Any], Any]
    singletons: dict[Any, Any]

    def __call__(self, unit: Any) -> Any:
        from hydra.core.singleton import Singleton
        from hydra.core.utils import setup_globals

        Singleton.set_state(self.singletons)
        setup_globals()
        stop = faults.job_process()
        with stop.acting(faults.Action.RAISE):
            return self.run(unit)

    def checkpoint(self, unit: Any) -> Any:
        """Submitit's time-limit hook: submit the unit again (its finished jobs are
        skipped, the others run again from their start)."""
        import submitit

        return submitit.helpers.DelayedSubmission(self, unit)


def run_all(
    units: Sequence[Unit],
    run: Callable[[Unit], Result],
    *,
    cluster: str,
    folder: Path,
    settings: dict[str, Any],
    lost: Callable[[Unit], Result],
) -> list[Result]:
    """``[run(u) for u in units]``, each unit one job of a submitit job array on
    ``cluster`` (its logs in ``folder``; ``settings``: submitit's parameters, e.g.
    ``timeout_min``, ``slurm_partition``); a unit whose job failed gets ``lost(unit)``."""
    import submitit
    from hydra.core.singleton import Singleton

    executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
    executor.update_parameters(**settings)
    jobs = executor.map_array(Remote(run, Singleton.get_state()), list(units))
    log.info("batched launcher: %d unit(s) submitted to %s (logs: %s)", len(jobs), cluster, folder)
    results = []
    for unit, job in zip(units, jobs, strict=True):
        try:
            results.append(job.result())
        except (submitit.core.utils.FailedJobError, submitit.core.utils.UncompletedJobError) as err:
            log.error("cluster job %s ended without its results: %s", job.job_id, first_line(err))
            results.append(lost(unit))
    return results


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
