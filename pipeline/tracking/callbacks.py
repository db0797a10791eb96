"""The Lightning callbacks of a training run's tracking: what the run ran on (the prepared splits
as MLflow datasets, the machine through MLflow's system-metrics monitor) and the error that ended
it, handed to :class:`~pipeline.tracking.logger.RunLogger` before Lightning finalizes it."""

from __future__ import annotations

import logging
from pathlib import Path

from lightning.pytorch.callbacks import Callback

from .datasets import log_datasets
from .logger import RunLogger
from .names import KIND, KIND_TAG
from .uri import tracking_uri

log = logging.getLogger(__name__)


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
