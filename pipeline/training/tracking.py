"""MLflow tracking: where runs go, how they are tagged, and the Lightning logger for a variant.

The tracking URI is explicit: ``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<project>/mlflow.db``
with an absolute path. ``<project>`` is DVC's ``DVC_ROOT``, which DVC points at the parent repo even
for ``dvc exp run --temp`` / ``--queue`` runs (they execute in a copy under ``.dvc/tmp/exps``), so
every run lands in one database; outside DVC it is the current directory. Artifacts go to
``mlartifacts/`` beside the database for the same reason. View with
``mlflow ui --backend-store-uri sqlite:///mlflow.db``.

A training run knows nothing of the comparison it will be part of: the evaluate stage, which is
the one stage that sees every variant, puts the runs under the comparison's parent run
(:mod:`pipeline.comparison`).
"""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException

from ..comparison import KIND, KIND_TAG
from ..data.lineage import log_datasets
from ..errors import TrackingError
from ..store import artifact_location, git_commit, tracking_uri

log = logging.getLogger(__name__)


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
    from mlflow import MlflowClient

    with FileLock(str(db) + ".lock", timeout=120):
        MlflowClient(uri).search_experiments(max_results=1)


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
        # also a spool left by an earlier session of a resumed run
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


class TrainingContext(Callback):
    """What a training run ran on, in its MLflow run (global rank 0, once Resumable has set the
    run up): the prepared data as dataset inputs, and the machine through MLflow's own
    system-metrics monitor while fitting (``system/cpu_utilization_percentage``,
    ``system/system_memory_usage_megabytes``, disk, network and, where nvidia-ml-py finds a GPU,
    ``system/gpu_0_utilization_percentage`` and its memory) every ``interval`` seconds
    (``MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL`` overrides it). ``mlflow.start_run``'s
    ``log_system_metrics`` does not apply: Lightning creates the run through the client.

    The monitor is stopped and flushed before Lightning ends the run: on success, failure,
    SIGTERM or Ctrl-C; a resumed run continues its steps. A lost server ends only the monitor's
    thread, and is not waited for."""

    def __init__(self, logger: RunLogger, data_dir: Path, interval: float = 2.0) -> None:
        self.logger, self.data_dir, self.interval = logger, data_dir, interval
        self.monitor = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage == "fit" and trainer.is_global_zero:
            client = self.logger.experiment
            # the UI opens the experiment on its runs (model training), not on GenAI traces
            self.logger.call("tagging the experiment", client.set_experiment_tag,
                             self.logger.experiment_id, KIND_TAG, KIND)
            self.logger.call("logging the datasets", log_datasets, client,
                             self.logger.run_id, self.data_dir)

    def on_fit_start(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero or self.logger.lost is not None:
            return
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        try:
            monitor = SystemMetricsMonitor(self.logger.run_id, sampling_interval=self.interval,
                                           resume_logging=True, tracking_uri=tracking_uri())
            monitor.start()
            self.monitor = monitor
        except Exception as e:  # noqa: BLE001 - no system metrics is no reason to stop training
            log.warning("no system metrics for MLflow run %s: %s", self.logger.run_id, e)

    def _stop(self) -> None:
        monitor, self.monitor = self.monitor, None
        if monitor is not None and self.logger.lost is None:
            monitor.finish()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self._stop()

    def teardown(self, trainer, pl_module, stage: str) -> None:
        self._stop()


class RecordFailure(Callback):
    """Hands the exception to our loggers; Lightning calls this before it finalizes them."""

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, RunLogger):
                logger.failure = exception


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


def run_exists(run_id: str, uri: str | None = None) -> bool:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        MlflowClient(uri or tracking_uri()).get_run(run_id)
        return True
    except MlflowException:
        return False
