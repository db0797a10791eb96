"""A static import graph of one package, read with :mod:`ast` (nothing is imported).

Which files of the package run when a module is imported: module-level imports and imports inside
functions (a lazy import still runs when the function does), absolute and relative forms, parent
packages (``import a.b.c`` runs ``a/__init__.py`` and ``a/b/__init__.py``), ``from pkg import sub``
where ``sub`` is a submodule, and PEP 562 lazy exports: a package whose ``__init__.py`` holds a
module-level dict literal ``_EXPORTS = {"name": "submodule", ...}`` imports
``pkg.<_EXPORTS[name]>`` on ``from pkg import name``. ``if TYPE_CHECKING:`` bodies never run and
add no edges (their imports of other packages are kept, flagged, in :attr:`ImportGraph.external`).
Dynamic imports (``importlib.import_module`` with a computed name) are not seen, except through
``_EXPORTS``.

Used by tests/unit/test_dvc_deps.py (dvc.yaml's deps are what each stage runs); tested there on a
toy package. The layer rules and cycles are import-linter's (pyproject.toml).
"""

from __future__ import annotations

import ast
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Edge:
    """Importing ``source`` runs ``target`` (both dotted module names)."""

    source: str
    line: int
    target: str
    written: str  # the import as written, e.g. "from ..data import load_raw"
    lazy: bool  # inside a function: runs when the function is called, not at import
    explicit: bool  # named by the statement; False: a parent package loaded on the way to it


@dataclass(frozen=True)
class External:
    """An import of a module outside the package."""

    source: str
    line: int
    name: str  # dotted, as written ("lightning.pytorch.callbacks")
    lazy: bool
    type_checking: bool  # inside ``if TYPE_CHECKING:`` (never runs)

    @property
    def top(self) -> str:
        return self.name.partition(".")[0]


@dataclass(frozen=True)
class Unresolved:
    """An import of a module of the package that has no file."""

    source: str
    line: int
    written: str
    missing: str  # dotted


