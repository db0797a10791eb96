"""Resuming an interrupted training run: from its last checkpoint, into the same MLflow run.

A training stage's output dir holds ``last.ckpt`` / ``best.ckpt`` (Lightning), ``resume.json``
(the MLflow run and the fingerprint of the params it was started with, written when training
starts) and ``run.json`` (written last, when the run finished). On start, :func:`decide` reads them:

- an unfinished run with the same fingerprint and a ``last.ckpt``: resume from it (model,
  optimizer, LR schedule, epoch/step, freeze phase, AMP scaler, RNG state) in the same MLflow run;
- an unfinished run whose params changed, one that stopped before its first checkpoint, or
  ``PIPELINE_FRESH=1``: start afresh; its MLflow run, if still RUNNING, is ended KILLED with the
  reason, so no orphan is left RUNNING;
- a finished run (``run.json``): start afresh (DVC re-runs a stage only when something changed);
- files but no ``resume.json``: refuse, naming the dir; nothing is deleted on a guess.

The fingerprint is a hash of the params as logged to MLflow (which refuses changed values in an
existing run), including the data manifest and the pretrained weights' sha256. Resuming happens at
epoch granularity: a run killed mid-epoch repeats that epoch from its start, with the same batches.

:func:`decide` has no side effects, so every DDP rank can call it; :class:`Resumable` then clears
the dir and records the run on global rank 0 once the process group exists, and carries the RNG
state in the checkpoint (Lightning does not save it).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from ..atomic import atomic_write_json

log = logging.getLogger(__name__)

STATE = "resume.json"
FINISHED = "run.json"
LAST = "last.ckpt"
FRESH_ENV = "PIPELINE_FRESH"


class ResumeError(RuntimeError):
    """The output dir is in a state we will not guess about; the message names it."""


def fingerprint(logged_params: dict[str, Any]) -> str:
    blob = json.dumps(logged_params, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def file_sha256(path: str | Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def fresh_requested() -> bool:
    return os.environ.get(FRESH_ENV, "").strip().lower() in ("1", "true", "yes")


@dataclass(frozen=True)
class Start:
    """How a training run starts: from ``ckpt_path`` in MLflow run ``run_id`` (both None: afresh).
    ``clear``: the dir's old contents go first; ``abandon``: a previous run to end KILLED, why."""

    out_dir: Path
    fingerprint: str
    ckpt_path: Path | None = None
    run_id: str | None = None
    tracking_uri: str | None = None
    clear: bool = False
    abandon: tuple[dict[str, Any], str] | None = None

    @property
    def resuming(self) -> bool:
        return self.ckpt_path is not None


def read_state(out_dir: Path) -> dict[str, Any] | None:
    path = out_dir / STATE
    if not path.exists():
        return None
    try:
        state = json.loads(path.read_text())
        if not isinstance(state, dict) or not {"fingerprint", "run_id"} <= state.keys():
            raise ValueError("missing 'fingerprint' or 'run_id'")
    except (OSError, ValueError) as e:
        raise ResumeError(
            f"{path} is unreadable ({e}); delete {out_dir} or set {FRESH_ENV}=1 to train afresh"
        ) from e
    return state


