"""Contracts of the package layout, checked statically (``ast``, tests/importgraph.py) except for
the last two, which import:

1. dvc.yaml: each stage's ``deps`` cover every ``pipeline/`` file its ``python -m`` module runs
   (imports followed transitively, lazy ones included), and no ``pipeline/`` dep is stale.
2. Layers: a module imports only its own layer and lower ones (LAYERS below), every file is
   placed in a layer, import-time imports form no cycle, and ``pipeline/models/`` is plain
   PyTorch (no Lightning, MLflow, DVC or torchmetrics).
3. The prepare stage (and checking params) imports none of the heavy training libraries, and
   ``pipeline.config.STRATEGIES`` matches the installed Lightning's strategy registry.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from importgraph import ImportGraph, covers, format_chain, group_by_dir

ROOT = Path(__file__).resolve().parents[1]

# Lowest first: a module may import modules of its own layer and of lower layers only. An entry
# ending in "/" holds every file under that directory. Every file under pipeline/ must be placed.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("pipeline/errors.py", "pipeline/store.py", "pipeline/atomic.py", "pipeline/comparison.py",
     "pipeline/records.py", "pipeline/lazy.py", "pipeline/__init__.py"),
    ("pipeline/models/",),
    ("pipeline/config.py",),
    ("pipeline/data/",),
    ("pipeline/training/",),
    ("pipeline/evaluation/", "pipeline/report/", "pipeline/explain.py", "pipeline/predict.py",
     "pipeline/images.py", "pipeline/model_source.py",
     "pipeline/serving.py"),
    ("pipeline/stages/", "pipeline/workspace.py"),
)

# pipeline/models/ is plain PyTorch: it imports none of these, anywhere (in functions too).
MODELS_FORBIDDEN = ("lightning", "pytorch_lightning", "mlflow", "dvc", "torchmetrics")

# The prepare stage, and loading params, import none of these.
HEAVY = ("lightning", "pytorch_lightning", "mlflow", "torchmetrics", "albumentations")

def has_code(file: str) -> bool:
    """Whether ``file`` holds more than a docstring and ``from __future__`` imports: a package
    ``__init__.py`` that holds nothing else cannot change what a stage computes, so it need not
    be a dep (one that gains code must become one)."""
    import ast

    body = ast.parse((ROOT / file).read_text()).body
    return any(not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))
               and not (isinstance(n, ast.ImportFrom) and n.module == "__future__") for n in body)


STAGE_MODULE = re.compile(r"python[\w.]*\s+-m\s+(pipeline\.stages\.[\w.]+)")


@pytest.fixture(scope="module")
def graph() -> ImportGraph:
    return ImportGraph(ROOT, "pipeline")


def layer_of(file: str) -> tuple[int, str] | None:
    """(layer, the LAYERS entry placing ``file``), or None when no entry does."""
    for layer, entries in enumerate(LAYERS):
        for entry in entries:
            if file == entry or (entry.endswith("/") and file.startswith(entry)):
                return layer, entry
    return None


def fail_listing(header: str, lines: list[str], footer: str = "") -> None:
    """Fail with ``header`` and one indented line per finding (no traceback: the message says
    what to change)."""
    if lines:
        pytest.fail("\n  ".join([header, *lines]) + (f"\n{footer}" if footer else ""),
                    pytrace=False)


# -- 1. dvc.yaml deps ---------------------------------------------------------------------------

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


# -- 2. layers ----------------------------------------------------------------------------------

def test_every_module_has_a_layer(graph):
    unplaced = sorted(graph.path(m) for m in graph.modules if layer_of(graph.path(m)) is None)
    fail_listing(f"files under pipeline/ in no layer: add each to LAYERS in {Path(__file__).name}"
                 " (or move it into a placed directory):", unplaced)


def test_imports_go_down_the_layers(graph):
    """Function-level imports count: they run too."""
    bad = []
    for e in graph.edges:
        src, dst = layer_of(graph.path(e.source)), layer_of(graph.path(e.target))
        if e.explicit and src and dst and dst[0] > src[0]:
            bad.append(f"{graph.path(e.source)}:{e.line} imports {e.target} (`{e.written}`"
                       f"{', in a function' if e.lazy else ''}): layer {src[0]} ({src[1]}) -> "
                       f"layer {dst[0]} ({dst[1]})")
    fail_listing("imports of a higher layer (a module may import its own layer and lower ones "
                 "only):", sorted(set(bad)))


def test_no_import_cycles(graph):
    """Import-time (module-level) imports only; a module importing its own parent package on the
    way does not count (Python always imports the parent first)."""
    cycles = [" -> ".join([f"{graph.path(e.source)}:{e.line}" for e in c]
                          + [graph.path(c[0].source)]) for c in graph.cycles()]
    fail_listing("import cycles among module-level imports (move one import into the function "
                 "that needs it, or split a module):", cycles)


def test_models_are_plain_pytorch(graph):
    bad = [f"{graph.path(x.source)}:{x.line} imports {x.name}"
           + (" (in a function)" if x.lazy else "")
           + (" (under `if TYPE_CHECKING:`)" if x.type_checking else "")
           for x in graph.external
           if graph.path(x.source).startswith("pipeline/models/") and x.top in MODELS_FORBIDDEN]
    fail_listing(f"pipeline/models/ must not import {', '.join(MODELS_FORBIDDEN)} (plain "
                 "PyTorch; Lightning code belongs in pipeline/training/):", bad)


# -- 3. the prepare stage is light --------------------------------------------------------------

# Records, for each heavy library, the pipeline frames on the stack when it is first imported.
_PREPARE_PROBE = r"""
import json, os, sys, traceback
heavy = json.loads(sys.argv[1])
who = {}

