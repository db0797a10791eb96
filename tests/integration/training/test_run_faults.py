"""Faults during a training run: the MLflow run never stays RUNNING or says FINISHED wrongly,
the error is recorded, earlier checkpoints survive, an unreachable server fails fast."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import lightning as L
import mlflow
import pytest
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException

from pipeline.config import parse_params
from pipeline.errors import TrackingError
from pipeline.models import ImageClassifier, VisionTransformer
from pipeline.records import RunRecord
from pipeline.tracking.uri import check_tracking, tracking_uri
from pipeline.training.fit import TrainingJob, fit


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_tracking_server_fails_fast_naming_the_uri():
    uri = f"http://127.0.0.1:{_closed_port()}"
    start = time.perf_counter()
    with pytest.raises(TrackingError, match=f"MLflow tracking server {uri} is unreachable"):
        check_tracking(uri)
    assert time.perf_counter() - start < 5


def test_sqlite_in_a_missing_directory_is_refused(tmp_path):
    with pytest.raises(TrackingError, match="does not exist"):
        check_tracking(f"sqlite:///{tmp_path}/no/such/dir/mlflow.db")


def _run(tiny_params, digits_dir, out_dir, model, epochs=2):
    p = parse_params(tiny_params)
    params = p.scratch["scratch"].model_copy(update={
        "train": p.scratch["scratch"].train.model_copy(update={"epochs": epochs})})
    job = TrainingJob(name="scratch", stage="train_scratch", recipe=params, seed=0,
                      data_dir=digits_dir, out_dir=out_dir)
    return fit(job, model, p.base.trainer, "faults")


def _model(tiny_params) -> ImageClassifier:
    sp = parse_params(tiny_params).scratch["scratch"]
    return ImageClassifier(VisionTransformer(sp.model.vit_config(num_classes=10)))


def _only_run():
    client = mlflow.MlflowClient(tracking_uri())
    exp = client.get_experiment_by_name("faults")
    (run,) = client.search_runs([exp.experiment_id])
    return run


class _NanAfterFirstEpoch(L.Callback):
    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            with torch.no_grad():
                pl_module.model.vit.head.bias.fill_(float("nan"))


def test_nan_loss_fails_the_run_with_the_error_and_keeps_the_last_good_checkpoint(
        tiny_params, digits_dir, tmp_path, patch_trainer):
    patch_trainer(_NanAfterFirstEpoch())
    model = _model(tiny_params)
    with pytest.raises(FloatingPointError, match="non-finite training loss nan at epoch 1"):
        _run(tiny_params, digits_dir, tmp_path / "ckpt", model)
    run = _only_run()
    assert run.info.status == "FAILED"
    assert run.data.tags["error"].startswith("FloatingPointError: non-finite training loss")
    last = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 0
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values()
               if v.is_floating_point())
    assert not (tmp_path / "ckpt" / "run.json").exists()  # no claim that the run finished
    assert not (tmp_path / "ckpt" / "model.safetensors").exists()  # nor a model to use


class _Sigterm(L.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 1:
            raise SIGTERMException  # what Lightning raises when the process gets SIGTERM


def test_sigterm_ends_the_run_killed(tiny_params, digits_dir, tmp_path, patch_trainer):
    patch_trainer(_Sigterm())
    model = _model(tiny_params)
    with pytest.raises(SIGTERMException):
        _run(tiny_params, digits_dir, tmp_path / "ckpt", model)
    run = _only_run()
    assert run.info.status == "KILLED"
    assert run.data.tags["error"].startswith("SIGTERMException")


def test_a_successful_run_is_finished(tiny_params, digits_dir, tmp_path):
    model = _model(tiny_params)
    result = _run(tiny_params, digits_dir, tmp_path / "ckpt", model, epochs=1)
    run = _only_run()
    assert run.info.status == "FINISHED" and "error" not in run.data.tags
    assert run.info.run_id == result.run_id and (tmp_path / "ckpt" / "run.json").exists()
    assert (tmp_path / "ckpt" / result.model_file).is_file()  # and the model file, logged
    arts = mlflow.MlflowClient(tracking_uri()).list_artifacts(result.run_id, "trained")
    assert [a.path for a in arts] == ["trained/model.safetensors"]


def _start_server(db, port):
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{db}",
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 90
    while True:
        try:
            check_tracking(f"http://127.0.0.1:{port}", timeout=1)
            return proc
        except TrackingError:
            assert proc.poll() is None, "mlflow server exited"
            assert time.monotonic() < deadline, "mlflow server did not start in 90 s"
            time.sleep(0.2)


def _stop_server(proc):
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


class _ServerOutage(L.Callback):
    """Kills the tracking server after epoch 0; brings it back after epoch ``back_after``."""

    def __init__(self, server, restart, back_after):
        self.server, self.restart, self.back_after = server, restart, back_after

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == 0:
            _stop_server(self.server)
        elif trainer.current_epoch == self.back_after:
            self.server = self.restart()


@pytest.mark.parametrize("comes_back", [True, False], ids=["server-returns", "server-stays-down"])
def test_tracking_server_dying_mid_run_costs_no_training(
        tiny_params, digits_dir, tmp_path, monkeypatch, patch_trainer, comes_back):
    port, db = _closed_port(), tmp_path / "server.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # give up at once, not in minutes
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    outage = _ServerOutage(_start_server(db, port), lambda: _start_server(db, port),
                           back_after=1 if comes_back else 99)
    patch_trainer(outage)
    model = _model(tiny_params)
    out = tmp_path / "ckpt"
    try:
        result = _run(tiny_params, digits_dir, out, model, epochs=3)  # trains to the end

        done = RunRecord.read(out)
        assert done.tracking_outage.startswith("MlflowException")
        assert torch.load(out / "last.ckpt", weights_only=True)["epoch"] == 2
        client = mlflow.MlflowClient(f"sqlite:///{db}")  # what the server got
        run = client.get_run(result.run_id)
        acc = client.get_metric_history(result.run_id, "val/acc")
        spool = out / "unsent_metrics.jsonl"
        if comes_back:  # spooled metrics replayed, the run ended properly
            assert run.info.status == "FINISHED" and len(acc) == 3 and not spool.exists()
        else:  # the run stays RUNNING there; the metrics since the outage are kept locally
            assert run.info.status == "RUNNING" and len(acc) == 1
            records = [json.loads(line) for line in spool.read_text().splitlines()]
            assert sum("val/acc" in r.get("metrics", {}) for r in records) == 2
    finally:
        if outage.server.poll() is None:
            _stop_server(outage.server)
