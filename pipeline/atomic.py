"""Write files whole or not at all: to a temporary sibling, then an atomic rename."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """``write(tmp)`` fills a temporary sibling of ``path``, which then replaces ``path``; on any
    failure ``path`` keeps what it had and no temporary file is left."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def atomic_write_json(path: str | Path, data: dict | list,
                      default: Callable[[object], object] | None = None) -> Path:
    """``data`` as indented JSON; ``default`` as ``json.dumps`` takes it (for values JSON has no
    type for)."""
    return atomic_write_text(path, json.dumps(data, indent=2, default=default) + "\n")
