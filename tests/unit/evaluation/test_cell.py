"""The evaluate stage's library functions, each on its own: a cell's files read and checked
(:func:`load_cell`), a cell evaluated into a :class:`CellResult` (:func:`evaluate_cell`), the
cell each variant's figures show, a cell's ``cells.json`` entry, and what MLflow gets of a cell
and of the study (``pipeline.tracking.comparison``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from corrupt_helpers import trained_variant
from pipeline.errors import RecordError
from pipeline.evaluation.cell import CellResult, evaluate_cell, load_cell, shown_cells
from pipeline.evaluation.metrics import classification_metrics
from pipeline.evaluation.metrics_file import answer, cell_record, cells_document
from pipeline.evaluation.study import summarise
from pipeline.evaluation.tta import TTAViews, tta_logits
from pipeline.layout import CellKey, cell_dir, cell_keys
from pipeline.models import batched_logits
from pipeline.tracking.comparison import cell_metrics, study_metrics

CLASSES = ["zero", "one", "two"]
CPU = torch.device("cpu")


def _cell(models, key: CellKey, seed: int, classes=CLASSES) -> None:
    trained_variant(cell_dir(key, models), classes, seed=seed, img_size=8, embed_dim=16, depth=1,
                    varied=True, epochs=1, train_seconds=2.0, labelled=30, passes=2, steps=8)


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (40, 8, 8, 1), dtype=np.uint8), rng.integers(0, 3, 40)


def test_evaluate_cell_computes_every_metric_once_from_the_logits(tmp_path, data):
    images, labels = data
    key = CellKey("scratch", "all", 0)
    _cell(tmp_path, key, 0)
    cell = load_cell(key, tmp_path, CLASSES)
    assert cell.run.labelled == 30 and cell.history.epochs[0].val_acc == 0.3
    r = evaluate_cell(cell, "scratch", images, labels, batch_size=16, device=CPU,
                      tta=TTAViews(hflip=True, shift=1))
    logits, _ = batched_logits(cell.trained.classifier, images, batch_size=16, device=CPU)
    want = classification_metrics(logits, labels)
    assert (r.metrics.top1, r.metrics.loss, r.metrics.ece) == (want.top1, want.loss, want.ece)
    tta, views = tta_logits(cell.trained.classifier, images, hflip=True, shift=1, batch_size=16,
                            device=CPU)
    assert r.tta_views == views == 10 and r.tta.top1 == classification_metrics(tta, labels).top1
    assert r.model == "16d/1L/4p@8" and r.num_params == sum(
        p.numel() for p in cell.trained.classifier.vit.parameters())
    study_cell = r.study_cell(labels)
    assert study_cell.top1 == r.metrics.top1 and study_cell.labelled == 30
    np.testing.assert_array_equal(study_cell.correct, want.predictions == labels)


def test_a_cell_trained_on_other_classes_is_refused(tmp_path):
    key = CellKey("finetune", "10", 1)
    _cell(tmp_path, key, 0, classes=["a", "b", "c"])
    with pytest.raises(RecordError, match="trained on the classes .* the test split has"):
        load_cell(key, tmp_path, CLASSES)


def test_each_variant_shows_its_largest_budget_first_seed():
    keys = cell_keys(["sc", "ft"], [10, "all", 100], [3, 1])
    assert shown_cells(keys) == {"sc": CellKey("sc", "all", 3), "ft": CellKey("ft", "all", 3)}


def test_cell_record_the_answer_and_what_mlflow_gets(tmp_path, data):
    images, labels = data
    results = []
    for i, key in enumerate(cell_keys(["scratch"], ["all"], [0, 1])):
        _cell(tmp_path, key, i)
        results.append(evaluate_cell(load_cell(key, tmp_path, CLASSES), "scratch", images,
                                     labels, batch_size=64, device=CPU))
    r: CellResult = results[0]
    rec = cell_record(r, CLASSES, len(labels))
    assert list(rec) == ["variant", "budget", "seed", "labelled", "passes", "steps", "kind",
                         "model", "top1", "top5", "loss", "ece", "num_params", "gflops",
                         "train_seconds", "images_per_s", "best_val_acc", "epochs",
                         "test_images", "device"]
    assert (rec["seed"], rec["passes"], rec["steps"], rec["test_images"]) == (0, 2, 8, 40)
    study = summarise([x.study_cell(labels) for x in results])
    assert list(cells_document(results, CLASSES, len(labels))) == ["scratch/all/seed0",
                                                                   "scratch/all/seed1"]
    assert study.to_dict()["top1"]["scratch"]["all"]["n"] == 2
    # the DVC metrics: points, rounded, each with its interval
    top1 = answer(study)["top1"]["scratch"]["all"]
    assert top1["mean"] == round(100 * study.aggregates[0].top1.mean, 2)
    assert set(top1) == {"mean", "low", "high"} and top1["low"] <= top1["mean"] <= top1["high"]
    assert set(cell_metrics(r)) == {"test/acc", "test/acc_top5", "test/loss", "test/ece",
                                    "test/images_per_s", "model/gflops"}
    assert cell_metrics(r)["test/acc"] == r.metrics.top1
    parent = study_metrics(study)
    assert parent["top1_mean.scratch.all"] == pytest.approx(  # points, rounded to 0.01
        100 * np.mean([x.metrics.top1 for x in results]), abs=0.005)
    assert {"top1_mean_low.scratch.all", "top1_mean_high.scratch.all"} <= set(parent)
