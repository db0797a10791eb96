"""The records a training run leaves beside its model file: typed, versioned, round-tripping.

- :class:`RunRecord`, ``run.json``: written last by training (its presence means the run
  finished): the MLflow run, the best validation score, the checkpoints, timing, and what the run
  trained on (labelled images, passes per epoch, optimizer steps).
- :class:`History`, ``history.json``: one :class:`EpochRow` per finished epoch, rewritten after
  each validation, for the report's curves.
- :class:`SearchRecord`, a search's ``trials.json``: every :class:`TrialRecord` (params, state,
  validation curve, compute) and the protocol; :class:`Choice`, ``chosen.json`` beside it: what
  the tuned cells train (:mod:`pipeline.tuning.search`).

Each is one pydantic model (strict: no coercion, no unknown keys), written by its ``write`` and
read back by its ``read``, the same code both ways, with a ``version`` field. A file that is
missing, truncated, not a record of this pipeline, of another version, or holding a bad value
stops the reader with one line (:class:`~pipeline.errors.RecordError`) naming the file and how to
write it again. The file names are the layout's (:mod:`pipeline.layout`).

    >>> RunRecord(run_id=None, ..., labelled=300).write(cell_dir)
    >>> RunRecord.read(cell_dir).best_val_acc
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from .atomic import atomic_write_text
from .errors import RecordError, one_line
from .layout import CHOSEN_FILE, HISTORY_FILE, RUN_FILE, TRIALS_FILE


def rerun_hint(run_dir: Path) -> str:
    """How a training run's dir is written again."""
    return (f"delete {run_dir} and re-run the stage that trains it (dvc repro), or train it "
            "again with PIPELINE_FRESH=1")


