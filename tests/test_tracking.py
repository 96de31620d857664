"""Experiment tracking (tracking=mlflow|tensorboard): a run's config, metrics, loss curve
and figures, and a sweep's summary, logged offline to local stores; from the Python API
and from the command line, through the one job runner."""

import json

import pytest
from helpers import FAST, cli

import gradinv_exp
from gradinv_exp.base.options import ConfigError
from gradinv_exp.tracking import TRACKERS, log_run, log_sweep
from gradinv_exp.tracking.to_mlflow import MLflowConfig
from gradinv_exp.tracking.to_tensorboard import TensorBoardConfig


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 6-step run with tracking=mlflow, through the Python API, in a folder
    whose ./mlruns is the default store."""
    pytest.importorskip("mlflow")
    here = tmp_path_factory.mktemp("api")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(here)
        run = gradinv_exp.run(*FAST, "defense=noise", "tracking=mlflow", out=here / "run")
    return here, run


def mlflow_runs(uri: str):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("gradinv_exp")
    return client, client.search_runs([experiment.experiment_id])


def test_the_api_logs_config_metrics_curve_and_figures_to_mlflows_file_store(finished):
    here, run = finished
    client, runs = mlflow_runs((here / "mlruns").as_uri())
    assert len(runs) == 1
    logged = runs[0]
    assert logged.info.run_name == "run" and logged.info.status == "FINISHED"
    assert logged.data.params["defense.name"] == "noise"
    assert logged.data.params["attack.iterations"] == "6"
    assert logged.data.metrics["psnr"] == pytest.approx(run.metrics["psnr"])
    assert logged.data.metrics["success_rate"] == run.metrics["success_rate"]
    curve = client.get_metric_history(logged.info.run_id, "curve/grad_loss")
    assert [m.step for m in curve] == [0, 3, 6]
    assert [m.value for m in curve] == pytest.approx(list(run.history["grad_loss"]))
    names = {a.path for a in client.list_artifacts(logged.info.run_id)}
    assert {"reconstruction.png", "loss.png", "metrics.json", "history.csv"} <= names


def test_tensorboard_gets_the_same_run_as_event_files(finished, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, run = finished
    log_run(TensorBoardConfig(log_dir=str(tmp_path)), run.folder)
    events = EventAccumulator(str(tmp_path / "run"), size_guidance={"images": 0}).Reload()
    tags = events.Tags()
    assert {"reconstruction", "loss", "progress"} <= set(tags["images"])
    psnr = events.Scalars("curve/psnr")
    assert [e.step for e in psnr] == [0, 3, 6]
    assert [e.value for e in psnr] == pytest.approx(list(run.history["psnr"]), rel=1e-6)
    assert events.Scalars("final/psnr")[0].value == pytest.approx(run.metrics["psnr"])
    assert "config/text_summary" in tags["tensors"]


def test_a_sweep_summary_is_logged_as_its_own_run(finished, tmp_path):
    here, run = finished
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "summary.csv").write_text("defense,strength,status,psnr\nnoise,0.001,ok,9.5\n")
    cfg = MLflowConfig(uri=(tmp_path / "store").as_uri())
    log_sweep(cfg, sweep)
    client, runs = mlflow_runs(cfg.uri)
    assert [r.info.run_name for r in runs] == ["sweep:sweep"]
    assert [a.path for a in client.list_artifacts(runs[0].info.run_id)] == ["summary.csv"]


def test_a_tracker_is_chosen_by_name_and_its_package_checked_before_the_run(monkeypatch):
    assert TRACKERS.names() == ["mlflow", "none", "tensorboard"]
    with pytest.raises(ConfigError, match="tracking.name='wandb' is not allowed: choose one"):
        TRACKERS["wandb"]
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(
        ConfigError,
        match=r"tracking='mlflow' is not allowed: needs the mlflow "
        r"package, which is not installed: pip install 'gradinv_exp\[tracking\]'",
    ):
        MLflowConfig()


def test_a_store_that_cannot_be_written_costs_one_error_not_the_run(finished, tmp_path, caplog):
    _, run = finished
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    log_run(TensorBoardConfig(log_dir=str(blocked)), run.folder)
    assert "tracking=tensorboard" in caplog.text and "could not be logged" in caplog.text


@pytest.mark.slow
def test_a_command_line_sweep_logs_each_job_and_its_summary(tmp_path):
    pytest.importorskip("mlflow")
    args = ["-m", *FAST, "defense=none,prune", "tracking=mlflow", "hydra.sweep.dir=sweep"]
    proc = cli(args, tmp_path)
    assert proc.returncode == 0, proc.stderr
    _, runs = mlflow_runs((tmp_path / "mlruns").as_uri())
    assert sorted(r.info.run_name for r in runs) == ["0", "1", "sweep:sweep"]
    by_name = {r.info.run_name: r for r in runs}
    job = json.loads((tmp_path / "sweep" / "1" / "metrics.json").read_text())
    assert by_name["1"].data.metrics["psnr"] == pytest.approx(job["psnr"])
