"""``metrics.json``: the study and every cell, in plain numbers (what ``dvc metrics`` reads).

    {"study": {"seeds", "budgets", "top1": {variant: {budget: interval}},
               "gain": {"<ft>-<scratch>": {budget: interval}}, with tuned cells "gain_shift":
               {"<ft>-<scratch>": {budget: interval}} (tuned minus fixed gain) and "tuning":
               {"<variant>/<budget>": protocol, chosen, cost, expected_max}, with TTA
               "tta_views", "tta_top1", "tta_effect"},
     "cells": {"<variant>/<budget>/seed<k>": {variant, budget, seed, labelled, passes, steps,
               kind, model, top1, top5, loss, ece, num_params, gflops, train_seconds,
               images_per_s, best_val_acc, epochs, test_images, device, with TTA "tta":
               {top1, top5, loss, ece, views}}}}

Accuracies and losses as fractions; intervals as :meth:`pipeline.evaluation.study.Study.to_dict`
writes them. Written atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..atomic import atomic_write_json
from .cell import CellResult
from .study import Study

TTA_KEYS = ("top1", "top5", "loss", "ece")


def cell_record(result: CellResult, classes: Sequence[str], test_images: int) -> dict:
    """One cell's entry of ``metrics.json``."""
    m, run = result.metrics, result.run
    summary = {k: v for k, v in m.summary(list(classes)).items() if k != "per_class_acc"}
    record = {"variant": result.key.variant, "budget": result.key.budget,
              "seed": result.key.seed, "labelled": run.labelled, "passes": run.passes,
              "steps": run.steps, "kind": result.kind, "model": result.model, **summary,
              "num_params": int(result.num_params), "gflops": float(result.gflops),
              "train_seconds": float(run.train_seconds),
              "images_per_s": float(result.images_per_s), "best_val_acc": run.best_val_acc,
              "epochs": run.epochs, "test_images": int(test_images), "device": result.device}
    if result.tta is not None:
        record["tta"] = {**{k: float(getattr(result.tta, k)) for k in TTA_KEYS},
                         "views": result.tta_views}
    return record


def metrics_document(study: Study, results: Sequence[CellResult], classes: Sequence[str],
                     test_images: int) -> dict:
    return {"study": study.to_dict(),
            "cells": {str(r.key): cell_record(r, classes, test_images) for r in results}}


def write_metrics(path: Path, study: Study, results: Sequence[CellResult],
                  classes: Sequence[str], test_images: int) -> dict:
    """Write ``metrics.json`` to ``path`` (atomically); returns what it holds."""
    doc = metrics_document(study, results, classes, test_images)
    atomic_write_json(path, doc)
    return doc
