"""MLflow tracking: where runs go, how they are tagged, and the Lightning logger for a variant.

The tracking URI is explicit: ``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<project>/mlflow.db``
with an absolute path. ``<project>`` is DVC's ``DVC_ROOT``, which DVC points at the parent repo even
for ``dvc exp run --temp`` / ``--queue`` runs (they execute in a copy under ``.dvc/tmp/exps``), so
every run lands in one database; outside DVC it is the current directory. Artifacts go to
``mlartifacts/`` beside the database for the same reason. View with
``mlflow ui --backend-store-uri sqlite:///mlflow.db``.
"""

from __future__ import annotations

import os
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException


class TrackingError(RuntimeError):
    """The MLflow tracking store cannot be used; the message names the URI."""


def project_root() -> Path:
    return Path(os.environ.get("DVC_ROOT") or os.getcwd()).resolve()


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_root() / 'mlflow.db'}"


def artifact_location() -> str | None:
    """``mlartifacts/`` beside a SQLite database (absolute, like the database); a tracking server
    decides its own."""
    uri = tracking_uri()
    if not uri.startswith("sqlite:///"):
        return None
    return (Path(uri.removeprefix("sqlite:///")).resolve().parent / "mlartifacts").as_uri()


def git_commit(cwd: Path | None = None) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def run_tags(stage: str, variant: str) -> dict[str, str]:
    tags = {"stage": stage, "variant": variant}
    commit = git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc.exp_name"] = os.environ["DVC_EXP_NAME"]
    if os.environ.get("DVC_EXP_BASELINE_REV"):
        tags["dvc.exp_baseline_rev"] = os.environ["DVC_EXP_BASELINE_REV"]
    return tags


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}, for MLflow params."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, f"{key}."))
        else:
            out[key] = v
    return out


def check_tracking(uri: str | None = None, timeout: float = 5.0) -> str:
    """Fail fast, before any training, when the tracking store cannot be reached.

    A server (http/https) must answer ``/health`` within ``timeout`` seconds; MLflow's own client
    would retry for minutes first. A SQLite database needs an existing directory."""
    uri = uri or tracking_uri()
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout) as r:
                r.read()
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise TrackingError(
                f"MLflow tracking server {uri} is unreachable ({reason}). Start it, fix "
                "MLFLOW_TRACKING_URI, or unset it to track into the project's mlflow.db"
            ) from e
    elif uri.startswith("sqlite:///"):
        folder = Path(uri.removeprefix("sqlite:///")).resolve().parent
        if not folder.is_dir():
            raise TrackingError(f"MLflow tracking URI {uri}: directory {folder} does not exist")
    return uri


class RunLogger(MLFlowLogger):
    """An MLFlowLogger whose run records why it ended: on a failure the error goes into the
    ``error`` tag, and a SIGTERM or Ctrl-C ends the run KILLED rather than FAILED."""

    failure: BaseException | None = None

    def finalize(self, status: str = "success") -> None:
        if status == "failed" and self.failure is not None and self._initialized:
            err = self.failure
            self.experiment.set_tag(self.run_id, "error", f"{type(err).__name__}: {err}"[:4000])
            if isinstance(err, (KeyboardInterrupt, SIGTERMException)):
                status = "KILLED"
        super().finalize(status)


class RecordFailure(Callback):
    """Hands the exception to our loggers; Lightning calls this before it finalizes them."""

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, RunLogger):
                logger.failure = exception


def make_logger(experiment: str, run_name: str, stage: str) -> RunLogger:
    return RunLogger(
        experiment_name=experiment,
        run_name=run_name,
        tracking_uri=tracking_uri(),
        artifact_location=artifact_location(),
        tags=run_tags(stage, run_name),
        log_model=False,  # the best checkpoint is logged explicitly once training succeeded
    )
