"""PEP 562 lazy exports for a package ``__init__``: a name is imported from its submodule on first
use, so importing a light part of a package (the params schema's ``pipeline.models.variants``,
the prepare stage's ``pipeline.data.sources``) does not import the heavy rest.

    _EXPORTS = {"load_raw": "sources", ...}     # a dict literal: tests/importgraph.py reads it
    __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, exports: dict[str, str], namespace: dict[str, Any]
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module-level ``__getattr__`` and ``__dir__`` of ``package``: ``exports`` maps each
    exported name to the submodule that defines it; a looked-up value is cached in
    ``namespace`` (the package's globals)."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{exports[name]}"), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted([*namespace, *exports])

    return __getattr__, __dir__
