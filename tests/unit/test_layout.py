"""The workspace layout (pipeline/layout.py) is the one source of the paths: dvc.yaml's commands,
deps and outputs, and the stage CLIs' defaults, are checked against it; cell keys round-trip."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest
import yaml

from pipeline import layout
from pipeline.layout import (
    MODELS,
    PREPARED,
    RESULTS,
    TEST,
    TUNED_SUFFIX,
    CellKey,
    budget_dir,
    cell_dir,
    cell_keys,
    cells_file,
    chosen_file,
    confusion_dir,
    metrics_dir,
    pretrained_dir,
    pretrained_file,
    pretraining_dir,
    report_dir,
    search_dir,
    study_file,
)

ROOT = Path(__file__).resolve().parents[2]
# a DVC matrix cell, as dvc.yaml writes it: the layout's functions give the same strings
ITEM = CellKey("${item.variant}", "${item.budget}", "${item.seed}")


@pytest.fixture(scope="module")
def stages() -> dict:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def _outs(body: dict, key: str = "outs") -> list[str]:
    return [next(iter(o)) if isinstance(o, dict) else o for o in body.get(key) or []]


def _arg(cmd: str, flag: str) -> str:
    m = re.search(rf"{flag}\s+(\S+)", cmd)
    assert m, f"{flag} not in {cmd!r}"
    return m.group(1)


def test_prepare_writes_the_prepared_dir_and_the_test_dir(stages):
    s = stages["prepare"]
    assert _arg(s["cmd"], "--raw") == str(layout.DATA_RAW)
    assert _arg(s["cmd"], "--out") == str(PREPARED)
    assert _arg(s["cmd"], "--test") == str(TEST)
    assert _outs(s) == [str(PREPARED), str(TEST)]


def test_pretrained_writes_its_weights_dir(stages):
    s = stages["pretrained"]["do"]
    assert _arg(s["cmd"], "--out") == str(pretrained_dir("${key}"))
    assert _outs(s) == [str(pretrained_dir("${key}"))]


@pytest.mark.parametrize("stage", ["train_scratch", "finetune", "train_scratch_tuned",
                                   "finetune_tuned"])
def test_each_training_stage_writes_its_budget_dir_a_cell_per_seed(stages, stage):
    s = stages[stage]
    assert set(s["matrix"]) == {"variant", "budget"}
    tuned = stage.endswith("_tuned")
    variant = ITEM.variant + (TUNED_SUFFIX if tuned else "")
    cmd = " ".join(s["cmd"].split())
    assert cmd.split()[3] == variant and "--all-seeds" in cmd.split()
    assert _arg(cmd, "--out") == str(budget_dir(variant, ITEM.budget))
    assert cell_dir(CellKey(variant, ITEM.budget, 0)).parent == budget_dir(variant, ITEM.budget)
    assert _arg(cmd, "--data") == str(PREPARED)
    assert _arg(cmd, "--budget") == ITEM.budget
    assert _outs(s) == [str(budget_dir(variant, ITEM.budget))]
    assert "base.seeds" in s["params"]  # an added seed re-runs it (and it trains that one)
    assert str(PREPARED) in s["deps"] and str(TEST) not in s["deps"]  # never the test split
    if stage.startswith("finetune"):  # every weights source (a matrix item cannot name its own)
        assert str(MODELS / layout.PRETRAINED) in s["deps"]
    if tuned:  # what its search chose, nothing else of the search
        assert _arg(cmd, "--chosen") == str(chosen_file(ITEM.variant, ITEM.budget))
        assert str(chosen_file(ITEM.variant, ITEM.budget)) in s["deps"]


@pytest.mark.parametrize("arm", ["scratch", "finetune"])
def test_each_search_writes_its_dir_and_its_choice_and_never_reads_the_test_split(stages, arm):
    s = stages[f"tune_{arm}"]
    assert s["matrix"] == {"variant": f"${{tune.{arm}}}", "budget": "${prepare.budgets}"}
    cmd = " ".join(s["cmd"].split())
    assert _arg(cmd, "--out") == str(search_dir(ITEM.variant, ITEM.budget))
    assert _arg(cmd, "--chosen") == str(chosen_file(ITEM.variant, ITEM.budget))
    assert _outs(s) == [str(search_dir(ITEM.variant, ITEM.budget)),
                        str(chosen_file(ITEM.variant, ITEM.budget))]
    assert str(PREPARED) in s["deps"] and str(TEST) not in s["deps"]
    assert f"tune.{arm}.${{item.variant}}" in s["params"]
    assert f"{arm}.${{item.variant}}" in s["params"]


def test_evaluate_reads_the_test_split_and_models_and_writes_results(stages):
    s = stages["evaluate"]
    assert (_arg(s["cmd"], "--test"), _arg(s["cmd"], "--models"), _arg(s["cmd"], "--out")) == (
        str(TEST), str(MODELS), str(RESULTS))
    assert {str(TEST), str(MODELS)} <= set(s["deps"]) and str(PREPARED) not in s["deps"]
    assert set(_outs(s)) == {str(report_dir()), str(confusion_dir()), str(study_file()),
                             str(cells_file())}
    assert _outs(s, "metrics") == [str(metrics_dir())]
    # the last good results stay while evaluate runs (it replaces them at its end)
    for kind in ("outs", "metrics"):
        for out in s[kind]:
            (spec,) = out.values()
            assert spec == {"cache": False, "persist": True}, out


def test_plots_read_results(stages):
    plots = yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"]
    for plot in plots:
        (name, spec), = plot.items()
        paths = list(spec["y"]) if isinstance(spec, dict) and isinstance(spec.get("y"), dict) \
            else [name]
        for p in paths:
            assert Path(p).parts[0] == str(RESULTS), p


def _defaults(module) -> dict:
    parser = argparse.ArgumentParser()
    module.add_args(parser)
    return {a.dest: a.default for a in parser._actions if a.dest != "help"}


def test_stage_defaults_are_the_layout():
    from pipeline.stages import evaluate, prepare, pretrained, train, tune

    assert {k: _defaults(prepare)[k] for k in ("raw", "out", "test")} == {
        "raw": str(layout.DATA_RAW), "out": str(PREPARED), "test": str(TEST)}
    assert _defaults(pretrained)["raw"] == str(layout.DATA_RAW)
    assert _defaults(train)["data"] == str(PREPARED)
    assert _defaults(tune)["data"] == str(PREPARED)
    assert {k: _defaults(evaluate)[k] for k in ("test", "models", "out")} == {
        "test": str(TEST), "models": str(MODELS), "out": str(RESULTS)}


def test_paths():
    key = CellKey("scratch_ti4", "100", 3)
    assert cell_dir(key) == Path("models/scratch_ti4/100/seed3")
    assert cell_dir(key, Path("/w/models")) == Path("/w/models/scratch_ti4/100/seed3")
    assert pretrained_file("b16") == Path("models/pretrained/b16/model.safetensors")
    assert pretraining_dir("b16") == Path("models/pretrained/b16/checkpoints")
    assert layout.confusion_file("v") == Path("results/confusion/v.csv")


def test_cell_keys_round_trip_and_sort_by_budget():
    key = CellKey("finetune_b16", "all", 12)
    assert str(key) == "finetune_b16/all/seed12" and CellKey.parse(str(key)) == key
    for bad in ("a/b", "a/b/c", "a/b/seed", "/b/seed1", "a/b/seed1/x"):
        with pytest.raises(ValueError, match="not a cell key"):
            CellKey.parse(bad)
    keys = cell_keys(["sc", "ft"], ["all", 100, 10], [1, 0])
    assert [str(k) for k in keys[:6]] == [
        "sc/10/seed1", "sc/10/seed0", "sc/100/seed1", "sc/100/seed0", "sc/all/seed1",
        "sc/all/seed0"]
    assert len(keys) == 12 and keys[6] == CellKey("ft", "10", 1)
