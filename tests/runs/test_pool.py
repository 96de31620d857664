"""The batched launcher's worker processes (gradinv_exp/runs/pool.py): every unit's result
in order, from forked processes; a unit whose worker died or raised is lost alone; a
stop signal to the command line reaches the workers, which save and end."""

import os
import signal
import threading
import time

import pytest

from gradinv_exp.runs import faults, pool


def test_every_units_result_comes_back_in_order_from_forked_workers():
    out = pool.run_all([1, 2, 3, 4, 5], lambda x: (x * x, os.getpid()), workers=2, lost=None)
    assert [value for value, _ in out] == [1, 4, 9, 16, 25]
    pids = {pid for _, pid in out}
    assert len(pids) == 2 and os.getpid() not in pids


def test_no_more_workers_than_units(monkeypatch):
    forked = []
    monkeypatch.setattr(pool, "fork", lambda *a, real=pool.fork: forked.append(1) or real(*a))
    assert pool.run_all([7, 8], lambda x: x + 1, workers=4, lost=None) == [8, 9]
    assert len(forked) == 2


def test_a_unit_whose_worker_dies_is_lost_and_a_new_worker_runs_the_rest():
    def run(x: int) -> int:
        if x == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        return x

    assert pool.run_all([1, 2, 3, 4], run, workers=2, lost=lambda x: -x) == [1, -2, 3, 4]


def test_a_unit_that_raises_is_lost_and_its_worker_goes_on():
    def run(x: int) -> tuple[int, int]:
        if x == 2:
            raise ValueError("boom")
        return x, os.getpid()

    out = pool.run_all([1, 2, 3], run, workers=1, lost=lambda x: (-x, 0))
    assert [v for v, _ in out] == [1, -2, 3]
    assert out[0][1] == out[2][1]  # the same worker ran the unit after the error


def test_a_stop_signal_reaches_the_running_units_and_no_other_starts(tmp_path):
    def run(x: int) -> int:
        try:
            time.sleep(60)
        except faults.Interrupted:
            (tmp_path / f"saved{x}").write_text("interrupted")
            raise
        return x

    threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM)).start()
    start = time.monotonic()
    with faults.interruptible(), pytest.raises(faults.Interrupted) as stopped:
        pool.run_all([0, 1, 2], run, workers=2, lost=lambda x: None)
    assert stopped.value.signum == signal.SIGTERM
    assert time.monotonic() - start < 30
    assert sorted(p.name for p in tmp_path.iterdir()) == ["saved0", "saved1"]
