"""Faults during a run: stop signals (SIGINT/SIGTERM) and jobs that raise.

Sweeps run overnight on shared machines, so a Ctrl-C, a scheduler's SIGTERM or a crash
in one job must never lose what was computed. A stop signal becomes an ``Interrupted``
exception raised in the main thread of the process running the job, at the next Python
instruction; ``experiment.run`` catches it, writes the artifacts of the steps so far
with ``status: interrupted`` and re-raises (its checkpoint, if any, stays for the next
attempt), and the command line exits with 128 + the signal number (130 SIGINT, 143
SIGTERM). Nothing inside the attack loop takes part: the attack is stopped wherever it
is, and the snapshots it already reported are what gets saved.

Each process has one ``Stop``, its handler of both signals, which also remembers the
first signal. What that signal does depends on where the process is (``Action``): raise
in a running job; in the command line while a launcher runs the jobs in child processes,
forward SIGTERM to them and wait for them to save; in a job process between jobs, end.
"""

from __future__ import annotations

import enum
import logging
import os
import signal
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gradinv_exp.base.status import Status
from gradinv_exp.runs import artifacts, workers

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGINT, signal.SIGTERM)
EXIT_FAILED = 1  # a job raised: its metrics.json says why
DIED = (
    "the job's process died before it saved any result (killed by a signal such as "
    "SIGKILL, or by the out-of-memory killer)"
)


class Interrupted(BaseException):
    """A stop signal arrived. A BaseException (like KeyboardInterrupt), so neither the
    attack nor Hydra's ``except Exception`` around a job swallows it."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.signal_name = signal.Signals(signum).name
        self.exit_code = 128 + signum
        super().__init__(f"interrupted by {self.signal_name}")


class Action(enum.Enum):
    """What the first stop signal does in a process."""

    RAISE = "raise"  # Interrupted in the main thread: the job in progress saves and ends
    FORWARD = "forward"  # SIGTERM to the child processes running the jobs, then wait
    EXIT = "exit"  # end the process at once (a job process between two jobs)


class Stop:
    """A process's handler of SIGINT and SIGTERM; ``signum`` is the first one received.

    The first signal does ``action``; FORWARD raises like RAISE while the process has no
    child to forward to (the launcher has not started any). Later signals are logged and
    ignored, so that the results of the steps so far can be written, except under EXIT,
    where there is nothing to write.
    """

    def __init__(self, action: Action) -> None:
        self.action = action
        self.signum: int | None = None
        self.forwarded = 0  # child processes asked to stop
        self.repeats = 0

    def __call__(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.action is Action.EXIT:
            os._exit(128 + signum)  # between jobs: no files are open, nothing to save
        if self.signum is not None:
            self.repeats += 1
            if self.repeats == 1:  # loky repeats SIGTERM while a worker saves
                log.warning("%s again: already stopping, saving results", name)
            return
        self.signum = signum
        pids = workers.children() if self.action is Action.FORWARD else []
        if not pids:
            raise Interrupted(signum)
        log.warning("%s: asking %d job process(es) to save their results and stop", name,
                    len(pids))  # fmt: skip
        workers.terminate(pids)
        self.forwarded = len(pids)

    @contextmanager
    def acting(self, action: Action) -> Iterator[Stop]:
        """``action`` within the block, the previous one after it."""
        previous, self.action = self.action, action
        try:
            yield self
        finally:
            self.action = previous


@contextmanager
def interruptible() -> Iterator[Stop]:
    """Within the block, SIGINT/SIGTERM go to a ``Stop`` (RAISE, yielded); the previous
    handlers are restored on exit. Outside the main thread (where Python cannot set
    handlers) the Stop is never called."""
    stop = Stop(Action.RAISE)
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {s: signal.signal(s, stop) for s in SIGNALS}
    try:
        yield stop
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def job_process(*, forked: bool = False) -> Stop:
    """The ``Stop`` of a process that runs jobs for the command line (a joblib worker, a
    submitit task, a worker forked by the batched launcher): installed on the first call,
    for good, with EXIT. A job runs under ``stop.acting(Action.RAISE)``; once the process
    has been signalled (``signum`` set), it starts no further job. A ``forked`` process
    holds a copy of its parent's Stop, which is replaced."""
    current = signal.getsignal(signal.SIGTERM)
    if isinstance(current, Stop) and not forked:
        return current
    stop = Stop(Action.EXIT)
    for s in SIGNALS:
        signal.signal(s, stop)
    return stop


@contextmanager
def logged(what: str) -> Iterator[None]:
    """Log an exception of the block as ``what: Type: message`` and go on: for the
    writes made while a run is already ending (an interrupt, a failure), which must not
    replace the reason it ends (e.g. a full disk while saving an interrupted run)."""
    try:
        yield
    except Exception as err:
        log.error("%s: %s", what, error_line(err))


def error_line(err: BaseException) -> str:
    """``Type: message`` on one line, for metrics.json and the terminal."""
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def record_failure(run_dir: Path, err: BaseException, config: dict[str, Any]) -> dict[str, Any]:
    """Write metrics.json of a job that raised: ``status: failed``, the error in one line
    and the run's flat config, so a sweep's table still has a row for it. The traceback
    goes to the job's log. Returns what was written."""
    log.error("run failed:\n%s", "".join(traceback.format_exception(err)).rstrip())
    record = {"status": Status.FAILED, "error": error_line(err), "config": config}
    artifacts.write_json(run_dir / "metrics.json", record)
    return record


def record_death(run_dir: Path, config: dict[str, Any]) -> None:
    """Write metrics.json of a job whose process died without a word (``status: failed``,
    ``error: DIED``); the command line does this when it finds one (``workers.ended``).
    A file the process was writing when it died (a checkpoint's temporary file) is
    removed: the checkpoint it last finished stays."""
    artifacts.remove_partial(run_dir)
    record = {"status": Status.FAILED, "error": DIED, "config": config}
    artifacts.write_json(run_dir / "metrics.json", record)
