"""benchmarks/paired.py: one knob's paired effect, read from the evaluate stage's cells.json."""

import json
from pathlib import Path

import pytest

from bench_helpers import benchmark_module

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def paired():
    with benchmark_module("paired") as module:
        yield module


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


def test_an_unreadable_cells_file_is_one_line(paired, tmp_path, capsys):
    assert paired.main([str(tmp_path / "nowhere.json"), "scratch:scratch_ra3"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nowhere.json: cannot read the cells" in err
