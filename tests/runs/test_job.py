"""One job runner (``runs.job``): the command line's Hydra job, the Python API and the
batched launcher start a job the same way (resume, lock, leftovers, typed config)."""

import json
import threading
from types import SimpleNamespace

import pytest
from helpers import FAST, compose_config
from hydra.types import RunMode

import gradinv_exp
from gradinv_exp import __main__ as cli_main
from gradinv_exp import api
from gradinv_exp.base.options import ConfigError
from gradinv_exp.runs import job, locks


def test_a_finished_folder_is_read_without_touching_its_lock(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps({"status": "ok", "psnr": 12.5}))
    with job.started(tmp_path) as previous:
        assert previous == {"status": "ok", "psnr": 12.5}
    assert not (tmp_path / locks.JOB).exists()


def test_an_unfinished_folder_is_locked_and_cleaned(tmp_path):
    (tmp_path / ".metrics.json.tmp").write_text("half")
    with job.started(tmp_path) as previous:
        assert previous is None
        assert locks.running(tmp_path)
        assert not (tmp_path / ".metrics.json.tmp").exists()
    assert not locks.running(tmp_path)


def test_a_run_that_finished_while_waiting_for_the_lock_is_read(tmp_path):
    """Another process holds the job's lock and finishes the run; this one then reads it."""
    inside, done = threading.Event(), threading.Event()

    def other():
        with locks.job(tmp_path):
            inside.set()
            done.wait(5)
            (tmp_path / "metrics.json").write_text(json.dumps({"status": "ok", "psnr": 3.0}))

    thread = threading.Thread(target=other)
    thread.start()
    inside.wait(5)
    done.set()
    with job.started(tmp_path) as previous:
        assert previous == {"status": "ok", "psnr": 3.0}
    thread.join()


def test_a_config_that_fails_its_checks_is_recorded_as_failed(tmp_path):
    cfg = compose_config("defense=noise")
    cfg.defense.sigma = -1.0
    with pytest.raises(ConfigError, match="defense.sigma"):
        job.typed(cfg, tmp_path)
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["status"] == "failed" and "defense.sigma" in record["error"]


def test_the_command_line_and_the_api_both_run_jobs_through_runs_job(tmp_path, monkeypatch):
    calls = []

    def spy(cfg, run_dir):
        calls.append(("hydra" in cfg, run_dir))
        return {"status": "ok", "psnr": 7.0}, False

    monkeypatch.setattr(job, "run", spy)
    hydra_cfg = SimpleNamespace(runtime=SimpleNamespace(output_dir=str(tmp_path / "cli")))
    hydra_cfg.mode = RunMode.RUN
    assert cli_main.job(compose_config(*FAST), hydra_cfg) == 7.0
    assert api.execute([*FAST], tmp_path / "api") == {"status": "ok", "psnr": 7.0}
    # the command line's job gets Hydra's task config; the API's carries Hydra's node,
    # from which runs.job writes the .hydra/ files Hydra writes for the command line
    assert calls == [(False, tmp_path / "cli"), (True, tmp_path / "api")]


@pytest.mark.slow
def test_the_api_writes_the_hydra_files_and_resumes_like_the_command_line(tmp_path):
    out = tmp_path / "run"
    first = gradinv_exp.run(*FAST, "defense=prune", out=out)
    saved = out / ".hydra"
    assert {p.name for p in saved.iterdir()} == {"config.yaml", "hydra.yaml", "overrides.yaml"}
    assert "defense=prune" in (saved / "overrides.yaml").read_text()
    metrics, ran = job.run(compose_config(*FAST, "defense=prune"), out)
    assert not ran and metrics == first.metrics
