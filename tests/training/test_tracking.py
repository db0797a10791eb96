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