def decide(out_dir: str | Path, fp: str, *, fresh: bool = False) -> Start:
    """Resume or start afresh in ``out_dir`` for params with fingerprint ``fp``; no side effects."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir() or not any(out_dir.iterdir()):
        return Start(out_dir, fp)
    finished = (out_dir / FINISHED).exists()
    state = None if (finished and fresh) else read_state(out_dir)
    if finished:
        log.info("%s holds a finished run; training afresh", out_dir)
        return Start(out_dir, fp, clear=True)
    if state is None:
        if fresh:
            return Start(out_dir, fp, clear=True)
        raise ResumeError(
            f"{out_dir} holds files but no {STATE}, so what they were trained with is unknown; "
            f"move them away, or set {FRESH_ENV}=1 to delete them and train afresh"
        )
    if fresh:
        return Start(out_dir, fp, clear=True, abandon=(state, f"fresh start asked ({FRESH_ENV})"))
    if state["fingerprint"] != fp:
        log.warning("%s: params changed since run %s started; training afresh in a new run",
                    out_dir, state["run_id"])
        return Start(out_dir, fp, clear=True,
                     abandon=(state, "params changed; a new run was started"))
    last = out_dir / LAST
    if not last.exists():
        log.warning("%s: run %s stopped before its first checkpoint; nothing to resume from, "
                    "training from the start in a new run", out_dir, state["run_id"])
        return Start(out_dir, fp, clear=True,
                     abandon=(state, "stopped before its first checkpoint; restarted"))
    return Start(out_dir, fp, ckpt_path=last, run_id=state["run_id"],
                 tracking_uri=state.get("tracking_uri"))


def clear_dir(out_dir: Path) -> None:
    for child in out_dir.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def abandon_run(state: dict[str, Any], reason: str) -> None:
    """End a previous run KILLED (with the reason as its ``error`` tag) if it is still RUNNING;
    an unreachable store only costs a warning."""
    from mlflow import MlflowClient

    try:
        client = MlflowClient(state.get("tracking_uri"))
        if client.get_run(state["run_id"]).info.status == "RUNNING":
            client.set_tag(state["run_id"], "error", f"abandoned: {reason}")
            client.set_terminated(state["run_id"], "KILLED")
            log.warning("MLflow run %s ended KILLED: %s", state["run_id"], reason)
    except Exception as e:  # noqa: BLE001 - marking an old run must not stop a new one
        log.warning("could not mark MLflow run %s KILLED (%s): %s", state["run_id"], reason, e)


def rng_state() -> dict[str, Any]:
    """Every global RNG, in types a ``weights_only`` load accepts (no numpy arrays)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["gauss"]))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Resumable(Callback):
    """Applies a :class:`Start` on global rank 0 once the process group exists: ends an abandoned
    run, clears the dir, creates (or reopens) the MLflow run with its params and records it in
    ``resume.json`` at once, so a kill cannot leave a run that no ``resume.json`` knows. Saves
    and restores the RNG state and the training time in every checkpoint."""

    def __init__(self, start: Start, logger, hparams: dict[str, Any], tracking_uri: str,
                 tags: dict[str, str] | None = None, group=None) -> None:
        self.start = start
        self.group = group  # a tracking.Group: a new run becomes a child of its parent run
        self.logger = logger
        self.hparams = hparams
        self.tracking_uri = tracking_uri
        self.tags = tags or {}
        self.earlier_seconds = 0.0  # training time of the sessions before a resume
        self.session_start = time.perf_counter()

    def train_seconds(self) -> float:
        """Training time up to now, over all sessions (up to each one's last checkpoint)."""
        return self.earlier_seconds + time.perf_counter() - self.session_start

    @property
    def state_key(self) -> str:
        return "Resumable"

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage != "fit" or not trainer.is_global_zero:
            return
        start = self.start
        if start.abandon is not None:
            abandon_run(*start.abandon)
        if start.clear:
            clear_dir(start.out_dir)
        start.out_dir.mkdir(parents=True, exist_ok=True)
        self.logger.log_hyperparams(self.hparams)  # creates the run (a resumed one exists)
        for key, value in self.tags.items():
            self.logger.experiment.set_tag(self.logger.run_id, key, value)
        if self.group is not None:
            self._adopt_parent()
        atomic_write_json(start.out_dir / STATE, {
            "fingerprint": start.fingerprint, "run_id": self.logger.run_id,
            "experiment_id": self.logger.experiment_id, "tracking_uri": self.tracking_uri})

    def _adopt_parent(self) -> None:
        """Make the run a child of its comparison's parent run (created if need be). Lightning
        has created the run by now (it touches ``logger.experiment`` before any callback's
        setup), so the parent is a tag set afterwards; a resumed run keeps the parent it has."""
        from .tracking import GROUP_TAG, PARENT_TAG, comparison_parent

        client, run_id = self.logger.experiment, self.logger.run_id
        if PARENT_TAG in client.get_run(run_id).data.tags:
            return
        parent = comparison_parent(client, self.logger.experiment_id, self.group)
        client.set_tag(run_id, PARENT_TAG, parent)
        client.set_tag(run_id, GROUP_TAG, self.group.key)

    def on_train_start(self, trainer, pl_module) -> None:
        self.session_start = time.perf_counter()

    def state_dict(self) -> dict[str, Any]:
        return {"rng": rng_state(), "train_seconds": self.train_seconds()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        set_rng_state(state_dict["rng"])
        self.earlier_seconds = float(state_dict["train_seconds"])
