"""Write files whole or not at all: to a temporary sibling, then an atomic rename; and a set of
outputs (files and dirs) as a whole: filled in a staging dir, then moved into place."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
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


STAGING_PREFIX = ".new-"  # a dir being filled, beside what it will replace
OLD_PREFIX = ".old-"  # what it replaced, until the new one is in place


def staging_dir(parent: str | Path) -> Path:
    """A fresh dir in ``parent`` to write a set of outputs into before :func:`publish` puts them
    in place; what a killed run left of earlier ones is put back or removed first
    (:func:`recover`)."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    recover(parent)
    return Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=parent))


def publish(staging: str | Path, parent: str | Path) -> list[Path]:
    """Move every entry of ``staging`` (files and dirs) into ``parent``, each replacing the entry
    of its name; returns the paths written. A file is replaced by one rename; a dir by two (the
    old one aside, the new one in), so a process killed between them leaves the old one aside,
    and :func:`recover` puts it back. ``staging`` is removed."""
    staging, parent = Path(staging), Path(parent)
    written = []
    for entry in sorted(staging.iterdir()):
        target = parent / entry.name
        if entry.is_dir():
            old = parent / f"{OLD_PREFIX}{entry.name}"
            if old.exists():
                shutil.rmtree(old)
            if target.exists():
                os.rename(target, old)
            os.rename(entry, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(entry, target)
        written.append(target)
    shutil.rmtree(staging, ignore_errors=True)
    return written


def recover(parent: str | Path) -> None:
    """Undo what a killed :func:`publish` or a killed writer left in ``parent``: an old dir set
    aside whose replacement never arrived goes back; staging dirs and old dirs that were replaced
    are removed."""
    parent = Path(parent)
    if not parent.is_dir():
        return
    for entry in parent.iterdir():
        if entry.name.startswith(OLD_PREFIX):
            target = parent / entry.name[len(OLD_PREFIX):]
            if target.exists():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                os.rename(entry, target)
        elif entry.name.startswith(STAGING_PREFIX) and entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
