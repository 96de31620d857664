"""How a run ended, as ``metrics.json``'s ``status`` records it (a ``str``: it is written
and compared as its value)."""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    OK = "ok"  # the attack ran to its end
    DIVERGED = "diverged"  # it ran to its end; some trial's objective became NaN or inf
    FAILED = "failed"  # an error stopped it (metrics.json holds the error line)
    INTERRUPTED = "interrupted"  # stopped by a signal; its state is saved, a rerun continues
    MISSING = "missing"  # no metrics.json: crashed or killed before it could write one

    @property
    def finished(self) -> bool:
        """A finished run is never run again (a rerun of its sweep skips it)."""
        return self in (Status.OK, Status.DIVERGED)


FINISHED = tuple(s for s in Status if s.finished)  # for ``isin`` and ``in`` tests
