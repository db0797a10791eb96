"""dvc.yaml's deps are exactly the ``pipeline/`` files each stage's command runs, derived from the
imports (tests/importgraph.py, ``ast``: nothing is imported): an edit of ``pipeline/report/``
re-runs ``evaluate`` alone, one of ``pipeline/config.py`` every stage. The layer rules and cycles
are import-linter's contracts (tests/unit/test_architecture.py).
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
import yaml

from importgraph import ImportGraph, covers, format_chain, group_by_dir

ROOT = Path(__file__).resolve().parents[2]
STAGE_MODULE = re.compile(r"python[\w.]*\s+-m\s+(pipeline\.stages\.[\w.]+)")


def has_code(file: str) -> bool:
    """Whether ``file`` holds more than a docstring and ``from __future__`` imports: a package
    ``__init__.py`` that holds nothing else cannot change what a stage computes, so it need not
    be a dep (one that gains code must become one)."""
    import ast

    body = ast.parse((ROOT / file).read_text()).body
    return any(not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))
               and not (isinstance(n, ast.ImportFrom) and n.module == "__future__") for n in body)



@pytest.fixture(scope="module")
def graph() -> ImportGraph:
    return ImportGraph(ROOT, "pipeline")


def fail_listing(header: str, lines: list[str], footer: str = "") -> None:
    """Fail with ``header`` and one indented line per finding (no traceback: the message says
    what to change)."""
    if lines:
        pytest.fail("\n  ".join([header, *lines]) + (f"\n{footer}" if footer else ""),
                    pytrace=False)


def _dvc_stages() -> list[tuple[str, str, list[str], str]]:
    """(stage, cmd, deps, where the deps are) per stage of dvc.yaml; a ``foreach`` stage's from
    its ``do``."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    out = []
    for name, stage in stages.items():
        body = stage["do"] if "foreach" in stage else stage
        cmd = body.get("cmd", "")
        cmd = " ".join(cmd) if isinstance(cmd, list) else cmd
        deps = [d for dep in body.get("deps") or []
                for d in (dep if isinstance(dep, dict) else [dep])]
        out.append((name, cmd, deps, f"stages.{name}{'.do' if 'foreach' in stage else ''}.deps"))
    return out


@pytest.mark.parametrize(("stage", "cmd", "deps", "where"),
                         [pytest.param(*s, id=s[0]) for s in _dvc_stages()])
def test_dvc_deps_cover_the_code_each_stage_runs(graph, stage, cmd, deps, where):
    modules = STAGE_MODULE.findall(cmd)
    assert modules, f"stage {stage}: cmd {cmd!r} runs no `python -m pipeline.stages.<name>`"
    missing = [m for m in modules if m not in graph.modules]
    assert not missing, f"stage {stage}: cmd runs {missing}, which has no file under pipeline/"
    runs: dict[str, str] = {}  # file -> how the stage reaches it
    run_modules: set[str] = set()
    for module in modules:
        for m, chain in graph.closure(module).items():
            how = (f"via {format_chain(chain)}" if chain else
                   f"run by `python -m {module}`" + (" (a parent package)" if m != module else ""))
            runs.setdefault(graph.path(m), how)
            run_modules.add(m)
    deps = [d for d in deps if "${" not in d]
    problems = [f"runs {file} ({how}) but dvc.yaml lists no dep covering it: add it to {where}"
                for file, how in sorted(runs.items())
                if has_code(file) and not any(covers(d, file) for d in deps)]
    for dep in deps:
        if covers("pipeline", dep.strip().removeprefix("./")) and not any(
                covers(dep, f) for f in runs):
            gone = "" if (ROOT / dep).exists() else ", and does not exist"
            problems.append(f"dep {dep} covers no file the stage runs (stale{gone}): "
                            f"remove it from {where}")
    notes = [f"note: {graph.path(u.source)}:{u.line} `{u.written}` names {u.missing}, which "
             "has no file (the stage would fail there; the files it runs may be more)"
             for u in graph.unresolved if u.source in run_modules]
    if problems:
        fail_listing(f"stage {stage} (`python -m {' '.join(modules)}`): dvc.yaml deps do not "
                     "match the code it runs:", problems + notes,
                     f"the stage runs these {len(runs)} pipeline files:\n{group_by_dir(runs)}")


