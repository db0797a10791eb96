"""Where a trained model comes from: its file, or an MLflow run or registered version holding it.

``source`` is a model file (``models/<variant>/model.safetensors``), a variant's dir holding one,
``runs:/<run_id>[/<artifact>]`` or a bare run id (the run's ``trained/model.safetensors``), or a
registered version ``models:/<name>/<version>``, ``models:/<name>/<alias>``,
``models:/<name>@<alias>`` (that version's run, same artifact). MLflow is reached as the training
stages reach it (``MLFLOW_TRACKING_URI``, else the project's ``mlflow.db``).
"""

from __future__ import annotations

import contextlib
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..errors import CheckpointError
from ..layout import MODEL_FILE
from .names import MODEL_ARTIFACT
from .uri import client, tracking_uri

_RUN_ID = re.compile(r"[0-9a-f]{32}")  # MLflow run ids are uuid4 hex


def _mlflow_client(uri: str):
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        if not db.is_file():
            raise CheckpointError(f"no MLflow database at {db}: run from the project root or set "
                                  "MLFLOW_TRACKING_URI")
    return client(uri)


def _download(uri: str, run_id: str, artifact: str, dst: str) -> Path:
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException

    client = _mlflow_client(uri)
    try:
        client.get_run(run_id)
    except MlflowException as e:
        raise CheckpointError(f"no MLflow run {run_id} in {uri} ({e.error_code})") from None
    try:
        return Path(download_artifacts(run_id=run_id, artifact_path=artifact, dst_path=dst,
                                       tracking_uri=uri))
    except Exception as e:  # noqa: BLE001 - MlflowException, OSError, per artifact store
        raise CheckpointError(
            f"MLflow run {run_id} has no artifact {artifact} (did its training finish?): "
            f"{type(e).__name__}: {e}") from None


def _model_version_run(uri: str, spec: str) -> str:
    """The run id behind ``<name>/<version>``, ``<name>/<alias>`` or ``<name>@<alias>``."""
    from mlflow.exceptions import MlflowException

    name, sep, ref = spec.rpartition("@") if "@" in spec else spec.rpartition("/")
    if not sep or not name or not ref:
        raise CheckpointError(f"models:/{spec}: expected models:/<name>/<version> or "
                              "models:/<name>@<alias>")
    client = _mlflow_client(uri)
    try:
        mv = (client.get_model_version(name, ref) if ref.isdigit()
              else client.get_model_version_by_alias(name, ref))
    except MlflowException as e:
        what = "version" if ref.isdigit() else "alias"
        raise CheckpointError(f"models:/{spec}: registered model {name!r} has no {what} {ref!r} "
                              f"in {uri} ({e.error_code})") from None
    if not mv.run_id:
        raise CheckpointError(f"models:/{spec}: version {mv.version} was not registered from an "
                              "MLflow run, so there is no model file to load")
    return mv.run_id


@contextlib.contextmanager
def local_model_file(source: str | Path, uri: str | None = None) -> Iterator[Path]:
    """A local path to the model file ``source`` names, downloaded into a temporary directory
    (removed afterwards) when it lives in MLflow."""
    s = str(source)
    if s.startswith(("runs:/", "models:/")) or (not Path(s).exists() and _RUN_ID.fullmatch(s)):
        uri = uri or tracking_uri()
        if s.startswith("models:/"):
            run_id, artifact = _model_version_run(uri, s.removeprefix("models:/")), None
        else:
            run_id, _, artifact = s.removeprefix("runs:/").strip("/").partition("/")
        with tempfile.TemporaryDirectory(prefix="vit-predict-") as tmp:
            yield _download(uri, run_id, artifact or MODEL_ARTIFACT, tmp)
    elif Path(s).is_file():
        yield Path(s)
    elif (Path(s) / MODEL_FILE).is_file():  # a variant's dir
        yield Path(s) / MODEL_FILE
    else:
        raise CheckpointError(
            f"no model file at {s}: give a model.safetensors (or the dir of one), runs:/<run_id>, "
            "an MLflow run id or models:/<name>/<version|alias>")
