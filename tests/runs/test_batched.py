"""The batching launcher (``hydra/launcher=batched``, gradinv_exp/runs/batched.py): jobs
that differ only in their defense solved as one attack, each written as if it ran alone;
finished jobs skipped and interrupted ones completed by the same command again."""

import json
import signal

import pytest
from helpers import FAST, cli, typed_config
from hydra.core.utils import JobReturn
from test_interrupts import finish, start, status, wait_for

from gradinv_exp import experiment
from gradinv_exp.runs import batched, provenance

# eager Adam on two trials (the batched path of the simulation, alone as in a batch)
ADAM = [*FAST, "dataset.image_size=16", "optimizer=adam", "compile=off", "trials=2"]
DEFENSES = ["defense=none", "defense=prune", "defense=noise"]
# a sweep of 4 jobs with long attacks of cheap steps, to be stopped while it runs
LONG = [
    "-m", *FAST, "dataset.image_size=16", "compile=off", "optimizer.max_iter=2",
    "attack.iterations=400", "attack.snapshot_every=2", "defense=none,prune,quantize,noise",
    "hydra/launcher=batched",
]  # fmt: skip
# what differs between a job run alone and in a batch: timing, and the batch's size
TIMING = (*provenance.CLOCK, "compile_s", "batched_jobs")


# A batch of J jobs is one computation of J times as many rows: the convolutions' kernels
# sum in another order at another batch size, so values agree to float32 rounding (measured:
# PSNR relative 1e-8, a 2-trial interval's end 1e-6 after 6 steps), not bit for bit; a value
# near 0 (the SSIM of a failed start, -9.5e-4) by 1.5e-8 absolute.
ROUNDING = 1e-5
NEAR_ZERO = 1e-7


def comparable(metrics: dict) -> dict:
    """metrics.json without timing; every number as approx (lists element-wise)."""

    def near(value):
        if isinstance(value, bool) or not isinstance(value, (int, float, list, dict)):
            return value
        if isinstance(value, dict):
            return {k: near(v) for k, v in value.items()}
        if isinstance(value, list):
            return [near(v) for v in value]
        return pytest.approx(value, rel=ROUNDING, abs=NEAR_ZERO, nan_ok=True)

    return {k: near(v) for k, v in metrics.items() if k not in TIMING}


@pytest.mark.parametrize(
    "extra", [[], ["clients=2", "client=fedavg"]], ids=["one-client", "aggregate-fedavg"]
)
def test_each_batched_job_equals_its_run_alone_under_eager_adam(tmp_path, extra):
    cfgs = [typed_config(*ADAM, *extra, d) for d in DEFENSES]
    alone = [experiment.run(cfg, tmp_path / f"alone{i}") for i, cfg in enumerate(cfgs)]
    members = []
    for i, cfg in enumerate(cfgs):
        (tmp_path / f"batch{i}").mkdir()
        job = batched.Job(i, None, tmp_path / f"batch{i}", "key", cfg.trials)
        members.append(batched.Prepared(job, JobReturn(), **batched.prepare(cfg)))
    psnrs = batched.run_batch(members)
    assert psnrs == pytest.approx([m["psnr"] for m in alone], rel=ROUNDING)
    for i, single in enumerate(alone):
        together = json.loads((tmp_path / f"batch{i}" / "metrics.json").read_text())
        assert together["batched_jobs"] == 3
        single = json.loads((tmp_path / f"alone{i}" / "metrics.json").read_text())
        assert comparable(single) == comparable(together)
        assert together["recovered_labels"] == single["recovered_labels"]
        assert together["per_trial"]["steps"] == single["per_trial"]["steps"]
        for name in ("history.csv", "images.npz", "reconstruction.png"):
            assert (tmp_path / f"batch{i}" / name).exists(), name
    # the defenses did give different targets: the jobs are not one problem thrice
    assert len({m["grad_loss"] for m in alone}) == 3


def job(idx: int, problems: int = 1) -> batched.Job:
    return batched.Job(idx, None, None, "key", problems)


