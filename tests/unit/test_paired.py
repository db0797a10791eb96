"""benchmarks/paired.py: one knob's paired effect, read from the evaluate stage's cells.json."""

import importlib
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def paired():
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(ROOT / "benchmarks"))
        sys.modules.pop("paired", None)
        yield importlib.import_module("paired")
        sys.modules.pop("paired", None)


def _cells() -> dict:
    tops = {"scratch": [0.60, 0.62, 0.58], "scratch_ra3": [0.65, 0.66, 0.64]}
    return {f"{v}/all/seed{s}": {"variant": v, "budget": "all", "seed": s, "top1": t}
            for v, ts in tops.items() for s, t in enumerate(ts)}


def test_the_effect_is_paired_seed_by_seed(paired, tmp_path, capsys):
    (row,) = paired.compare(_cells(), "scratch", "scratch_ra3")
    assert row["seeds"] == [0, 1, 2] and row["diff"].mean == pytest.approx(0.05)
    path = tmp_path / "cells.json"
    path.write_text(json.dumps(_cells()))
    assert paired.main([str(path), "scratch:scratch_ra3"]) == 0
    assert "| scratch | scratch_ra3 | all |" in capsys.readouterr().out


def test_an_unknown_variant_is_named(paired):
    with pytest.raises(SystemExit, match="no cells of variant 'nope' in cells.json"):
        paired.compare(_cells(), "scratch", "nope")
