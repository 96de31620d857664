"""The batching launcher (``hydra/launcher=batched``, gradinv_exp/runs/batched.py): jobs
that differ only in their defense solved as one attack, each written as if it ran alone;
finished jobs skipped and interrupted ones completed by the same command again."""

import json
import signal

import pytest
from helpers import FAST, cli, typed_config
from test_interrupts import finish, start, status, wait_for

from gradinv_exp import experiment
from gradinv_exp.runs import batched, provenance

# a sweep of 4 jobs with long attacks of cheap steps, to be stopped while it runs
LONG = [
    "-m", *FAST, "dataset.image_size=16", "compile=off", "optimizer.max_iter=2",
    "attack.iterations=400", "attack.snapshot_every=2", "defense=none,prune,quantize,noise",
    "hydra/launcher=batched",
]  # fmt: skip
# what differs between a job run alone and in a batch: timing, and the batch's size
TIMING = (*provenance.CLOCK, "compile_s", "batched_jobs")

# A batch of J jobs is one computation of J times as many rows: convolutions and reductions
# sum in another order at another batch size, so a job's numbers in a batch agree with its
# run alone to float32 rounding, not bit for bit. Adam is not chaotic: after 4 steps the
# largest relative difference of any value of any member was 1.1e-5 (measured), so 1e-4.
# L-BFGS is: it turns a 1e-7 relative change into 7e-3 after 8 iterations (see
# tests/attacks/test_engine.py), so its members take 2 steps of 2 iterations; measured,
# pixels then differ by at most 1.3e-4 and values by 7.8e-4 relative (an interval's low end,
# a difference of two close numbers), so 5e-3. A member given another member's random
# stream, target, weights or defense model moves by orders of magnitude more.
MIXED = [
    ["defense=prune", "defense.ratio=0.5", "seed=0"],
    ["defense=prune", "defense.ratio=0.5", "attack.adaptive=true", "seed=0"],
    ["defense=quantize", "defense.bits=6", "attack.adaptive=true", "seed=1"],
    ["defense=noise", "defense.sigma=1e-3", "seed=2"],
]  # naive and adaptive attackers, three defenses, three seeds
SHORT = [*FAST, "dataset.image_size=16", "trials=2", "attack.snapshot_every=1"]
LBFGS = ["optimizer=lbfgs", "optimizer.max_iter=2", "attack.iterations=2"]
SETTINGS = {  # overrides, relative tolerance
    "lbfgs-eager": ([*LBFGS, "compile=off"], 5e-3),
    "adam-eager": (["optimizer=adam", "attack.iterations=4", "compile=off"], 1e-4),
    # compiled once per batch (a symbolic row count); two members keep the compiles few
    "lbfgs-compiled": ([*LBFGS, "compile=on"], 5e-3),
}


def comparable(metrics: dict, rel: float) -> dict:
    """metrics.json without timing; every number as approx (lists element-wise)."""

    def near(value):
        if isinstance(value, bool) or not isinstance(value, (int, float, list, dict)):
            return value
        if isinstance(value, dict):
            return {k: near(v) for k, v in value.items()}
        if isinstance(value, list):
            return [near(v) for v in value]
        # abs: a similarity near 0 (SSIM of a failed pair) moves by float32 rounding
        return pytest.approx(value, rel=rel, abs=5e-5, nan_ok=True)

    out = {k: near(v) for k, v in metrics.items() if k not in TIMING}
    for k, v in metrics.items():  # an interval's end of 2 trials: a difference of two close
        if k.endswith(("_ci_low", "_ci_high")) and isinstance(v, float):  # numbers, 10x rel
            out[k] = pytest.approx(v, rel=10 * rel, abs=5e-5, nan_ok=True)
    return out


def read(folder):
    return json.loads((folder / "metrics.json").read_text())


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_each_job_of_a_mixed_batch_equals_its_run_alone(tmp_path, setting):
    members = MIXED if setting != "lbfgs-compiled" else [MIXED[0], MIXED[2]]
    overrides, rel = SETTINGS[setting]
    cfgs = [typed_config(*SHORT, *overrides, *m) for m in members]
    assert len({batched.batch_key(c) for c in cfgs}) == 1  # one batch
    alone = [experiment.run(cfg, tmp_path / f"alone{i}") for i, cfg in enumerate(cfgs)]
    together = experiment.run_batch(cfgs, [tmp_path / f"batch{i}" for i in range(len(cfgs))])
    for i in range(len(cfgs)):
        single, joint = read(tmp_path / f"alone{i}"), read(tmp_path / f"batch{i}")
        assert together[i]["psnr"] == joint["psnr"] and joint["batched_jobs"] == len(cfgs)
        assert comparable(joint, rel) == comparable(single, rel), members[i]
        assert joint["recovered_labels"] == single["recovered_labels"]
        assert joint["per_trial"]["steps"] == single["per_trial"]["steps"]
        for name in ("history.csv", "images.npz", "reconstruction.png"):
            assert (tmp_path / f"batch{i}" / name).exists(), name
    # the members are different problems: other targets, other weights, other starts
    assert len({m["grad_loss"] for m in alone}) == len(cfgs)
    assert [m["adaptive"] for m in alone] == ["attack.adaptive=true" in m for m in members]


def test_a_member_whose_case_fails_is_recorded_and_the_others_run(tmp_path, monkeypatch):
    cfgs = [typed_config(*SHORT, *SETTINGS["adam-eager"][0], *m) for m in MIXED[:2]]
    build = experiment.build_case

    def broken(cfg):
        if cfg.attack.adaptive:
            raise RuntimeError("no data for this one")
        return build(cfg)

    monkeypatch.setattr(experiment, "build_case", broken)
    ended = experiment.run_batch(cfgs, [tmp_path / "a", tmp_path / "b"])
    assert ended[1] is None and read(tmp_path / "b")["status"] == "failed"
    assert ended[0]["status"] == "ok" and "batched_jobs" not in ended[0]  # it ran alone


def job(idx: int, problems: int = 1) -> batched.Job:
    return batched.Job(idx, [], None, key="key", problems=problems)


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