def test_pipeline_imports_resolve(graph):
    """Every import of a pipeline module names a file (a rename left no stale import behind)."""
    broken = [f"{graph.path(u.source)}:{u.line} `{u.written}`: {u.missing} has no file"
              for u in graph.unresolved]
    fail_listing("imports of pipeline modules that do not exist:", broken)



# -- the analyzer itself ------------------------------------------------------------------------

TOY = {
    "toy/__init__.py": "",
    "toy/errors.py": "class ToyError(Exception): ...\n",
    "toy/data/__init__.py": """
        from typing import TYPE_CHECKING
        _EXPORTS = {"load": "sources", "Big": "heavy"}
        from ..errors import ToyError
        if TYPE_CHECKING:
            from .heavy import Big
            from .model_uris import load
            import lightning
    """,
    "toy/data/sources.py": "from toy.errors import ToyError\ndef load(): ...\n",
    "toy/data/heavy.py": "import lightning\nclass Big: ...\n",
    "toy/util/__init__.py": "",
    "toy/util/deep/__init__.py": "",
    "toy/util/deep/leaf.py": "X = 1\n",
    "toy/lazy.py": "def helper(): ...\n",
    "toy/never.py": "",
    "toy/elsewise.py": "",
    "toy/unused.py": "import toy.never\n",
    "toy/stages/__init__.py": "",
    "toy/stages/run.py": """
        import typing
        import numpy as np
        from ..data import load, ToyError
        from .. import errors
        import toy.util.deep.leaf as leaf
        if typing.TYPE_CHECKING:
            from ..never import nothing
        else:
            from .. import elsewise
        def main():
            from ..lazy import helper
            from .gone import missing
    """,
    "toy/models/__init__.py": "from .core import Net\n",
    "toy/models/core.py": "from ..models import helpers\nclass Net: ...\n",
    "toy/models/helpers.py": "",
}


def test_analyzer_on_a_toy_package(tmp_path):
    for name, text in TOY.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(textwrap.dedent(text))
    g = ImportGraph(tmp_path, "toy")
    assert g.exports == {"toy.data": {"load": "sources", "Big": "heavy"}}

    runs = g.closure("toy.stages.run")
    assert {g.path(m) for m in runs} == {
        "toy/__init__.py", "toy/stages/__init__.py", "toy/stages/run.py",  # python -m
        "toy/data/__init__.py", "toy/data/sources.py",  # _EXPORTS["load"]; ToyError: none more
        "toy/errors.py",  # `from .. import errors`: a submodule
        "toy/util/__init__.py", "toy/util/deep/__init__.py", "toy/util/deep/leaf.py",  # parents
        "toy/elsewise.py",  # the else of `if TYPE_CHECKING`
        "toy/lazy.py",  # in a function
    }  # not toy/data/heavy.py (only under TYPE_CHECKING), toy/never.py, toy/unused.py
    assert format_chain(runs["toy.lazy"]) == "toy.stages.run:12 -> toy.lazy"
    assert format_chain(runs["toy.util.deep"]) == "toy.stages.run:6 -> toy.util.deep"
    assert runs["toy.stages"] == [] and runs["toy"] == []
    lazy = [e for e in g.out["toy.stages.run"] if e.target == "toy.lazy"]
    assert len(lazy) == 1 and lazy[0].lazy and lazy[0].explicit

    assert [(u.source, u.line, u.missing) for u in g.unresolved] == [
        ("toy.stages.run", 13, "toy.stages.gone")]
    assert {(x.source, x.name, x.lazy, x.type_checking) for x in g.external} == {
        ("toy.data", "typing", False, False), ("toy.data", "lightning", False, True),
        ("toy.data.heavy", "lightning", False, False),
        ("toy.stages.run", "typing", False, False), ("toy.stages.run", "numpy", False, False)}

    # deps coverage on paths
    assert covers("toy/data", "toy/data/sources.py") and covers("toy/data/", "toy/data/x.py")
    assert not covers("toy/data", "toy/database.py") and covers("toy/a.py", "toy/a.py")
