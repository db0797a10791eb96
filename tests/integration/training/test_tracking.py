"""Where MLflow runs and artifacts go, and what a run records besides its metrics."""

import json
import os
import signal
import threading
import time
from pathlib import Path

import lightning as L
import mlflow
import pytest
from lightning.pytorch.utilities.exceptions import SIGTERMException

from pipeline.config import parse_params
from pipeline.models import ImageClassifier, VisionTransformer
from pipeline.tracking.comparison import GROUP_TAG, PARENT_TAG
from pipeline.tracking.logger import flatten
from pipeline.tracking.names import KIND, KIND_TAG, run_tags
from pipeline.tracking.uri import artifact_location, tracking_uri
from pipeline.training.fit import TrainingJob, fit


def test_default_uri_is_an_absolute_sqlite_db_at_the_dvc_root(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))  # DVC sets it, also for --temp / --queue runs
    monkeypatch.chdir("/")
    assert tracking_uri() == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    assert artifact_location() == (tmp_path.resolve() / "mlartifacts").as_uri()


def test_outside_dvc_the_current_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.chdir(tmp_path)
    assert tracking_uri() == f"sqlite:///{Path(tmp_path).resolve() / 'mlflow.db'}"


def test_env_overrides_and_servers_keep_their_artifacts(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking_uri() == "http://127.0.0.1:5000"
    assert artifact_location() is None


def test_tags_and_flatten(monkeypatch):
    monkeypatch.setenv("DVC_EXP_NAME", "fuzzy-lark")
    tags = run_tags("finetune", "finetune")
    assert tags["stage"] == "finetune" and tags["dvc.exp_name"] == "fuzzy-lark"
    assert flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": None}) == {
        "a.b": 1, "a.c.d": [1, 2], "e": None}


WRITER = """
import sys, time
from pipeline.tracking.logger import make_logger
from pipeline.tracking.uri import check_tracking
name, n = sys.argv[1], int(sys.argv[2])
while time.time() < float(sys.argv[3]):  # start together, on a database that does not exist yet
    time.sleep(0.005)
check_tracking()
logger = make_logger("shared", name, "train_scratch")
logger.log_hyperparams({"who": name})
for step in range(n):
    logger.log_metrics({"train/loss": step / n, "val/acc": 1 - step / n}, step=step)
logger.finalize("success")
print(logger.run_id)
"""


def test_two_writers_on_one_sqlite_db_lose_nothing(tmp_path):
    """Two runs (``dvc exp run --queue -j 2``) writing to one new SQLite database at once: both
    create it without a schema race, and every metric of both lands."""
    import subprocess
    import sys

    uri = f"sqlite:///{tmp_path / 'shared.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    go, n = time.time() + 6, 150
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, name, str(n), str(go)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name in ("a", "b")]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    client = mlflow.MlflowClient(uri)
    for out, _ in outs:
        run_id = out.split()[-1]
        assert client.get_run(run_id).info.status == "FINISHED"
        for key in ("train/loss", "val/acc"):
            assert len(client.get_metric_history(run_id, key)) == n


class _SigtermAt(L.Callback):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        time.sleep(0.05)  # long enough for a few system-metrics samples on any machine
        if trainer.current_epoch == 1 and batch_idx == 1 and not self.__dict__.get("sent"):
            self.sent = True
            os.kill(os.getpid(), signal.SIGTERM)


def test_a_run_records_its_kind_data_and_machine(tiny_params, digits_dir, tmp_path, monkeypatch,
                                                patch_trainer):
    """What the UI reads: the experiment is model training, the run's dataset inputs are the
    prepared splits (digest from manifest.json, split sizes), and MLflow's own system metrics
    cover the run, across a SIGTERM and the resume (one step sequence, no monitor left)."""
    p = parse_params(tiny_params)
    sp = p.scratch["scratch"]
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.1")

    def train():
        L.seed_everything(0)
        model = ImageClassifier(VisionTransformer(sp.model.vit_config(num_classes=10)))
        job = TrainingJob(name="scratch", stage="train_scratch", recipe=sp, seed=0,
                          data_dir=digits_dir, out_dir=tmp_path / "out")
        return fit(job, model, p.base.trainer, "kind")

    def monitors() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if t.name == "SystemMetricsMonitor"}

    # A monitor of an earlier test whose server was killed may still be retrying its last call
    # (not waited for, by design): only this test's own monitors must be gone.
    earlier = monitors()
    with monkeypatch.context() as m:
        patch_trainer(_SigtermAt(), mp=m)
        with pytest.raises(SIGTERMException):
            train()
    assert monitors() <= earlier
    run_id = train().run_id
    assert monitors() <= earlier

    client = mlflow.MlflowClient(tracking_uri())
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["resumed"] == "1"
    assert client.get_experiment(run.info.experiment_id).tags[KIND_TAG] == KIND
    # a training run joins no comparison: the evaluate stage puts it under the parent run
    assert PARENT_TAG not in run.data.tags and GROUP_TAG not in run.data.tags
    assert len(client.search_runs([run.info.experiment_id])) == 1  # and creates no parent
    manifest = json.loads((digits_dir / "manifest.json").read_text())
    inputs = {i.tags[0].value: i.dataset for i in run.inputs.dataset_inputs}
    # what it read: never the test split (logged again on resume, kept once)
    assert set(inputs) == {"train", "validation"}
    for context, split in (("train", "train"), ("validation", "val")):
        ds = inputs[context]
        assert ds.name == "digits" and ds.source.endswith(f"{split}_images.npy\"}}")
        assert json.loads(ds.profile)["features_shape"] == [manifest["counts"][split], 8, 8, 1]
    assert len({ds.digest for ds in inputs.values()}) == 2
    for key in ("system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"):
        steps = [m.step for m in client.get_metric_history(run_id, key)]
        assert len(steps) >= 2 and steps == list(range(len(steps))), (key, steps)
