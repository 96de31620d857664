"""Faults during a run: interrupts (SIGINT/SIGTERM) and jobs that raise.

Sweeps run overnight on shared machines, so a Ctrl-C, a scheduler's SIGTERM or a crash
in one job must never lose what was computed. Signals become an ``Interrupted``
exception raised in the main thread at the next Python instruction; ``experiment.run`` catches
it, writes the artifacts of the steps so far with ``status: interrupted`` and re-raises,
and the command line exits with 128 + the signal number (130 SIGINT, 143 SIGTERM). No
change inside the attack loop is needed: the attack is stopped wherever it is, and the
snapshots it already reported are what gets saved.
"""

from __future__ import annotations

import logging
import signal
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gradinv_exp.runs import artifacts

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGINT, signal.SIGTERM)
EXIT_FAILED = 1  # a job raised: its metrics.json says why


class Interrupted(BaseException):
    """A stop signal arrived. A BaseException (like KeyboardInterrupt), so neither the
    attack nor Hydra's ``except Exception`` around a job swallows it."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.signal_name = signal.Signals(signum).name
        self.exit_code = 128 + signum
        super().__init__(f"interrupted by {self.signal_name}")


@contextmanager
def interruptible() -> Iterator[None]:
    """Within the block, the first SIGINT/SIGTERM raises ``Interrupted``; later ones are
    ignored with a warning so the partial results can be written. Handlers are restored
    on exit. Outside the main thread (where Python cannot set handlers) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    stopping = False

    def handler(signum: int, frame: Any) -> None:
        nonlocal stopping
        if stopping:
            log.warning("%s again: already stopping, saving results", signal.Signals(signum).name)
            return
        stopping = True
        raise Interrupted(signum)

    previous = {s: signal.signal(s, handler) for s in SIGNALS}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def error_line(err: BaseException) -> str:
    """``Type: message`` on one line, for metrics.json and the terminal."""
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def record_failure(run_dir: Path, err: BaseException, config: dict[str, Any]) -> dict[str, Any]:
    """Write metrics.json of a job that raised: ``status: failed``, the error in one line
    and the run's flat config, so a sweep's table still has a row for it. The traceback
    goes to the job's log. Returns what was written."""
    log.error("run failed:\n%s", "".join(traceback.format_exception(err)).rstrip())
    record = {"status": "failed", "error": error_line(err), "config": config}
    artifacts.write_json(run_dir / "metrics.json", record)
    return record
