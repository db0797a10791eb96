"""What the answer does not show (pipeline/evaluation/caveats.py) and the report's headline
(pipeline/report/tables.py): read off the data, said only when the data says so."""

import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from pipeline.config import load_params
from pipeline.evaluation import caveats as cv
from pipeline.evaluation.stats import Interval
from pipeline.layout import pretraining_dir
from pipeline.records import EpochRow, History, RunRecord
from pipeline.report.tables import headline

ROOT = Path(__file__).resolve().parents[3]


def _result(variant: str, ece: float, tta_ece: float | None):
    return SimpleNamespace(key=SimpleNamespace(variant=variant),
                           metrics=SimpleNamespace(ece=ece),
                           tta=None if tta_ece is None else SimpleNamespace(ece=tta_ece))


def test_tta_calibration_names_the_variants_whose_ece_rose():
    results = [_result("ft", 0.14, 0.32), _result("ft", 0.16, 0.30),  # 15% -> 31%
               _result("sc", 0.10, 0.11), _result("sc", 0.12, 0.12)]  # about the same
    text = cv.tta_calibration(results)
    assert "ft 15.0% → 31.0%" in text and "sc" not in text
    assert cv.tta_calibration([_result("sc", 0.10, 0.11)]) is None
    assert cv.tta_calibration([_result("sc", 0.10, None)]) is None  # no TTA


def _history(losses):
    nan = math.nan
    return History(epochs=tuple(EpochRow(epoch=i, train_loss=x, train_acc=nan, val_loss=nan,
                                          val_acc=nan, lr=nan) for i, x in enumerate(losses)))


def test_still_falling_when_the_last_epochs_keep_lowering_the_loss():
    falling = _history([2.0 - 0.05 * i for i in range(30)])  # 0.65 -> 0.55 over the last 3
    flat = _history([2.0 - 0.05 * i for i in range(27)] + [0.70, 0.699, 0.701])
    text = cv.still_falling({"sc": falling, "ft": flat})
    assert "sc 0.700 → 0.550 over its last 3 epochs" in text and "ft" not in text
    assert cv.still_falling({"ft": flat}) is None
    assert cv.still_falling({"short": _history([1.0, 0.5])}) is None  # too few epochs to say


@pytest.fixture(scope="module")
def quick():
    return load_params(ROOT / "params.quick.yaml")


def test_recipes_differ_describes_both_arms(quick):
    study = SimpleNamespace(gains=[SimpleNamespace(finetune="finetune", scratch="scratch"),
                                   SimpleNamespace(finetune="finetune-tuned",
                                                   scratch="scratch-tuned")],
                            searches=("a search",))
    text = cv.recipes_differ(quick, study)
    assert "scratch: adamw lr 0.001, weight decay 0.05, 30 epochs" in text
    assert "finetune: sgd lr 0.03, weight decay 0, 30 epochs, backbone lr ×0.5" in text
    assert "both arms are also tuned" in text and "finetune-tuned" not in text


def test_pretraining_cost_from_the_pretraining_run(quick, tmp_path):
    study = SimpleNamespace(aggregates=[SimpleNamespace(variant="finetune", kind="finetune")])
    assert cv.pretraining_cost(quick, study, tmp_path) is None  # not pretrained yet: nothing
    RunRecord(run_id=None, experiment_id=None, tracking_uri="", best_ckpt="b", last_ckpt="l",
              model_file="m", best_val_acc=0.85, epochs=4, train_seconds=240.0,
              num_params=817_000, labelled=57_000).write(pretraining_dir("fmnist", tmp_path))
    text = cv.pretraining_cost(quick, study, tmp_path)
    assert "fmnist, 240 s of training" in text and "4 epochs over 57,000 fashion_mnist" in text
    tflops = float(text.split("about ")[1].split(" TFLOPs")[0])
    assert 5 < tflops < 20  # 3 x ~0.027 GFLOPs x 228,000 images = ~18.7 TFLOPs at most


def _gain(ft, sc, mean, low, high, budget="all", n=5):
    iv = Interval(mean=mean, std=0.05, low=low, high=high, half_width=(high - low) / 2, n=n,
                  level=0.95, method="t", paired=True)
    return SimpleNamespace(finetune=ft, scratch=sc, budget=budget, labelled=300, diff=iv)


def test_headline_leads_with_the_tuned_pair_and_gives_the_fixed_one():
    study = SimpleNamespace(budgets=("all",), gains=[
        _gain("finetune", "scratch", 0.121, 0.053, 0.190),
        _gain("finetune-tuned", "scratch-tuned", 0.241, 0.178, 0.303)])
    text = headline(study)
    assert text.startswith("Pretraining adds 24.1 points of test top-1 (95% CI 17.8 to 30.3, "
                           "paired t over 5 seeds): finetune-tuned against scratch-tuned, both "
                           "arms tuned")
    assert "With the recipes as written: +12.1 points (95% CI 5.3 to 19.0" in text
    untuned = SimpleNamespace(budgets=("all",),
                              gains=[_gain("finetune", "scratch", 0.02, -0.03, 0.07)])
    assert "the interval includes 0" in headline(untuned)
    assert headline(SimpleNamespace(budgets=("all",), gains=[])) is None
