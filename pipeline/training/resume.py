"""Resuming an interrupted training run: from its last checkpoint, into the same MLflow run.

A training stage's output dir holds ``last.ckpt`` / ``best.ckpt`` (Lightning), ``resume.json``
(the MLflow run and the fingerprint of the params it was started with, written when training
starts) and ``run.json`` (written last, when the run finished). On start, :func:`decide` reads them:

- an unfinished run with the same fingerprint and a ``last.ckpt``: resume from it (model,
  optimizer, LR schedule, epoch/step, freeze phase, AMP scaler, RNG state) in the same MLflow run;
- an unfinished run whose params changed, one that stopped before its first checkpoint, or
  ``PIPELINE_FRESH=1``: start afresh; its MLflow run, if still RUNNING, is ended KILLED with the
  reason, so no orphan is left RUNNING;
- a finished run (``run.json``): kept when it was trained with the same fingerprint and the same
  code (``code``: :func:`pipeline.hashing.code_digest`, recorded in ``run.json``): a stage that
  trains every seed of a (variant, budget) runs again when a seed is added, and only the new one
  trains; otherwise start afresh;
- files but no ``resume.json``: refuse, naming the dir; nothing is deleted on a guess;
- a ``resume.json`` or ``last.ckpt`` that is truncated or corrupt: refuse, with one line naming
  the file and the way out (``PIPELINE_FRESH=1``), before Lightning fails on it; nothing is deleted.

The fingerprint is a hash of the params as logged to MLflow (which refuses changed values in an
existing run), including the data manifest and the pretrained weights' sha256. Resuming happens at
epoch granularity: a run killed mid-epoch repeats that epoch from its start, with the same batches.

:func:`decide` has no side effects, so every DDP rank can call it; :class:`Resumable` then clears
the dir and records the run on global rank 0 once the process group exists, and carries the RNG
state in the checkpoint (Lightning does not save it).
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from ..atomic import atomic_write_json
from ..errors import ResumeError, one_line
from ..layout import BEST_CKPT, LAST_CKPT, RESUME_FILE, RUN_FILE
from ..tracking.runs import abandon_run

log = logging.getLogger(__name__)

FRESH_ENV = "PIPELINE_FRESH"
# what Lightning's ``trainer.fit(ckpt_path=...)`` reads from a full (not weights-only) checkpoint
RESUME_KEYS = ("state_dict", "epoch", "global_step", "loops", "optimizer_states")


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
    finished: bool = False  # the run in out_dir is done, with these params and this code: keep it

    @property
    def resuming(self) -> bool:
        return self.ckpt_path is not None


def _way_out(out_dir: Path) -> str:
    """What to do about an unreadable ``resume.json`` / ``last.ckpt`` in ``out_dir``."""
    best = out_dir / BEST_CKPT
    keep = f" (move {best} away first to keep it)" if best.exists() else ""
    return (f"nothing was deleted; set {FRESH_ENV}=1 to train afresh in a new MLflow run, "
            f"which clears {out_dir}{keep}")


def read_state(out_dir: Path) -> dict[str, Any] | None:
    """``out_dir``'s ``resume.json``, None if there is none; ResumeError (one line naming the
    file and the way out) if it is truncated, not UTF-8, not an object or lacks a key."""
    path = out_dir / RESUME_FILE
    if not path.exists():
        return None
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(state, dict):
            raise ValueError(f"a JSON {type(state).__name__}, not an object")
        missing = [k for k in ("fingerprint", "run_id")
                   if not isinstance(state.get(k), str) or not state[k]]
        if missing:
            raise ValueError(f"no {' or '.join(map(repr, missing))} string")
        if not isinstance(state.get("tracking_uri"), (str, type(None))):
            raise ValueError(f"tracking_uri is not a string: {state['tracking_uri']!r}")
    except (OSError, ValueError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ResumeError(
            f"{path} is unreadable ({one_line(e)}), so the run in {out_dir} cannot be resumed; "
            f"{_way_out(out_dir)}"
        ) from e
    return state


def _load_error(e: BaseException) -> str:
    """A failed ``torch.load``'s reason, short: the gist of a ``weights_only`` refusal, not the
    advice around it (to load the file unsafely)."""
    text = str(e)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation")[0]
    return f"{type(e).__name__}: {one_line(text, 120)}"


def check_checkpoint(path: Path) -> str | None:
    """What is wrong with the checkpoint ``path`` for a resume ("truncated (...)", ...), or None
    if Lightning can resume from it. A zip without its directory, which sits at the end, is
    truncated (a full disk, a half copy); otherwise the file is loaded as Lightning loads it
    (``weights_only``) but memory-mapped, so its tensors are not read (a few ms for a 100 MB
    checkpoint), and must hold the keys a resume needs. Damage inside tensor data goes unseen,
    as does a sharded checkpoint (a dir: DeepSpeed's), which is left to Lightning."""
    if path.is_dir():
        return None if any(path.iterdir()) else "an empty directory"
    try:
        with open(path, "rb") as f:
            head = f.read(4)
        if not head:
            return "empty (no data)"
        if head == b"PK\x03\x04" and not zipfile.is_zipfile(path):
            return "truncated (its zip directory is missing)"
    except OSError as e:
        return f"unreadable ({type(e).__name__}: {one_line(e.strerror or e)})"
    try:
        if head.startswith(b"PK"):  # the zip format Lightning writes
            ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        else:  # torch's legacy format (cannot be memory-mapped: read whole), or garbage
            try:
                ckpt = torch.load(path, map_location="cpu", weights_only=True)
            except Exception:  # noqa: BLE001 - garbage makes the unpickler fail at random
                return f"corrupt or not a checkpoint (not a PyTorch file: it starts with {head!r})"
    except Exception as e:  # noqa: BLE001 - unpickling a damaged file raises many types
        return f"corrupt or not a checkpoint ({_load_error(e)})"
    if not isinstance(ckpt, dict):
        return f"not a Lightning checkpoint (it holds a {type(ckpt).__name__})"
    missing = [k for k in RESUME_KEYS if k not in ckpt]
    if missing:
        return (f"not a full Lightning training checkpoint (no {', '.join(missing)}: "
                "a weights-only one?)")
    return None


def _same_finished_run(out_dir: Path, fp: str, code: str | None) -> bool:
    """``out_dir`` holds a finished run of params ``fp`` trained by code ``code``."""
    if code is None:
        return False
    try:
        state = read_state(out_dir)
        record = json.loads((out_dir / RUN_FILE).read_text())
    except (ResumeError, OSError, ValueError):
        return False
    return (state is not None and state.get("fingerprint") == fp
            and isinstance(record, dict) and record.get("code_sha256") == code)


def decide(out_dir: str | Path, fp: str, *, fresh: bool = False,
           code: str | None = None) -> Start:
    """Resume or start afresh in ``out_dir`` for params with fingerprint ``fp``; no side effects.
    ResumeError, deleting nothing, if the files of the run to resume cannot be read. With
    ``code``, a finished run of the same params and code is kept (``finished``)."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir() or not any(out_dir.iterdir()):
        return Start(out_dir, fp)
    if (out_dir / RUN_FILE).exists():
        if not fresh and _same_finished_run(out_dir, fp, code):
            log.info("%s holds a finished run of the same params and code; kept", out_dir)
            return Start(out_dir, fp, finished=True)
        log.info("%s holds a finished run; training afresh", out_dir)
        return Start(out_dir, fp, clear=True)
    try:
        state = read_state(out_dir)
    except ResumeError:
        if not fresh:
            raise
        # the way out the error names: afresh, the run it named (unknown) left as it is
        log.warning("%s is unreadable; training afresh (%s=1); the MLflow run it named, if "
                    "still RUNNING, cannot be ended KILLED", out_dir / RESUME_FILE, FRESH_ENV)
        return Start(out_dir, fp, clear=True)
    if state is None:
        if fresh:
            return Start(out_dir, fp, clear=True)
        raise ResumeError(
            f"{out_dir} holds files but no {RESUME_FILE}, so what they were trained with is "
            f"unknown; move them away, or set {FRESH_ENV}=1 to delete them and train afresh"
        )
    if fresh:
        return Start(out_dir, fp, clear=True, abandon=(state, f"fresh start asked ({FRESH_ENV})"))
    if state["fingerprint"] != fp:
        log.warning("%s: params changed since run %s started; training afresh in a new run",
                    out_dir, state["run_id"])
        return Start(out_dir, fp, clear=True,
                     abandon=(state, "params changed; a new run was started"))
    last = out_dir / LAST_CKPT
    if not last.exists():
        log.warning("%s: run %s stopped before its first checkpoint; nothing to resume from, "
                    "training from the start in a new run", out_dir, state["run_id"])
        return Start(out_dir, fp, clear=True,
                     abandon=(state, "stopped before its first checkpoint; restarted"))
    why = check_checkpoint(last)
    if why is not None:  # Lightning would fail on it inside trainer.fit, with a traceback
        raise ResumeError(
            f"{last} is {why}, so MLflow run {state['run_id']} cannot resume from it; "
            f"{_way_out(out_dir)}"
        )
    return Start(out_dir, fp, ckpt_path=last, run_id=state["run_id"],
                 tracking_uri=state.get("tracking_uri"))


def clear_dir(out_dir: Path) -> None:
    for child in out_dir.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


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
                 tags: dict[str, str] | None = None) -> None:
        self.start = start
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
        atomic_write_json(start.out_dir / RESUME_FILE, {
            "fingerprint": start.fingerprint, "run_id": self.logger.run_id,
            "experiment_id": self.logger.experiment_id, "tracking_uri": self.tracking_uri})

    def on_train_start(self, trainer, pl_module) -> None:
        self.session_start = time.perf_counter()

    def state_dict(self) -> dict[str, Any]:
        return {"rng": rng_state(), "train_seconds": self.train_seconds()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        set_rng_state(state_dict["rng"])
        self.earlier_seconds = float(state_dict["train_seconds"])
