"""Where MLflow runs go, decided without importing MLflow (a light module every layer may use).

The tracking URI is explicit: ``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<project>/mlflow.db``
with an absolute path. ``<project>`` is DVC's ``DVC_ROOT``, which DVC points at the parent repo even
for ``dvc exp run --temp`` / ``--queue`` runs (they execute in a copy under ``.dvc/tmp/exps``), so
every run lands in one database; outside DVC it is the current directory. Artifacts go to
``mlartifacts/`` beside the database for the same reason.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


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
