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


def code_digest(package: str = "pipeline") -> str:
    """sha256 over the source of every module of ``package`` imported so far (names and bytes,
    in name order). Called where a stage starts, it identifies the code that stage runs: the
    modules its imports reach, the files ``dvc.yaml`` lists as its deps."""
    import sys

    h = hashlib.sha256()
    for name in sorted(n for n in list(sys.modules) if n == package
                       or n.startswith(package + ".")):
        path = getattr(sys.modules[name], "__file__", None)
        if path and path.endswith(".py") and Path(path).is_file():
            h.update(name.encode() + b"\0" + Path(path).read_bytes() + b"\0")
    return h.hexdigest()