def test_spread_splits_the_largest_batch_until_every_worker_has_a_unit():
    def sizes(units):
        return [[j.idx for j in u] for u in units]

    four = [job(i) for i in range(4)]
    assert sizes(batched.spread([four], 1)) == [[0, 1, 2, 3]]
    assert sizes(batched.spread([four], 2)) == [[0, 1], [2, 3]]
    assert sizes(batched.spread([four], 3)) == [[0], [1], [2, 3]]
    assert sizes(batched.spread([four], 9)) == [[0], [1], [2], [3]]
    # enough units already: nothing is split; the batch of most problems is split first
    assert sizes(batched.spread([[job(9)], four], 2)) == [[9], [0, 1, 2, 3]]
    small, large = [job(0), job(1)], [job(2, 5), job(3, 5)]
    assert sizes(batched.spread([small, large], 3)) == [[0, 1], [2], [3]]


@pytest.mark.slow
def test_a_batched_sweep_writes_every_job_and_splits_at_max_problems(tmp_path):
    args = ["-m", *FAST, "defense=none,prune,quantize,noise", "hydra/launcher=batched"]
    sweeps = {}
    for workers in (2, 1):  # the same two batches, in two worker processes and in this one
        sweeps[workers] = sweep = tmp_path / f"workers{workers}"
        extra = ["hydra.launcher.max_problems=2", f"hydra.launcher.workers={workers}"]
        proc = cli([*args, *extra, f"hydra.sweep.dir={sweep}"], tmp_path)
        assert proc.returncode == 0, proc.stderr
        out = proc.stdout + proc.stderr
        assert out.count("2 job(s) as one attack of 2 problems") == 2, out
        assert "peak RSS" in out
        assert ("2 workers" in out) == (workers == 2)
        for job in range(4):
            assert json.loads((sweep / str(job) / "metrics.json").read_text())["status"] == "ok"
            assert (sweep / str(job) / ".hydra" / "overrides.yaml").exists()
    for job in range(4):  # a worker computes exactly what this process computes
        forked, here = (
            json.loads((sweeps[w] / str(job) / "metrics.json").read_text()) for w in (2, 1)
        )
        assert {k: v for k, v in forked.items() if k not in TIMING} == {
            k: v for k, v in here.items() if k not in TIMING
        }


@pytest.mark.slow
def test_an_interrupted_batched_sweep_skips_finished_jobs_and_completes_the_others(tmp_path):
    sweep = tmp_path / "sweep"
    args = [*LONG, "hydra.launcher.max_problems=2", "hydra.launcher.workers=1",
            f"hydra.sweep.dir={sweep}"]  # fmt: skip
    proc = start(args, tmp_path)
    wait_for(proc, "2 job(s) as one attack")  # the first batch (jobs 0, 1) finished
    wait_for(proc, "step    2/400")  # the second batch (jobs 2, 3) is attacking
    proc.send_signal(signal.SIGINT)
    out = finish(proc)
    assert proc.returncode == 130, out
    assert status(sweep) == {"0": "ok", "1": "ok", "2": "interrupted", "3": "interrupted"}
    done = {j: (sweep / j / "metrics.json").stat().st_mtime_ns for j in ("0", "1")}
    again = cli(args, tmp_path)
    assert again.returncode == 0, again.stderr
    assert status(sweep) == dict.fromkeys("0123", "ok")
    assert {j: (sweep / j / "metrics.json").stat().st_mtime_ns for j in done} == done
    assert "2 job(s) as one attack" in again.stdout + again.stderr


@pytest.mark.slow
def test_batches_on_two_workers_run_at_once_and_each_saves_when_stopped(tmp_path):
    sweep = tmp_path / "sweep"
    args = [*LONG, "hydra.launcher.workers=2", f"hydra.sweep.dir={sweep}"]
    proc = start(args, tmp_path)
    lines = wait_for(proc, "step    2/400", count=4)  # both batches attack at once
    assert any("4 in 2 batch(es), 0 alone, 2 workers" in line for line in lines), lines
    proc.send_signal(signal.SIGINT)
    out = finish(proc)
    assert proc.returncode == 130, out
    assert status(sweep) == dict.fromkeys("0123", "interrupted")
    again = cli(args, tmp_path)
    assert again.returncode == 0, again.stderr
    assert status(sweep) == dict.fromkeys("0123", "ok")
    assert (again.stdout + again.stderr).count("2 job(s) as one attack of 2 problems") == 2
