"""Where MLflow runs and artifacts go."""

from pathlib import Path

from pipeline.training.tracking import artifact_location, flatten, run_tags, tracking_uri


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
from pipeline.training.tracking import check_tracking, make_logger
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
    import os
    import subprocess
    import sys
    import time

    import mlflow

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
