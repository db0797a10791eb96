"""The JSON records a training run leaves beside its model file, and reading them back.

``run.json`` (written last by :func:`pipeline.training.run.fit`: the run finished) and
``history.json`` (one row per epoch, :mod:`pipeline.training.history`) are written by training and
read by evaluation; their names and readers live here, in a light module, so that evaluation does
not import the training layer. A record that is truncated or corrupt stops the reader with one
line (:class:`~pipeline.errors.RecordError`) naming the file and the stage that rewrites it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .errors import RecordError

RUN = "run.json"
HISTORY = "history.json"
# run.json keys that evaluation needs, with their types
RUN_KEYS = {"run_id": (str, type(None)), "model_file": str, "best_val_acc": (int, float),
            "epochs": int, "train_seconds": (int, float), "labelled": int}
HISTORY_KEYS = ("epoch", "train/loss", "train/acc", "val/loss", "val/acc", "lr")


def read_json(path: Path, *, rerun: str) -> Any:
    """The JSON in ``path``; RecordError naming it and ``rerun`` (how to write it again)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RecordError(f"no {path}: {rerun}") from None
    except (OSError, ValueError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise RecordError(f"{path} is truncated or corrupt ({why}); {rerun}") from None


def _rerun(model_dir: Path) -> str:
    return (f"delete {model_dir} and re-run the stage that trains it (dvc repro), or train it "
            "again with PIPELINE_FRESH=1")


def read_run(model_dir: str | Path) -> dict[str, Any]:
    """``<model_dir>/run.json``, checked to hold what evaluation needs."""
    model_dir = Path(model_dir)
    path = model_dir / RUN
    if not path.is_file():
        raise RecordError(f"no {path}: train that run first (dvc repro)")
    run = read_json(path, rerun=_rerun(model_dir))
    if not isinstance(run, dict):
        raise RecordError(f"{path} holds a {type(run).__name__}, not a run record; "
                          f"{_rerun(model_dir)}")
    for key, types in RUN_KEYS.items():
        if not isinstance(run.get(key), types) or isinstance(run.get(key), bool):
            raise RecordError(f"{path}: {key} is {run.get(key)!r}, not a valid value; "
                              f"{_rerun(model_dir)}")
    return run


def read_history(model_dir: str | Path) -> list[dict[str, float]]:
    """The per-epoch rows of ``<model_dir>/history.json``; [] when there is none (the report then
    has no curves for that variant); RecordError when it is corrupt."""
    model_dir = Path(model_dir)
    path = model_dir / HISTORY
    if not path.is_file():
        return []
    rows = read_json(path, rerun=_rerun(model_dir))
    ok = isinstance(rows, list) and all(
        isinstance(r, dict) and isinstance(r.get("epoch"), int)
        and all(isinstance(r.get(k), (int, float)) or r.get(k) is None for k in HISTORY_KEYS[1:])
        for r in rows)
    if not ok:
        raise RecordError(f"{path} is not a list of per-epoch rows with {list(HISTORY_KEYS)}; "
                          f"{_rerun(model_dir)}")
    return [{k: (math.nan if v is None else v) for k, v in r.items()} for r in rows]