class _Record(BaseModel):
    """A versioned JSON record in a run's dir: ``FILE``, ``VERSION``, ``WHAT`` (in messages)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    FILE: ClassVar[str]
    VERSION: ClassVar[int]
    WHAT: ClassVar[str]

    version: int

    def write(self, run_dir: str | Path) -> Path:
        """``<run_dir>/<FILE>``, atomically (NaN kept as JSON's ``NaN``)."""
        text = json.dumps(self.model_dump(mode="python"), indent=2) + "\n"
        return atomic_write_text(Path(run_dir) / self.FILE, text)

    @classmethod
    def read(cls, run_dir: str | Path):
        """The record in ``<run_dir>/<FILE>``; RecordError (one line) for anything else."""
        run_dir = Path(run_dir)
        path = run_dir / cls.FILE
        rerun = rerun_hint(run_dir)
        try:
            text = path.read_text(encoding="utf-8")
            data = json.loads(text)
        except FileNotFoundError:
            raise RecordError(f"no {path}: train that run first (dvc repro)") from None
        except (OSError, ValueError) as e:  # UnicodeDecodeError, JSONDecodeError: ValueErrors
            raise RecordError(f"{path} is truncated or corrupt ({one_line(e)}); {rerun}") from None
        if not isinstance(data, dict) or "version" not in data:
            what = type(data).__name__ if not isinstance(data, dict) else "object without version"
            raise RecordError(f"{path} is not a {cls.WHAT} of this pipeline (a JSON {what}: "
                              f"written by an older version of it, or not by it); {rerun}")
        if data["version"] != cls.VERSION:
            raise RecordError(f"{path} is a {cls.WHAT} of version {data['version']!r}; this "
                              f"pipeline reads version {cls.VERSION}; {rerun}")
        try:
            return cls.model_validate_json(text)  # strict, as JSON: arrays are tuples
        except ValidationError as e:
            err = e.errors()[0]
            key = ".".join(str(p) for p in err["loc"]) or "(top level)"
            value = err.get("input")
            raise RecordError(f"{path}: {key} is {one_line(repr(value), 60)}, not a valid value "
                              f"({err['msg']}); {rerun}") from None


class RunRecord(_Record):
    """``run.json``: a finished training run."""

    FILE: ClassVar[str] = RUN_FILE
    VERSION: ClassVar[int] = 1
    WHAT: ClassVar[str] = "run record"

    version: int = VERSION
    run_id: str | None  # the MLflow run (None on the ranks other than global rank 0)
    experiment_id: str | None
    tracking_uri: str
    best_ckpt: str  # file names in the run's dir
    last_ckpt: str
    model_file: str  # the trained-model file (what evaluate, predict, fine-tuning read)
    best_val_acc: float
    epochs: int
    train_seconds: float
    num_params: int
    labelled: int  # labelled training images (the budget's subset, or the whole split)
    passes: int = 1  # passes over them per epoch (more under a min_steps floor)
    steps: int = 0  # optimizer steps taken
    tracking_outage: str | None = None  # why MLflow was given up on during the run, if it was
    # the code that trained it (pipeline.hashing.code_digest; None: not recorded): a finished
    # cell with the same params and code is kept when its stage runs again for another seed
    code_sha256: str | None = None


class EpochRow(BaseModel):
    """One finished epoch; NaN where a value was not logged."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    epoch: int
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    lr: float  # the head's learning rate at the end of the epoch


class History(_Record):
    """``history.json``: the epochs of a training run, in order, one row each."""

    FILE: ClassVar[str] = HISTORY_FILE
    VERSION: ClassVar[int] = 1
    WHAT: ClassVar[str] = "history record"

    version: int = VERSION
    epochs: tuple[EpochRow, ...] = ()

    @classmethod
    def read_if_present(cls, run_dir: str | Path) -> History:
        """As :meth:`read`, but an empty history when there is no file (the report then draws
        no curves for that run)."""
        return cls.read(run_dir) if (Path(run_dir) / cls.FILE).is_file() else cls()

    def with_row(self, row: EpochRow) -> History:
        """The rows of the epochs before ``row``'s, then ``row`` (a resumed epoch replaces its
        earlier row)."""
        return History(epochs=(*(r for r in self.epochs if r.epoch < row.epoch), row))


Scalar = float | int | bool | str | None


class TrialRecord(BaseModel):
    """One trial of a search: its params, how it ended and what it cost."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    number: int
    params: dict[str, Scalar]
    state: str  # complete | pruned | failed
    value: float | None  # best validation top-1 over its epochs (None: failed before one)
    curve: list[float]  # validation top-1 per epoch run
    epochs: int  # epochs run
    planned_epochs: int  # the trial's length had it not been pruned
    seconds: float
    flops: float  # training FLOPs spent
    flops_per_epoch: float
    error: str | None = None  # why a failed trial failed


class SearchRecord(_Record):
    """``trials.json``: one search's protocol and every trial it counted."""

    FILE: ClassVar[str] = TRIALS_FILE
    VERSION: ClassVar[int] = 1
    WHAT: ClassVar[str] = "search record"

    version: int = VERSION
    arm: str  # scratch | finetune
    variant: str
    budget: str
    sampler: str  # random | tpe | grid
    sampler_seed: int
    trials_requested: int  # K
    objective: str
    space: dict[str, dict]  # key -> {"low", "high", "log", "integer"} or {"choices"}
    validation: str  # budget | full
    val_images: int  # validation images the trials selected on
    train_seed: int
    epochs: int  # per trial, as planned
    pruning: dict | None  # the median rule's settings; None: off
    trials: list[TrialRecord]
    chosen: int | None  # the chosen trial's number (None: no trial completed)
    run_id: str | None = None  # the MLflow parent run


class Choice(_Record):
    """``chosen.json``: what a search chose, which the tuned cells train (over every seed)."""

    FILE: ClassVar[str] = CHOSEN_FILE
    VERSION: ClassVar[int] = 1
    WHAT: ClassVar[str] = "search choice"

    version: int = VERSION
    variant: str
    budget: str
    overrides: dict[str, Scalar]  # dotted recipe keys -> the chosen values
    value: float  # its best validation top-1 in the search
    trial: int
    trials: int  # trials the search counted
