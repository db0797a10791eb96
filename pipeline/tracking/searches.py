"""A search in MLflow: one parent run per search (``tune <variant>/<budget>``), one child run per
trial with its params, its validation curve (``val/acc`` per epoch), its state (tag
``trial.state``: complete, pruned, failed; the run ends FINISHED, KILLED or FAILED) and its
compute (``trial/seconds``, ``trial/gflops``). The parent holds the protocol (space, sampler, K,
selection rule) as params, and at the end the chosen trial, its params (``chosen.*``) and the
search's cost. The trials of one search show in the UI as the parent's children, comparable as
runs with the same params and metric names.

A resumed search reopens its parent (its id kept in the search dir with the search's spec, and in
``trials.json``), and a trial already logged (tag ``trial.number``) is not logged twice; a search
started anew (its params, recipe or data changed) gets a parent of its own. A failure to log
is reported, not fatal: ``trials.json`` is the record.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from ..records import SearchRecord, TrialRecord
from .names import KIND, KIND_TAG, run_tags
from .uri import artifact_location, client

log = logging.getLogger(__name__)

PARENT_TAG = "mlflow.parentRunId"
ROLE_TAG = "pipeline.role"
RUN_FILE = "mlflow_run.json"  # in the search dir: the parent run's id, for a resumed search
END_STATUS = {"complete": "FINISHED", "pruned": "KILLED", "failed": "FAILED"}


class SearchRun:
    """The MLflow parent run of one search, created or reopened; each call logs or warns."""

    def __init__(self, experiment: str, name: str, search_dir: Path, params: dict,
                 spec: str = "") -> None:
        self.name = name
        self.run_id: str | None = None
        self.client = None
        self._logged: set[int] = set()
        try:
            self.client = client()
            exp = self.client.get_experiment_by_name(experiment)
            exp_id = exp.experiment_id if exp else self.client.create_experiment(
                experiment, artifact_location=artifact_location())
            self.client.set_experiment_tag(exp_id, KIND_TAG, KIND)
            self.experiment_id = exp_id
            saved = search_dir / RUN_FILE
            if saved.exists():
                state = json.loads(saved.read_text())
                run_id = state["run_id"] if state.get("spec") == spec else None
                if run_id is not None and self._exists(run_id):
                    self.run_id = run_id
                    self.client.update_run(run_id, status="RUNNING")
                    self._logged = self._trials_logged()
            if self.run_id is None:
                tags = {**run_tags("tune", name), ROLE_TAG: "search"}
                run = self.client.create_run(exp_id, run_name=f"tune {name}", tags=tags)
                self.run_id = run.info.run_id
                for key, value in params.items():
                    self.client.log_param(self.run_id, key, str(value)[:6000])
                search_dir.mkdir(parents=True, exist_ok=True)
                saved.write_text(json.dumps({"run_id": self.run_id, "spec": spec}) + "\n")
        except Exception as e:  # noqa: BLE001 - tracking must not stop the search
            self._give_up("opening the search's run", e)

    def _give_up(self, what: str, err: BaseException) -> None:
        log.warning("MLflow: %s failed (%s); the search goes on, trials.json is its record",
                    what, err)
        self.client = None

    def _exists(self, run_id: str) -> bool:
        try:
            self.client.get_run(run_id)
            return True
        except Exception:  # noqa: BLE001 - deleted or from another store
            return False

    def _trials_logged(self) -> set[int]:
        runs = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{self.run_id}'",
            max_results=1000)
        return {int(r.data.tags["trial.number"]) for r in runs if "trial.number" in r.data.tags}

    def log_trial(self, trial: TrialRecord) -> None:
        """One child run: the trial's params, validation curve, state and compute."""
        if self.client is None or trial.number in self._logged:
            return
        c = self.client
        try:
            tags = {**run_tags("tune", self.name), PARENT_TAG: self.run_id,
                    "trial.number": str(trial.number), "trial.state": trial.state}
            if trial.error:
                tags["error"] = trial.error[:5000]
            now = int(time.time() * 1000)  # logged when it ended: its duration is its own
            run = c.create_run(self.experiment_id, run_name=f"{self.name} trial {trial.number}",
                               tags=tags, start_time=now - int(trial.seconds * 1000))
            rid = run.info.run_id
            for key, value in trial.params.items():
                c.log_param(rid, key, value)
            for epoch, value in enumerate(trial.curve):
                c.log_metric(rid, "val/acc", value, step=epoch)
            metrics = {"trial/seconds": trial.seconds, "trial/gflops": trial.flops / 1e9,
                       "trial/epochs": trial.epochs}
            if trial.value is not None:
                metrics["val/acc_best"] = trial.value
            for key, value in metrics.items():
                c.log_metric(rid, key, float(value))
            c.set_terminated(rid, END_STATUS[trial.state], end_time=now)
            self._logged.add(trial.number)
        except Exception as e:  # noqa: BLE001
            self._give_up(f"logging trial {trial.number}", e)

    def finish(self, record: SearchRecord) -> None:
        """The chosen trial and the search's cost into the parent, which ends FINISHED."""
        if self.client is None:
            return
        c = self.client
        try:
            for trial in record.trials:
                self.log_trial(trial)
            metrics = {"search/trials": len(record.trials),
                       "search/pruned": sum(t.state == "pruned" for t in record.trials),
                       "search/failed": sum(t.state == "failed" for t in record.trials),
                       "search/seconds": sum(t.seconds for t in record.trials),
                       "search/gflops": sum(t.flops for t in record.trials) / 1e9}
            chosen = next((t for t in record.trials if t.number == record.chosen), None)
            if chosen is not None:
                metrics["val/acc_best"] = float(chosen.value)
                c.set_tag(self.run_id, "chosen.trial", str(chosen.number))
                for key, value in chosen.params.items():
                    c.set_tag(self.run_id, f"chosen.{key}", str(value))
            for key, value in metrics.items():
                c.log_metric(self.run_id, key, float(value))
            c.set_terminated(self.run_id, "FINISHED")
        except Exception as e:  # noqa: BLE001
            self._give_up("finishing the search's run", e)
