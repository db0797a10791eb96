"""Lightning's MLflow logger for one training run: a new run or a resumed one, its tags, and
metrics that survive an outage of the tracking server (spooled to a file, replayed at the end).

A training run knows nothing of the comparison it will be part of: the ``evaluate`` stage, the one
stage that sees every cell, puts the runs under the comparison's parent run
(:mod:`pipeline.tracking.comparison`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException

from .names import MODEL_ARTIFACT, flatten, run_tags
from .uri import artifact_location, tracking_uri

log = logging.getLogger(__name__)


class RunLogger(MLFlowLogger):
    """An MLFlowLogger whose run records why it ended, and that outlives its tracking server.

    - On a failure the error goes into the ``error`` tag; a SIGTERM or Ctrl-C ends the run KILLED
      rather than FAILED.
    - If the server stops answering mid-run (after MLflow's own retries), training goes on: the
      logger stops calling the server, appends every metric to ``spool`` (JSON lines) instead, and
      at the end replays them and ends the run if the server is back. Otherwise the run stays
      RUNNING on the server and the spool file keeps the values.
    """

    failure: BaseException | None = None
    spool: Path | None = None
    lost: str | None = None  # why the server is given up on now
    outage: str | None = None  # the first time it was (kept after a recovery, for run.json)

    def _give_up(self, what: str, err: BaseException) -> None:
        if self.lost is None:
            self.lost = f"{type(err).__name__}: {err}"
            self.outage = self.outage or self.lost
            log.warning(
                "MLflow tracking failed while %s (%s); training continues, metrics go to %s",
                what, self.lost, self.spool,
            )

    def _to_spool(self, record: dict[str, Any]) -> None:
        if self.spool is not None:
            self.spool.parent.mkdir(parents=True, exist_ok=True)
            with self.spool.open("a") as f:
                f.write(json.dumps(record, default=float) + "\n")

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if self.lost is None:
            try:
                return super().log_metrics(metrics, step)
            except Exception as e:  # noqa: BLE001 - MlflowException, requests' ConnectionError
                self._give_up("logging metrics", e)
        self._to_spool({"step": step or 0, "time_ms": int(time.time() * 1000),
                        "metrics": {k: float(v) for k, v in metrics.items()}})

    @rank_zero_only
    def log_hyperparams(self, params) -> None:
        if self.lost is None:
            try:
                return super().log_hyperparams(params)
            except Exception as e:  # noqa: BLE001
                self._give_up("logging params", e)
        self._to_spool({"params": {k: str(v) for k, v in flatten(dict(params)).items()}})

    def call(self, what: str, fn, *args, **kwargs) -> bool:
        """``fn(*args)`` against the server unless it was given up on; False if it failed."""
        if self.lost is None:
            try:
                fn(*args, **kwargs)
                return True
            except Exception as e:  # noqa: BLE001
                self._give_up(what, e)
        return False

    def _replay_spool(self) -> None:
        """Send what the spool holds, now that the server answers again."""
        from mlflow.entities import Metric

        metrics = []
        for line in self.spool.read_text().splitlines():
            record = json.loads(line)
            for k, v in record.get("metrics", {}).items():
                metrics.append(Metric(k, v, record["time_ms"], record["step"]))
        for i in range(0, len(metrics), 1000):  # MLflow's log_batch limit
            self._mlflow_client.log_batch(self.run_id, metrics=metrics[i : i + 1000])
        self.spool.unlink()

    @rank_zero_only
    def finalize(self, status: str = "success") -> None:
        if not self._initialized:
            return
        if status == "failed" and self.failure is not None:
            err = self.failure
            self.call("tagging the error", self.experiment.set_tag, self.run_id, "error",
                      f"{type(err).__name__}: {err}"[:4000])
            if isinstance(err, (KeyboardInterrupt, SIGTERMException)):
                status = "KILLED"
        # also metrics spooled before the run was interrupted, now that it is resumed
        if self.spool is not None and self.spool.exists():
            try:
                self._replay_spool()
                log.warning("replayed the spooled metrics into MLflow run %s", self.run_id)
                self.lost = None
            except Exception as e:  # noqa: BLE001
                log.warning("MLflow still unreachable (%s): run %s stays RUNNING there; its "
                            "metrics since the outage are in %s", e, self.run_id, self.spool)
                return
        try:
            super().finalize(status)
        except Exception as e:  # noqa: BLE001
            log.warning("could not end MLflow run %s (%s); it stays RUNNING there", self.run_id, e)


def make_logger(
    experiment: str, run_name: str, stage: str, *, run_id: str | None = None,
    spool: Path | None = None,
) -> RunLogger:
    """A logger for a new run, or for the existing ``run_id`` (a resumed run: set RUNNING again,
    with a ``resumed`` count tag)."""
    logger = RunLogger(
        experiment_name=experiment,
        run_name=run_name,
        tracking_uri=tracking_uri(),
        artifact_location=artifact_location(),
        tags=run_tags(stage, run_name),
        log_model=False,  # the model file is logged explicitly once training succeeded
        run_id=run_id,
    )
    logger.spool = spool
    if run_id is not None and rank_zero_only.rank == 0:
        client = logger.experiment
        run = client.get_run(run_id)
        client.update_run(run_id, status="RUNNING")
        count = int(run.data.tags.get("resumed", "0")) + 1
        client.set_tag(run_id, "resumed", str(count))
        if "error" in run.data.tags:  # a resumed run is no longer failed
            client.delete_tag(run_id, "error")
    return logger


def log_model_file(logger: RunLogger, path: Path) -> bool:
    """The trained-model file into the run, under ``trained/`` (where ``runs:/<id>`` sources find
    it: :mod:`pipeline.tracking.model_uris`); False if the store did not take it."""
    return logger.call("logging the model file", logger.experiment.log_artifact, logger.run_id,
                       str(path), MODEL_ARTIFACT.rpartition("/")[0])
