"""Every error a user can fix from its message alone, in one light module (no torch, Lightning or
MLflow), so that a stage's CLI can catch them all without importing the layers that raise them.

Each message names the bad thing (a file, a key, a value) and the way out; the stage CLIs
(:mod:`pipeline.stages._cli`) print it as one line and exit 2, without a traceback.
"""

from __future__ import annotations


class ParamsError(ValueError):
    """params.yaml is missing, unreadable or invalid; the message names every bad key."""


class DataError(Exception):
    """A data file is missing, corrupt or inconsistent; the message names the file."""


class CheckpointError(Exception):
    """A checkpoint or model file that cannot be read or does not fit the model; the message
    names the file and says why."""


class TrackingError(RuntimeError):
    """The MLflow tracking store cannot be used; the message names the URI."""


class ResumeError(RuntimeError):
    """An interrupted run cannot be resumed as it is; the message names the dir and the way out."""


class RecordError(ValueError):
    """A file the pipeline wrote and reads back (``run.json``, ``history.json``, ``cells.json``)
    is missing, truncated or corrupt; the message names the file and the stage that rewrites it."""


def one_line(text: object, limit: int = 160) -> str:
    """``text`` on one line (runs of whitespace, newlines included, become one space), cut to
    ``limit`` characters: nested exception texts can be long and span lines."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


USER_ERRORS = (ParamsError, DataError, CheckpointError, TrackingError, ResumeError, RecordError,
               FileNotFoundError)