def ancestors(module: str) -> list[str]:
    """``"a.b.c"`` -> ``["a", "a.b"]``: the packages importing ``a.b.c`` runs first."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(node: ast.AST, lazy: bool = False, type_checking: bool = False,
                  ) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool, bool]]:
    """Every import statement under ``node``, with (inside a function, inside TYPE_CHECKING)."""
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        yield node, lazy, type_checking
        return
    if isinstance(node, ast.If) and _is_type_checking(node.test):
        for child in node.body:
            yield from _import_nodes(child, lazy, True)
        for child in node.orelse:  # `else:` of `if TYPE_CHECKING:` is what runs
            yield from _import_nodes(child, lazy, type_checking)
        return
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
        lazy = True  # decorators and defaults run at def time, but hold no import statements
    for child in ast.iter_child_nodes(node):
        yield from _import_nodes(child, lazy, type_checking)


def _string_dict(tree: ast.Module, name: str) -> dict[str, str] | None:
    """The module-level ``name = {"str": "str", ...}`` literal, or None."""
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign):
            targets, value = stmt.targets, stmt.value
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
            targets, value = [stmt.target], stmt.value
        else:
            continue
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            if not isinstance(value, ast.Dict):
                raise ValueError(f"{name} must be a dict literal (line {stmt.lineno})")
            out = {}
            for k, v in zip(value.keys, value.values):
                if not (isinstance(k, ast.Constant) and isinstance(k.value, str)
                        and isinstance(v, ast.Constant) and isinstance(v.value, str)):
                    raise ValueError(f"{name} must map str to str (line {stmt.lineno})")
                out[k.value] = v.value
            return out
    return None


def _string_list(tree: ast.Module, name: str) -> list[str] | None:
    """The module-level ``name = [...]`` / ``(...)`` literal of strings, or None."""
    for stmt in tree.body:
        if (isinstance(stmt, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == name for t in stmt.targets)
                and isinstance(stmt.value, (ast.List, ast.Tuple))
                and all(isinstance(e, ast.Constant) and isinstance(e.value, str)
                        for e in stmt.value.elts)):
            return [e.value for e in stmt.value.elts]
    return None


class ImportGraph:
    """The import graph of package ``package`` found at ``root / package``."""

    def __init__(self, root: Path, package: str = "pipeline"):
        self.root = Path(root)
        self.package = package
        self.modules: dict[str, Path] = {}  # dotted name -> file
        for file in sorted((self.root / package).rglob("*.py")):
            rel = file.relative_to(self.root).with_suffix("")
            if "__pycache__" in rel.parts or not all(p.isidentifier() for p in rel.parts):
                continue
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            self.modules[".".join(parts)] = file
        self.trees = {m: ast.parse(f.read_text(), filename=str(f))
                      for m, f in self.modules.items()}
        self.exports: dict[str, dict[str, str]] = {}  # package -> its _EXPORTS table
        self.all: dict[str, list[str]] = {}
        for m, tree in self.trees.items():
            if self.is_package(m):
                if (table := _string_dict(tree, "_EXPORTS")) is not None:
                    self.exports[m] = table
                if (names := _string_list(tree, "__all__")) is not None:
                    self.all[m] = names
        self.edges: list[Edge] = []
        self.external: list[External] = []
        self.unresolved: list[Unresolved] = []
        for m in self.modules:
            self._read(m)
        self.out: dict[str, list[Edge]] = {m: [] for m in self.modules}
        for e in self.edges:
            self.out[e.source].append(e)

    # -- reading --------------------------------------------------------------------------------

    def is_package(self, module: str) -> bool:
        return self.modules[module].name == "__init__.py"

    def path(self, module: str) -> str:
        """The file of ``module``, relative to the root, e.g. ``pipeline/data/__init__.py``."""
        return self.modules[module].relative_to(self.root).as_posix()

    def _in_package(self, name: str) -> bool:
        return name == self.package or name.startswith(self.package + ".")

    def _read(self, module: str) -> None:
        for node, lazy, type_checking in _import_nodes(self.trees[module]):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    written = f"import {alias.name}"
                    if not self._in_package(alias.name):
                        self.external.append(
                            External(module, node.lineno, alias.name, lazy, type_checking))
                    elif not type_checking:
                        self._add(module, node.lineno, written, lazy, [alias.name])
                continue
            dots = "." * node.level
            written_base = f"from {dots}{node.module or ''}"
            base = self._absolute(module, node)
            if base is None:  # relative import above the top of the package
                if not type_checking:
                    self.unresolved.append(Unresolved(module, node.lineno,
                                                      f"{written_base} import ...",
                                                      dots + (node.module or "")))
                continue
            if not self._in_package(base):
                if node.level == 0:
                    self.external.append(External(module, node.lineno, base, lazy, type_checking))
                continue
            if type_checking:
                continue
            if base not in self.modules:
                self.unresolved.append(Unresolved(
                    module, node.lineno, f"{written_base} import ...", base))
                continue
            for alias in node.names:
                written = f"{written_base} import {alias.name}"
                self._add(module, node.lineno, written, lazy,
                          self._from_targets(module, node.lineno, written, base, alias.name))

    def _absolute(self, module: str, node: ast.ImportFrom) -> str | None:
        """The absolute dotted name ``from <this> import ...`` names."""
        if node.level == 0:
            return node.module
        package = module if self.is_package(module) else module.rpartition(".")[0]
        parts = package.split(".")
        if node.level - 1 >= len(parts):
            return None
        parts = parts[:len(parts) - (node.level - 1)]
        return ".".join(parts + (node.module.split(".") if node.module else []))

    def _from_targets(self, module: str, line: int, written: str, base: str, name: str,
                      ) -> list[str]:
        """The modules ``from base import name`` runs the code of (besides base's parents)."""
        if name == "*":
            names = self.all.get(base) or list(self.exports.get(base, {}))
            return [base, *(t for n in names
                            for t in self._from_targets(module, line, written, base, n)
                            if t != base)]
        if name in self.exports.get(base, {}):
            sub = f"{base}.{self.exports[base][name]}"
            if sub not in self.modules:
                self.unresolved.append(Unresolved(module, line, written, sub))
                return [base]
            return [base, sub]  # reads base.__getattr__, which imports sub
        if f"{base}.{name}" in self.modules:
            return [f"{base}.{name}"]  # a submodule
        return [base]  # an attribute of base

    def _add(self, module: str, line: int, written: str, lazy: bool, targets: list[str]) -> None:
        seen: dict[str, bool] = {}
        for target in targets:
            if target not in self.modules:
                self.unresolved.append(Unresolved(module, line, written, target))
                continue
            for parent in ancestors(target):
                seen.setdefault(parent, False)
            seen[target] = True
        for target, explicit in seen.items():
            if target != module:
                self.edges.append(Edge(module, line, target, written, lazy, explicit))

    # -- queries --------------------------------------------------------------------------------

    def closure(self, start: str) -> dict[str, list[Edge]]:
        """Every module that runs when ``python -m start`` runs, each with the shortest chain of
        imports leading to it (empty for ``start`` and its parent packages)."""
        if start not in self.modules:
            raise KeyError(f"{start}: no such module under {self.root / self.package}")
        chains: dict[str, list[Edge]] = {m: [] for m in [*ancestors(start), start]}
        queue = deque(chains)
        while queue:
            m = queue.popleft()
            for e in self.out[m]:
                if e.target not in chains:
                    chains[e.target] = [*chains[m], e]
                    queue.append(e.target)
        return chains


def format_chain(chain: list[Edge]) -> str:
    """``pipeline.stages.evaluate:38 -> pipeline.report:5 -> pipeline.report.page``."""
    if not chain:
        return ""
    return " -> ".join([f"{e.source}:{e.line}" for e in chain] + [chain[-1].target])


def covers(dep: str, file: str) -> bool:
    """A DVC dep covers a file when it is that file or a directory above it."""
    dep = dep.strip().rstrip("/").removeprefix("./")
    return file == dep or file.startswith(dep + "/")


def group_by_dir(files: Iterable[str]) -> str:
    """``pipeline/: __init__.py, config.py`` one line per directory."""
    dirs: dict[str, list[str]] = {}
    for f in sorted(files):
        d, _, name = f.rpartition("/")
        dirs.setdefault(d + "/", []).append(name)
    return "\n".join(f"  {d}: {', '.join(names)}" for d, names in dirs.items())
