"""The command line and the processes that run its jobs (joblib workers, submitit tasks).

A launcher that runs jobs in child processes needs three things from the command line
that Hydra does not give:

- **Stop them gently.** On Ctrl-C or SIGTERM the command line sends SIGTERM to its child
  processes (``children``, ``terminate``) and waits: each job saves its results as
  interrupted and its process starts no further job (``faults.Stop``).
- **Survive loky's reaction to a dead worker.** When one worker dies (SIGKILL, the
  out-of-memory killer), loky declares the pool broken and SIGKILLs every other worker,
  so their jobs would end without a word. ``gentle_pool_shutdown`` makes that a SIGTERM
  first: the other jobs save as interrupted (keeping their checkpoints).
- **Find the jobs whose process died** (``died``): they started in this round of the
  command, no process runs them (their job lock is free), and they left no record. The
  command line records them as failed and runs the others again.

``children`` reads ``/proc`` (Linux); elsewhere it finds none, and a stop signal stops
the command line at once as it does for in-process jobs.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from gradinv_exp.base.status import Status
from gradinv_exp.runs import locks, resume

log = logging.getLogger(__name__)

GRACE_S = 60.0  # how long a worker of a broken pool may take to save before SIGKILL
SKIP = "GRADINV_EXP_SKIP_JOBS"  # job numbers the command line does not run again


def children() -> list[int]:
    """The ids of this process's live child processes ([] without ``/proc``)."""
    me, found = os.getpid(), []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # ended meanwhile
            continue
        state, ppid = text[text.rindex(")") + 2 :].split()[:2]  # the name may hold ") "
        if int(ppid) == me and state != "Z":
            found.append(int(stat.parent.name))
    return found


def terminate(pids: list[int]) -> None:
    """SIGTERM to each of ``pids`` (those that have ended meanwhile are skipped)."""
    for pid in pids:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)


@contextmanager
def gentle_pool_shutdown(grace: float = GRACE_S) -> Iterator[None]:
    """Within the block, loky stops a worker with SIGTERM, repeated every 0.2 s for up to
    ``grace`` seconds (a job process ignores repeats while it saves and ends on one
    between jobs), before its own SIGKILL.

    loky kills the workers of a broken pool in ``process_executor.kill_process_tree`` and
    offers no hook, so this replaces that function for the block. Without loky (the
    joblib launcher not installed) it does nothing.
    """
    try:
        from joblib.externals.loky import process_executor
    except ImportError:
        yield
        return
    kill = process_executor.kill_process_tree

    def terminate_then_kill(process: Any, use_psutil: bool = True) -> None:
        deadline = time.monotonic() + grace
        while process.is_alive() and time.monotonic() < deadline:
            terminate([process.pid])
            process.join(0.2)
        kill(process, use_psutil=use_psutil)

    process_executor.kill_process_tree = terminate_then_kill
    try:
        yield
    finally:
        process_executor.kill_process_tree = kill


def skipped() -> set[int]:
    """The job numbers that the command line does not run again (``SKIP``)."""
    return {int(n) for n in os.environ.get(SKIP, "").split()}


def skip(jobs: set[int]) -> None:
    """Tell the job processes started from now on not to run ``jobs`` (inherited
    through the environment, by joblib workers and submitit tasks alike)."""
    os.environ[SKIP] = " ".join(str(n) for n in sorted(skipped() | jobs))


def started_since(run_dir: Path, since: float) -> bool:
    """Whether Hydra started a job in ``run_dir`` at or after ``since`` (epoch seconds):
    it writes ``.hydra/overrides.yaml`` when a job starts."""
    path = run_dir / ".hydra" / "overrides.yaml"
    return path.exists() and path.stat().st_mtime >= since


def ended(job_dirs: list[Path], since: float) -> tuple[dict[int, Path], set[int]]:
    """Of the jobs that started at or after ``since`` and no process runs now: those that
    wrote no metrics.json after they started (number -> folder: their process died), and
    the numbers of those that recorded a failure."""
    dead, failed = {}, set()
    for num, run_dir in enumerate(job_dirs):
        if num in skipped() or not started_since(run_dir, since) or locks.running(run_dir):
            continue
        started = (run_dir / ".hydra" / "overrides.yaml").stat().st_mtime
        metrics = run_dir / "metrics.json"
        if not metrics.exists() or metrics.stat().st_mtime < started:
            dead[num] = run_dir
        elif resume.status(run_dir) == Status.FAILED:
            failed.add(num)
    return dead, failed
