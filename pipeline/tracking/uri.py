"""Where MLflow runs go, and whether that store can be reached.

The tracking URI is explicit: ``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<project>/mlflow.db``
with an absolute path. ``<project>`` is DVC's ``DVC_ROOT``, which DVC points at the parent repo even
for ``dvc exp run --temp`` / ``--queue`` runs (they execute in a copy under ``.dvc/tmp/exps``), so
every run lands in one database; outside DVC it is the current directory. Artifacts go to
``mlartifacts/`` beside the database for the same reason. View with
``mlflow ui --backend-store-uri sqlite:///mlflow.db``.

MLflow is imported inside the functions that talk to the store: deciding the URI is light.
"""

from __future__ import annotations

import os
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from ..errors import TrackingError


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


def client(uri: str | None = None):
    """An ``MlflowClient`` of the store ``uri`` (default: :func:`tracking_uri`), its registry
    the same store."""
    from mlflow import MlflowClient

    uri = uri or tracking_uri()
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


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
        db = Path(uri.removeprefix("sqlite:///")).resolve()
        if not db.parent.is_dir():
            raise TrackingError(f"MLflow tracking URI {uri}: directory {db.parent} does not exist")
        init_sqlite(uri, db)
    return uri


def init_sqlite(uri: str, db: Path) -> None:
    """Create or migrate the database under a file lock: two runs starting at once on a new
    database (``dvc exp run --queue`` with two workers) would otherwise both run MLflow's schema
    migrations and one would fail. After that SQLite serialises the writers itself."""
    from filelock import FileLock

    with FileLock(str(db) + ".lock", timeout=120):
        client(uri).search_experiments(max_results=1)
