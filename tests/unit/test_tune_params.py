"""The ``tune`` section (pipeline/config/tune.py): the shipped searches are valid, a bad search is
refused with one line naming its key before any work, and a choice applies to the recipe."""

import copy
from pathlib import Path

import pytest
import yaml

from pipeline.config import apply_overrides, load_params, parse_params, trial_recipe
from pipeline.errors import ParamsError

ROOT = Path(__file__).resolve().parents[2]


def _real() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def _error(mutate) -> str:
    data = copy.deepcopy(_real())
    mutate(data)
    with pytest.raises(ParamsError) as err:
        parse_params(data, "params.yaml")
    return str(err.value)


def _scratch(d) -> dict:
    return d["tune"]["scratch"]["scratch_ti4"]


def _space(d) -> dict:
    return _scratch(d)["space"]


@pytest.mark.parametrize("mutate, expected", [
    (lambda d: _scratch(d).update(space={}),
     "tune.scratch.scratch_ti4.space: Dictionary should have at least 1 item"),
    (lambda d: _scratch(d).update(trials=0),
     "tune.scratch.scratch_ti4.trials: Input should be greater than 0; got 0"),
    (lambda d: _space(d).update({"train.optimizr.lr": {"low": 0.1, "high": 0.2}}),
     "tune.scratch.scratch_ti4.space.train.optimizr.lr: not a key of scratch.scratch_ti4's "
     "recipe (train.optimizr is not there)"),
    (lambda d: _space(d).update({"train.optimizer.lr": {"low": 0.01, "high": 0.001}}),
     "tune.scratch.scratch_ti4.space.train.optimizer.lr: low 0.01 is above high 0.001"),
    (lambda d: _space(d).update({"train.optimizer.weight_decay": {"low": 0.0, "high": 0.1,
                                                                  "log": True}}),
     "tune.scratch.scratch_ti4.space.train.optimizer.weight_decay: a log range needs low > 0"),
    (lambda d: _space(d).update({"train.label_smoothing": {"low": 0.0, "high": 1.5}}),
     "tune.scratch.scratch_ti4.space.train.label_smoothing: the value 1.5 makes the recipe "
     "invalid (train.label_smoothing: Input should be less than 1)"),
    (lambda d: _scratch(d).update(tirals=3),
     "tune.scratch.scratch_ti4.tirals: unknown key (typo?)"),
    (lambda d: d["tune"]["finetune"]["finetune_b16"].update(trials=5),
     "tune.finetune.finetune_b16: trials 5 > the grid's 4 points"),
    (lambda d: d["tune"]["finetune"]["finetune_b16"]["space"].update(
        {"train.epochs": {"low": 1, "high": 3}}),
     "tune.finetune.finetune_b16: the grid sampler needs choices, not ranges"),
    (lambda d: d["tune"]["scratch"].update(finetune_b16=copy.deepcopy(_scratch(d))),
     "tune.scratch.finetune_b16: 'finetune_b16' is not a variant of scratch"),
    (lambda d: _space(d).update({"train": {"choices": [1]}}),
     "tune.scratch.scratch_ti4.space.train: not a key of scratch.scratch_ti4's recipe"),
])
def test_a_bad_search_is_refused_with_one_line_naming_its_key(mutate, expected):
    msg = _error(mutate)
    assert expected in msg, msg
    assert len(msg.splitlines()) <= 2  # the file, then the key's line (pydantic) or one line


def test_the_shipped_searches_are_an_equal_budget_and_the_papers_grid():
    real = load_params(ROOT / "params.yaml")
    ft = real.tune.finetune["finetune_b16"]
    assert ft.sampler.name == "grid"
    assert ft.space["train.optimizer.lr"].choices == [0.001, 0.003, 0.01, 0.03]
    quick = load_params(ROOT / "params.quick.yaml")
    for p in (real, quick):
        counts = {arm: {s.trials for a, _, s in p.tune.searches() if a == arm}
                  for arm in ("scratch", "finetune")}
        assert counts["scratch"] == counts["finetune"] and len(counts["scratch"]) == 1
        for _, _, s in p.tune.searches():  # the trials' seed is none of the cells' seeds
            assert s.seed not in p.base.seeds
    assert min(s.trials for _, _, s in quick.tune.searches()) >= 8
    assert quick.trained_variants == ["scratch", "finetune", "scratch-tuned", "finetune-tuned"]
    assert quick.variant("finetune-tuned") == quick.variant("finetune")
    assert quick.search("scratch-tuned")[0] == "scratch"


def test_a_choice_applies_to_the_recipe_and_a_short_trial_compresses_its_schedule():
    quick = load_params(ROOT / "params.quick.yaml")
    ft = quick.finetune["finetune"]
    tuned = apply_overrides(ft, {"train.optimizer.lr": 0.1, "backbone_lr_scale": 1.0})
    assert tuned.train.optimizer.lr == 0.1 and tuned.backbone_lr_scale == 1.0
    assert tuned.train.epochs == ft.train.epochs and ft.train.optimizer.lr == 0.03  # a copy
    short = trial_recipe(ft, quick.tune.finetune["finetune"], {})
    assert short.train.epochs == 10 and short.train.warmup_epochs == pytest.approx(1.0)
    assert short.freeze_epochs == 1  # 3 of 30 epochs frozen: 1 of 10
    with pytest.raises(KeyError):
        apply_overrides(ft, {"train.nope": 1})


def test_an_empty_tune_section_means_no_searches():
    data = _real()
    data["tune"] = {"scratch": {}, "finetune": {}}
    params = parse_params(data)
    assert params.tune.searches() == [] and params.trained_variants == params.variants
