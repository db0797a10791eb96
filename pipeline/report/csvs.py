"""Every CSV text the report writes (numbers as fractions, ``%.8g``, empty cells where a value is
missing), for DVC plots and for a look: the training curves of a variant (:func:`curves_csv`),
test accuracy per class (:func:`per_class_csv`), the label-budget study's curve and gain
(:func:`curve_csv`, :func:`gain_csv`, :func:`study_csvs`) and the (actual, predicted) class of
every test image (:func:`confusion_csv`). Each returns the text; the caller writes it."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from ..evaluation.study import Study
    from ..records import EpochRow
    from .types import VariantResult

CURVE_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr")
STUDY_CURVE_COLUMNS = ("variant", "kind", "budget", "per_class", "labelled", "mean", "low",
                       "high", "n", "method")
STUDY_GAIN_COLUMNS = ("finetune", "scratch", "budget", "per_class", "labelled", "mean", "low",
                      "high", "n", "method", "excludes_zero")


def csv_cell(x) -> str:
    """A number in a CSV cell: ``%.8g``, empty when None or not finite."""
    if x is None:
        return ""
    x = float(x)
    return format(x, ".8g") if math.isfinite(x) else ""


def _csv(columns: Sequence[str], rows) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    w.writerows(rows)
    return buf.getvalue()


def curves_csv(history: Sequence[EpochRow]) -> str:
    """epoch,train_loss,train_acc,val_loss,val_acc,lr per epoch; empty cells where NaN."""
    return _csv(CURVE_COLUMNS, ([int(row.epoch), *(csv_cell(getattr(row, c))
                                                   for c in CURVE_COLUMNS[1:])]
                                for row in history))


def per_class_csv(variants: Sequence[VariantResult], classes: Sequence[str]) -> str:
    """class,<variant>,... : test accuracy per class; empty for a class with no test image."""
    return _csv(["class", *(v.name for v in variants)],
                ([c, *(csv_cell(v.metrics.per_class[i]) for v in variants)]
                 for i, c in enumerate(classes)))


def confusion_csv(labels: Sequence[int] | np.ndarray, predictions: Sequence[int] | np.ndarray,
                  classes: Sequence[str]) -> str:
    """actual,predicted: one row per test image, in test-set order, with class names."""
    return _csv(["actual", "predicted"],
                ((classes[a], classes[p]) for a, p in zip(labels, predictions)))


def _curve_rows(study: Study, num_classes: int, variant: str | None = None) -> list[list]:
    return [[a.variant, a.kind, a.budget, csv_cell(a.labelled / num_classes), a.labelled,
             csv_cell(a.top1.mean), csv_cell(a.top1.low), csv_cell(a.top1.high), a.top1.n,
             a.top1.method]
            for a in study.aggregates if variant is None or a.variant == variant]


def curve_csv(study: Study, num_classes: int) -> str:
    """variant,kind,budget,per_class,labelled,mean,low,high,n,method: one row per (variant,
    budget); accuracies as fractions, ``per_class`` = labelled / num_classes."""
    return _csv(STUDY_CURVE_COLUMNS, _curve_rows(study, num_classes))


def gain_csv(study: Study, num_classes: int) -> str:
    """finetune,scratch,budget,per_class,labelled,mean,low,high,n,method,excludes_zero: one row
    per pair and budget; differences as fractions."""
    return _csv(STUDY_GAIN_COLUMNS, [
        [g.finetune, g.scratch, g.budget, csv_cell(g.labelled / num_classes), g.labelled,
         csv_cell(g.diff.mean), csv_cell(g.diff.low), csv_cell(g.diff.high), g.diff.n,
         g.diff.method, str(g.diff.excludes_zero).lower()] for g in study.gains])


def study_csvs(study: Study, num_classes: int) -> dict[str, str]:
    """The study's CSV files, ``{path under the report dir: text}``: ``curve.csv``,
    ``gain.csv``, then ``study/<variant>.csv`` per variant, the rows of :func:`curve_csv` that
    are that variant's (DVC plots draws one line per file)."""
    out = {"curve.csv": curve_csv(study, num_classes), "gain.csv": gain_csv(study, num_classes)}
    for variant in dict.fromkeys(a.variant for a in study.aggregates):
        out[f"study/{variant}.csv"] = _csv(STUDY_CURVE_COLUMNS,
                                           _curve_rows(study, num_classes, variant))
    return out
