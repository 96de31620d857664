"""Locks on output folders, so that no job runs twice at the same time.

- The command line holds ``.command.lock`` in its output folder (``hydra.run.dir`` or
  ``hydra.sweep.dir``) from before the first job until it ends: a second command into
  the same folder stops at once with one line (exit 2) instead of running the same jobs
  again or writing the same files. Taking it also checks, before any job, that the
  folder can be created and written.
- A job holds ``.job.lock`` in its own folder while it runs. Another process that gets
  to the same job (the command line running the jobs again after a worker died, a job
  process left from a command that was killed) waits for it, then finds the job done.

Both are ``fcntl.flock`` locks on a file that stays in the folder: the kernel releases
them when the process ends, however it ends (SIGKILL included), so a lock never outlives
its holder. On Linux they also hold across the machines of an NFS folder.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from gradinv_exp.base.options import ConfigError

log = logging.getLogger(__name__)

COMMAND = ".command.lock"
JOB = ".job.lock"


def open_lock(path: Path) -> IO[str]:
    """``path`` opened for locking (created, mode ``0666 & ~umask``, if absent)."""
    return os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT, 0o666), "r+")


def holder(lock: IO[str]) -> str:
    """Who holds ``lock``: ``pid N`` as written by the holder (it may be mid-write)."""
    lock.seek(0)
    pid = lock.read().strip()
    return f"pid {pid}" if pid else "pid unknown"


def take(lock: IO[str]) -> None:
    """Write this process's id into the lock it has just taken."""
    lock.seek(0)
    lock.truncate()
    lock.write(f"{os.getpid()}\n")
    lock.flush()


def claim(folder: Path, key: str) -> IO[str]:
    """Create ``folder`` and take its command lock; close the returned file to release it.

    ConfigError (one line naming ``key``, e.g. ``hydra.sweep.dir``) when the folder cannot
    be created or written, or when another command holds it.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = open_lock(folder / COMMAND)
    except OSError as err:
        raise ConfigError(
            f"{key}={folder} cannot be created or written: {err.strerror} ({err.filename})"
        ) from None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        who = holder(lock)
        lock.close()
        raise ConfigError(
            f"{key}={folder} is in use by another gradinv-exp command ({who}): wait for it "
            f"to end, or choose another {key}"
        ) from None
    take(lock)
    return lock


@contextmanager
def job(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir``'s job lock within the block; wait (one log line) while another
    process holds it."""
    with open_lock(run_dir / JOB) as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.warning("%s is being run by another process (%s): waiting", run_dir, holder(lock))
            fcntl.flock(lock, fcntl.LOCK_EX)
        take(lock)
        yield


def running(run_dir: Path) -> bool:
    """Whether a process holds ``run_dir``'s job lock now."""
    path = run_dir / JOB
    if not path.exists():
        return False
    with open_lock(path) as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        return False
