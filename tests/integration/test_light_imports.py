"""The ``prepare`` stage, and checking params, import none of the heavy libraries (a subprocess
records who first imports each); ``pipeline.config.STRATEGIES`` matches the installed Lightning's
strategy registry (checking params must not import Lightning to know it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# The prepare stage, and loading params, import none of these.
HEAVY = ("lightning", "pytorch_lightning", "mlflow", "torchmetrics", "albumentations")


def fail_listing(header: str, lines: list[str], footer: str = "") -> None:
    """Fail with ``header`` and one indented line per finding (no traceback: the message says
    what to change)."""
    if lines:
        pytest.fail("\n  ".join([header, *lines]) + (f"\n{footer}" if footer else ""),
                    pytrace=False)


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
