"""benchmarks/ is a folder of scripts, not a package: a test imports one as a module for as long
as it needs it, and forgets it afterwards, so each test module gets a fresh copy."""

from __future__ import annotations

import contextlib
import importlib
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@contextlib.contextmanager
def benchmark_module(name: str, mp: pytest.MonkeyPatch | None = None):
    """``benchmarks/<name>.py`` imported, with ``benchmarks/`` first on ``sys.path`` (through
    ``mp``, a test's own monkeypatch, or one of its own) while the block runs."""
    with contextlib.ExitStack() as stack:
        if mp is None:
            mp = stack.enter_context(pytest.MonkeyPatch.context())
        mp.syspath_prepend(str(BENCHMARKS))
        sys.modules.pop(name, None)
        module: ModuleType = importlib.import_module(name)
        try:
            yield module
        finally:
            sys.modules.pop(name, None)
