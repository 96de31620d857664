"""Forked worker processes for the batched launcher (``hydra.launcher.workers``).

A sweep's units of work (a batch of jobs, or one job alone) are independent, and each
runs on one core (``threads=1``), so on a machine with C cores C of them can run at
once. The workers are forked from the command line's process after it has imported
torch and checked every job: a worker starts in milliseconds, with every module already
loaded, where a fresh interpreter (loky, spawn) spends seconds importing torch again.

The command line hands out the units one at a time, largest first, over one pipe per
worker, and gets back each unit's result. What the command line's contract asks of a
sweep holds per worker:

- **A stop signal** (Ctrl-C, SIGTERM) to the command line is forwarded to the workers
  (``faults.Action.FORWARD``): each saves the unit it is running as interrupted and
  ends; no further unit starts; ``run_all`` then raises ``faults.Interrupted``.
- **A worker that dies** (SIGKILL, the out-of-memory killer) loses only the unit it was
  running: ``lost(unit)`` gives that unit's result (the launcher records the jobs that
  left no record as failed), a new worker is forked for the units still to run.
- **An error** that a unit's own code did not catch is logged and handled as a loss.

Forking needs the ``fork`` start method (Linux, macOS) and a parent that has not
initialised CUDA: the command line never runs a job itself, so it has not.
``concurrent.futures.ProcessPoolExecutor`` is not used: one dead worker breaks its whole
pool there, failing every unit still queued.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import sys
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any, TypeVar

from gradinv_exp.runs import faults

log = logging.getLogger(__name__)

Unit = TypeVar("Unit")
Result = TypeVar("Result")
DONE = None  # sent to a worker: no further unit


@dataclass
class Worker:
    """A forked worker: its process, the command line's end of its pipe, the unit it runs."""

    process: BaseProcess
    conn: Connection
    unit: int | None = None
    told_done: bool = False

    def give(self, index: int | None) -> bool:
        """Send the worker unit ``index`` (``DONE``: none); False if it has ended."""
        try:
            self.conn.send(index)
        except OSError:  # the worker ended meanwhile: its sentinel tells the rest
            self.told_done = True
            return False
        self.unit, self.told_done = index, index is DONE
        return True


def run_all(
    units: Sequence[Unit],
    run: Callable[[Unit], Result],
    *,
    workers: int,
    lost: Callable[[Unit], Result],
) -> list[Result]:
    """``[run(u) for u in units]``, computed by up to ``workers`` forked processes that
    take the units in the order given (put the largest first); a unit whose worker died
    or raised gets ``lost(unit)`` (called here, in the command line's process). Raises
    ``faults.Interrupted`` after a stop signal, once every worker has ended."""
    results: dict[int, Result] = {}
    pending = deque(range(len(units)))
    alive: list[Worker] = []
    stop = signal.getsignal(signal.SIGTERM)
    stop = stop if isinstance(stop, faults.Stop) else None
    with forwarding(stop):
        while True:
            stopped = stop is not None and stop.signum is not None
            idle = sum(w.unit is None and not w.told_done for w in alive)
            while not stopped and len(alive) < workers and idle < len(pending):
                alive.append(fork(units, run))
                idle += 1
            for w in alive:
                if w.unit is None and not w.told_done:
                    if pending and not stopped:
                        index = pending.popleft()
                        if not w.give(index):
                            pending.appendleft(index)
                    else:
                        w.give(DONE)
            if not alive:
                break
            ready = set(wait([o for w in alive for o in (w.conn, w.process.sentinel)]))
            for w in [w for w in alive if ready & {w.conn, w.process.sentinel}]:
                message = receive(w.conn)
                if message is not None:
                    index, value, error = message
                    if error is not None:
                        log.error("unit %d failed in worker %d: %s", index, w.process.pid, error)
                        value = lost(units[index])
                    results[index], w.unit = value, None
                    continue
                w.process.join()  # its pipe closed: it has ended
                w.conn.close()
                alive.remove(w)
                if w.unit is not None:
                    if not stopped:
                        log.error("worker %d ended (exit code %s) while running unit %d",
                                  w.process.pid, w.process.exitcode, w.unit)  # fmt: skip
                    results[w.unit] = lost(units[w.unit])
    if stop is not None and stop.signum is not None:
        raise faults.Interrupted(stop.signum)
    return [results[i] for i in range(len(units))]


@contextmanager
def forwarding(stop: faults.Stop | None) -> Iterator[None]:
    """Within the block a stop signal goes to the workers (they save and end)."""
    if stop is None:
        yield
        return
    with stop.acting(faults.Action.FORWARD):
        yield


def receive(conn: Connection) -> tuple[int, Any, str | None] | None:
    """The worker's next message, or None when it has ended (its pipe closed)."""
    try:
        return conn.recv() if conn.poll() else None
    except (EOFError, OSError):
        return None


def fork(units: Sequence[Unit], run: Callable[[Unit], Result]) -> Worker:
    """Start one worker process, forked: it shares ``units`` and ``run`` with this one."""
    context = multiprocessing.get_context("fork")
    here, there = context.Pipe()
    process = context.Process(target=work, args=(there, units, run))
    process.start()
    there.close()
    return Worker(process, here)


def work(conn: Connection, units: Sequence[Unit], run: Callable[[Unit], Result]) -> None:
    """A worker's life: run each unit index received until ``DONE``, sending back
    ``(index, result, None)`` or ``(index, None, error line)``. Between units a stop signal
    ends the process; during one, the unit saves its jobs as interrupted, then the
    process ends with 128 + the signal's number."""
    stop = faults.job_process(forked=True)
    while (index := conn.recv()) is not DONE:
        try:
            with stop.acting(faults.Action.RAISE):
                value = run(units[index])
        except faults.Interrupted as err:
            sys.stdout.flush()
            sys.stderr.flush()
            sys.exit(err.exit_code)
        except Exception as err:
            conn.send((index, None, faults.error_line(err)))
            continue
        conn.send((index, value, None))
        if stop.signum is not None:  # signalled as the unit ended: start no other
            sys.exit(128 + stop.signum)
