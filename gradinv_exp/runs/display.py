"""How a run shows its attack's progress: a progress bar with an ETA (tqdm) where a person
watches, else one log line per snapshot; never both.

A person watches a terminal (stderr is a TTY) or a Jupyter notebook (the Python API in a
kernel; a widget when ipywidgets is installed, else the bar as text). Everywhere else
(output piped or redirected to a file, a cluster's log, a launcher's worker process, the
batched launcher's many jobs at once) each snapshot is one log line, which a file keeps
readably. Workers of a parallel launcher share the command's terminal, and their bars
would overwrite each other, so only the command's own process draws one. tqdm's own
switch ``TQDM_DISABLE=1`` turns the bar off: the run then logs its lines.
"""

from __future__ import annotations

import importlib.util
import logging
import multiprocessing
import os
import sys
from typing import Any, TextIO

BAR, LINES = "bar", "lines"
DEFAULT_WIDTH, DEFAULT_ROWS = 100, 24  # for a terminal that reports no size


def in_notebook() -> bool:
    """Whether this process is a Jupyter kernel (IPython's kernel app is configured)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None  # type: ignore[attr-defined]
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def kind(stream: TextIO | None = None) -> str:
    """``BAR`` when a person watches ``stream`` (default stderr) from this process: a
    terminal in the command's own process (not a launcher's worker), or a notebook;
    ``LINES`` otherwise or when ``TQDM_DISABLE`` is set."""
    if os.environ.get("TQDM_DISABLE", "").lower() in ("1", "true", "yes"):
        return LINES
    if in_notebook():
        return BAR
    stream = sys.stderr if stream is None else stream
    tty = hasattr(stream, "isatty") and stream.isatty()
    return BAR if tty and multiprocessing.parent_process() is None else LINES


def new_bar(total: int, initial: int) -> Any:
    """A tqdm bar of ``total`` attack steps from ``initial`` (a resumed attack's step): a
    notebook widget when there is one, else text on stderr."""
    if in_notebook() and importlib.util.find_spec("ipywidgets") is not None:
        from tqdm.notebook import tqdm

        return tqdm(total=total, initial=initial, desc="attack", unit="step")
    from tqdm import tqdm  # no ipywidgets: the text bar, which Jupyter shows too

    # a terminal that reports a size of 0 would hide the bar: draw it 100 x 24 there
    columns, rows = size(sys.stderr)
    return tqdm(
        total=total, initial=initial, desc="attack", unit="step", file=sys.stderr,
        dynamic_ncols=columns > 0, ncols=None if columns > 0 else DEFAULT_WIDTH,
        nrows=rows if rows > 0 else DEFAULT_ROWS,
    )  # fmt: skip


def size(stream: TextIO) -> tuple[int, int]:
    """The terminal's (columns, rows); 0 for what it does not report (or no terminal)."""
    try:
        found = os.get_terminal_size(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return 0, 0
    return found.columns, found.lines


class Display:
    """The attack's progress as a bar or as log lines (``kind``), fed one snapshot at a
    time: ``display(step, grad_loss, psnr)``. The bar closes at the last step."""

    def __init__(self, total: int, log: logging.Logger, how: str | None = None) -> None:
        self.total, self.log = total, log
        self.how = kind() if how is None else how
        self.bar: Any = None

    def __call__(self, step: int, grad_loss: float, psnr: float) -> None:
        if self.how == LINES:
            self.log.info(
                "step %4d/%d  grad_loss %.3e  psnr %6.2f dB", step, self.total, grad_loss, psnr
            )
            return
        if self.bar is None:
            self.bar = new_bar(self.total, step)
        self.bar.set_postfix_str(f"psnr {psnr:.2f} dB, grad_loss {grad_loss:.2e}", refresh=False)
        self.bar.update(step - self.bar.n)
        if step >= self.total:
            self.close()

    def close(self) -> None:
        """End the bar (its last state stays on screen); nothing for log lines."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
