"""Identities of files and of params: a file's sha256, and the fingerprint of the params a run
was started with (a change of either starts a new run instead of resuming; both are logged to
MLflow)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def file_sha256(path: str | Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def fingerprint(params: dict[str, Any]) -> str:
    """sha256 of ``params`` as canonical JSON (sorted keys; non-JSON values as their str)."""
    blob = json.dumps(params, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()
