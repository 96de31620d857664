"""The attack's progress: a tqdm bar with an ETA on a terminal, one log line per snapshot
where no one watches (a pipe, a file), never both."""

import io
import logging
import os
import select
import subprocess
import sys

import pytest
from helpers import FAST, REPO

from gradinv_exp.runs import display


def test_a_terminal_gets_a_bar_and_a_pipe_or_tqdm_disable_gets_lines(monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    main, follower = os.openpty()
    with os.fdopen(follower, "w") as tty:
        assert display.kind(tty) == display.BAR
        monkeypatch.setenv("TQDM_DISABLE", "1")
        assert display.kind(tty) == display.LINES
    os.close(main)
    monkeypatch.delenv("TQDM_DISABLE")
    assert display.kind(io.StringIO()) == display.LINES


def test_lines_log_every_snapshot_and_draw_no_bar(caplog, capsys):
    shown = display.Display(6, logging.getLogger("gradinv_exp.test"), display.LINES)
    with caplog.at_level(logging.INFO, logger="gradinv_exp.test"):
        for step in (0, 3, 6):
            shown(step, 1e-2, 12.0)
    assert [r.getMessage()[:9] for r in caplog.records] == ["step    0", "step    3", "step    6"]
    assert capsys.readouterr().err == ""


def test_a_bar_counts_steps_with_an_eta_and_logs_nothing(caplog, capsys):
    shown = display.Display(6, logging.getLogger("gradinv_exp.test"), display.BAR)
    with caplog.at_level(logging.INFO, logger="gradinv_exp.test"):
        for step in (0, 3, 6):
            shown(step, 1e-2, 12.0)
    err = capsys.readouterr().err
    assert "attack: 100%" in err and "6/6 [" in err and "psnr 12.00 dB" in err
    assert "<" in err.split("6/6 [")[1]  # elapsed<remaining: the ETA
    assert caplog.records == [] and shown.bar is None  # closed at the last step


def read_all(fd: int, proc: subprocess.Popen, timeout: float = 300) -> str:
    """Everything written to the pseudo-terminal ``fd`` until ``proc`` ends."""
    chunks = []
    while True:
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            proc.kill()
            break
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # the terminal closed: the command ended
            break
        if not chunk:
            break
        chunks.append(chunk)
    proc.wait(timeout=30)
    return b"".join(chunks).decode(errors="replace")


@pytest.mark.slow
def test_the_command_line_draws_a_bar_on_a_terminal_and_logs_lines_in_a_pipe(tmp_path):
    args = [sys.executable, "-m", "gradinv_exp", *FAST]
    env = {k: v for k, v in os.environ.items() if k != "TQDM_DISABLE"}
    env |= {"PYTHONPATH": str(REPO), "COLUMNS": "120"}
    main, follower = os.openpty()
    proc = subprocess.Popen(
        [*args, "hydra.run.dir=tty"], cwd=tmp_path, env=env, stdin=follower, stdout=follower,
        stderr=follower,
    )  # fmt: skip
    os.close(follower)
    screen = read_all(main, proc)
    os.close(main)
    assert proc.returncode == 0, screen
    assert "attack: 100%" in screen and "6/6" in screen and "step    6/6" not in screen
    piped = subprocess.run(
        [*args, "hydra.run.dir=pipe"], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert piped.returncode == 0, piped.stderr
    assert "step    6/6" in piped.stdout and "%|" not in piped.stderr + piped.stdout
