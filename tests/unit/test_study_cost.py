"""benchmarks/study_cost.py, the estimate behind the docs' cost of the real study: the tuned
cells cost what their variant's cost, and a search K trials of its trial recipe, once."""

from pathlib import Path

import pytest

from bench_helpers import benchmark_module
from pipeline.config import load_params, trial_recipe

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sc():
    with benchmark_module("study_cost") as module:
        yield module


def test_the_searches_and_the_tuned_cells_are_counted(sc):
    params = load_params(ROOT / "params.yaml")
    cells = sc.study_cost(params, per_class=4900, classes=10, val=1000)
    searches = sc.search_cost(params, per_class=4900, classes=10, val=1000)
    by = {(r["variant"], r["budget"]): r for r in cells}
    budgets = [str(b) for b in params.prepare.budgets]
    assert {v for v, _ in by} == set(params.trained_variants)
    for b in budgets:  # a tuned cell costs its variant's cell (the space leaves FLOPs alone)
        assert by["finetune_b16-tuned", b]["train_flop"] == by["finetune_b16", b]["train_flop"]
    assert [(r["search"], r["budget"]) for r in searches] == [
        (v, b) for _, v, _ in params.tune.searches() for b in budgets]
    for r in searches:
        _, recipe = params.variant(r["search"])
        _, _, search = next(s for s in params.tune.searches() if s[1] == r["search"])
        trial = trial_recipe(recipe, search, {})
        budget = None if r["budget"] == "all" else int(r["budget"])
        val = 1000 if budget is None else min(1000, budget * 10)  # validation: budget
        one = sc.cell_cost(trial.model.vit_config(num_classes=10), trial.train, budget, 4900, 10,
                           val)
        assert r["trials"] == search.trials == 4 and r["val_images"] == val
        assert r["train_flop"] == search.trials * one["train_flop"]
        assert r["val_flop"] == pytest.approx(search.trials * one["val_flop"])
