"""The tuned comparison beside the fixed one (pipeline/evaluation/study.py), the searches'
summaries (pipeline/evaluation/search_summary.py) and how the report and study.json show them."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from pipeline.evaluation.expected_max import expected_max
from pipeline.evaluation.search_summary import summarise_search
from pipeline.evaluation.study import Cell, summarise
from pipeline.records import SearchRecord, TrialRecord
from pipeline.report.study_figures import study_figures
from pipeline.report.tables import study_markdown, study_rows
from pipeline.tracking.comparison import study_metrics

N = 400
TOP1 = {  # seeds 0, 1, 2
    "scratch": [0.50, 0.55, 0.52], "finetune": [0.70, 0.72, 0.69],
    "scratch-tuned": [0.60, 0.63, 0.61], "finetune-tuned": [0.74, 0.75, 0.73],
}


def _cells() -> list[Cell]:
    rng = np.random.default_rng(0)
    out = []
    for variant, accs in TOP1.items():
        kind = "finetune" if variant.startswith("finetune") else "scratch"
        for seed, acc in enumerate(accs):
            correct = np.zeros(N, bool)
            correct[rng.permutation(N)[:round(acc * N)]] = True
            out.append(Cell(variant, kind, "all", seed, 300, correct.mean(), correct))
    return out


def _trial(n, value, state="complete", epochs=4, planned=4):
    return TrialRecord(number=n, params={"train.optimizer.lr": 0.001 * (n + 1)}, state=state,
                       value=value, curve=[value / 2] * (epochs - 1) + [value], epochs=epochs,
                       planned_epochs=planned, seconds=2.0 * epochs, flops=1e9 * epochs,
                       flops_per_epoch=1e9)


def _search(arm="scratch", variant="scratch") -> SearchRecord:
    trials = [_trial(0, 0.60), _trial(1, 0.66), _trial(2, 0.40, "pruned", epochs=2),
              _trial(3, 0.66)]
    return SearchRecord(arm=arm, variant=variant, budget="all", sampler="tpe", sampler_seed=0,
                        trials_requested=4, objective="val_acc",
                        space={"train.optimizer.lr": {"low": 1e-4, "high": 1e-2, "log": True,
                                                      "integer": False}},
                        validation="budget", val_images=100, train_seed=1000, epochs=4,
                        pruning={"startup_trials": 1, "warmup_epochs": 1}, trials=trials,
                        chosen=1)


@pytest.fixture(scope="module")
def study():
    base = summarise(_cells())
    return replace(base, searches=(summarise_search("scratch", _search()),
                                   summarise_search("finetune", _search("finetune",
                                                                        "finetune"))))


def test_gains_pair_recipe_with_recipe_and_tuned_with_tuned(study):
    pairs = {(g.finetune, g.scratch) for g in study.gains}
    assert pairs == {("finetune", "scratch"), ("finetune-tuned", "scratch-tuned")}
    fixed = next(g for g in study.gains if g.finetune == "finetune")
    tuned = next(g for g in study.gains if g.finetune == "finetune-tuned")
    assert fixed.diff.mean == pytest.approx(np.mean([0.20, 0.17, 0.17]), abs=1e-9)
    assert tuned.diff.mean == pytest.approx(np.mean([0.14, 0.12, 0.12]), abs=1e-9)


def test_the_shift_is_tuned_minus_fixed_gain_seed_by_seed(study):
    (shift,) = study.shifts
    per_seed = [(0.14 - 0.20), (0.12 - 0.17), (0.12 - 0.17)]
    assert (shift.finetune, shift.scratch, shift.budget) == ("finetune", "scratch", "all")
    assert shift.diff.mean == pytest.approx(np.mean(per_seed), abs=1e-9)
    assert shift.diff.method == "t" and shift.diff.n == 3
    assert shift.diff.high < 0  # tuning the scratch arm shrank the gain, beyond the noise
    doc = study.to_dict()
    assert doc["gain_shift"]["finetune-scratch"]["all"]["mean"] == pytest.approx(shift.diff.mean)
    assert study_metrics(study)["gain_shift.finetune-scratch.all"] == round(
        100 * shift.diff.mean, 2)  # points


def test_a_search_summary_holds_protocol_choice_cost_and_expected_max(study):
    s = study.searches[0]
    assert s.chosen.number == 1 and s.chosen.value == 0.66  # the earlier of the equal best
    assert s.count("pruned") == 1 and s.flops_saved == pytest.approx(2e9)
    assert s.seconds == pytest.approx(28.0) and s.flops == pytest.approx(14e9)
    ref = expected_max([0.60, 0.66, 0.40, 0.66], costs=[4e9, 4e9, 2e9, 4e9])
    assert s.curve.mean == ref.mean and s.curve.compute == ref.compute
    d = study.to_dict()["tuning"]["scratch/all"]
    assert d["chosen"] == {"trial": 1, "params": {"train.optimizer.lr": 0.002}, "val_acc": 0.66}
    assert d["cost"]["pruned"] == 1 and d["cost"]["gflops_saved_by_pruning"] == pytest.approx(2)
    assert d["expected_max"]["mean"][-1] <= 0.66
    metrics = study_metrics(study)
    assert metrics["search_val_acc.scratch.all"] == 66.0 and metrics[
        "search_trials.scratch.all"] == 4


def test_the_report_shows_the_tuned_comparison_the_protocol_and_the_curve(study):
    titles = [t for t, _, _ in study_rows(study)]
    assert any(t.startswith("Pretraining gain, recipes as written against both arms tuned")
               for t in titles)
    assert any(t.startswith("Searches:") for t in titles)
    (shift_table,) = [rows for t, _, rows in study_rows(study) if "both arms tuned" in t]
    assert shift_table[0][0] == "finetune − scratch" and shift_table[0][-1].startswith("-")
    text = study_markdown(study)
    assert "tpe (seed 0), 4 of K=4, median pruning after 1 epochs" in text
    assert "lr=0.002 (trial 1)" in text and "66.00%" in text
    figures = {name: fig for name, fig, _ in study_figures(study, {}, 10)}
    fig = figures["expected_max.png"]
    gids = {line.get_gid() for ax in fig.axes for line in ax.get_lines()}
    assert {"emax:scratch/all", "emax:finetune/all"} <= gids
    left = fig.axes[0]
    (line,) = [ln for ln in left.get_lines() if ln.get_gid() == "emax:scratch/all"]
    assert list(line.get_xdata()) == [1, 2, 3, 4]
    assert line.get_ydata()[0] == pytest.approx(100 * np.mean([0.60, 0.66, 0.40, 0.66]))
