"""Runs that outlive a training process: whether one still exists in the store (a resume goes on
in it), and ending an abandoned one KILLED with the reason, so that none is left RUNNING."""

from __future__ import annotations

import logging
from typing import Any

from .uri import client, tracking_uri

log = logging.getLogger(__name__)


def run_exists(run_id: str, uri: str | None = None) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        client(uri or tracking_uri()).get_run(run_id)
        return True
    except MlflowException:
        return False


def abandon_run(state: dict[str, Any], reason: str) -> None:
    """End a previous run KILLED (with the reason as its ``error`` tag) if it is still RUNNING;
    an unreachable store only costs a warning."""
    try:
        mlflow = client(state.get("tracking_uri"))
        if mlflow.get_run(state["run_id"]).info.status == "RUNNING":
            mlflow.set_tag(state["run_id"], "error", f"abandoned: {reason}")
            mlflow.set_terminated(state["run_id"], "KILLED")
            log.warning("MLflow run %s ended KILLED: %s", state["run_id"], reason)
    except Exception as e:  # noqa: BLE001 - marking an old run must not stop a new one
        log.warning("could not mark MLflow run %s KILLED (%s): %s", state["run_id"], reason, e)