class Spy:
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in heavy and top not in who:
            frames = [f for f in traceback.extract_stack()[:-1]
                      if os.path.relpath(f.filename).startswith("pipeline" + os.sep)]
            who[top] = " -> ".join(f"{os.path.relpath(f.filename)}:{f.lineno}" for f in frames)
        return None

sys.meta_path.insert(0, Spy())
import pipeline.stages.prepare
from pipeline.config import load_params
load_params("params.quick.yaml")
print(json.dumps({m: who.get(m, "") for m in heavy if m in sys.modules}))
"""


def test_prepare_stage_imports_no_heavy_library():
    proc = subprocess.run(
        [sys.executable, "-c", _PREPARE_PROBE, json.dumps(HEAVY)], cwd=ROOT, capture_output=True,
        text=True, timeout=300, env={**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"})
    if proc.returncode != 0:
        pytest.fail(f"importing the prepare stage failed:\n{proc.stderr}", pytrace=False)
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    fail_listing("`import pipeline.stages.prepare` + `load_params('params.quick.yaml')` imports "
                 "heavy libraries; make the import lazy (inside the function that needs it) or "
                 "move it off the prepare stage's path:",
                 [f"{m}: first imported via {how or '(no pipeline/ frame on the stack)'}"
                  for m, how in loaded.items()])


def test_strategies_match_lightning():
    from lightning.pytorch import __version__ as lightning_version
    from lightning.pytorch.strategies import StrategyRegistry

    from pipeline.config import STRATEGIES

    want = {"auto", *StrategyRegistry.available_strategies()}
    have = set(STRATEGIES)
    if have != want:
        pytest.fail(f"pipeline.config.STRATEGIES differs from Lightning {lightning_version}'s "
                    f"StrategyRegistry: add {sorted(want - have)}, remove {sorted(have - want)};"
                    f" update the tuple to {tuple(sorted(want))}", pytrace=False)


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
            from .sources import load
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
    "toy/a.py": "from . import b\n",
    "toy/b.py": "from .c import f\n",
    "toy/c.py": "import toy.a\ndef f(): ...\n",
    "toy/d.py": "def g():\n    from . import e\n",
    "toy/e.py": "from .d import g\n",
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

    # a -> b -> c -> a at import time; d <-> e is broken by d's lazy import; models/core.py
    # importing its own package's submodule through the package is no cycle (the parent is
    # imported first), and models/__init__ -> core is one-way
    cycles = [[(e.source, e.line, e.target) for e in c] for c in g.cycles()]
    assert cycles == [[("toy.a", 1, "toy.b"), ("toy.b", 1, "toy.c"), ("toy.c", 1, "toy.a")]]

    # deps coverage and layers on paths
    assert covers("toy/data", "toy/data/sources.py") and covers("toy/data/", "toy/data/x.py")
    assert not covers("toy/data", "toy/database.py") and covers("toy/a.py", "toy/a.py")
    assert layer_of("pipeline/models/vit.py") == (1, "pipeline/models/")
    assert layer_of("pipeline/stages/_cli.py") == (6, "pipeline/stages/")
    assert layer_of("pipeline/config.py")[0] == 2 and layer_of("pipeline/new.py") is None
