"""The evaluate stage's JSON files: the answer for ``dvc metrics``, the study in full, every cell.

``metrics/`` (DVC's metrics: small, so that ``dvc metrics show`` and ``dvc metrics diff`` fit a
terminal), in percentage points rounded to 0.01, one file per gain and per variant, each
``{budget: {"mean", "low", "high"}}`` (the 95% interval), so that ``dvc metrics show`` prints a
row per file and a column per budget and bound (sorted by path, the gains first; ``dvc metrics
diff`` lists files in no fixed order: ``--targets results/metrics/gain`` gives the gains alone)::

    gain/<ft>-<scratch>.json         recipes against recipes, tuned cells against tuned cells
    gain_shift/<ft>-<scratch>.json   tuned minus fixed gain (with tuning)
    top1/<variant>.json              each variant's test top-1

``study.json``: :meth:`pipeline.evaluation.study.Study.to_dict` (fractions; each interval with
its method, spread, seeds; the searches; with TTA its figures). ``cells.json``, one entry per
cell ``"<variant>/<budget>/seed<k>"``: variant, budget, seed, labelled, passes, steps, kind,
model, top1, top5, loss, ece, num_params, gflops, train_seconds, images_per_s, best_val_acc,
epochs, test_images, device, with TTA ``"tta": {top1, top5, loss, ece, views}`` (fractions).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from ..atomic import atomic_write_json
from .cell import CellResult
from .stats import Interval
from .study import Study

TTA_KEYS = ("top1", "top5", "loss", "ece")


def cell_record(result: CellResult, classes: Sequence[str], test_images: int) -> dict:
    """One cell's entry of ``cells.json``."""
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


def cells_document(results: Sequence[CellResult], classes: Sequence[str],
                   test_images: int) -> dict:
    return {str(r.key): cell_record(r, classes, test_images) for r in results}


def _points(iv: Interval) -> dict:
    """``mean``, ``low``, ``high`` in points (0.01); a bound the method has none of: null."""
    def pt(x: float) -> float | None:
        return round(100 * float(x), 2) if math.isfinite(x) else None
    return {"mean": pt(iv.mean), "low": pt(iv.low), "high": pt(iv.high)}


def answer(study: Study) -> dict:
    """``{"gain": {pair: {budget: points}}, "gain_shift": ..., "top1": {variant: ...}}``: the
    gains, what tuning changed in them, and each variant's test top-1, per budget, in points."""
    out: dict = {"gain": {}}
    for g in study.gains:
        out["gain"].setdefault(f"{g.finetune}-{g.scratch}", {})[g.budget] = _points(g.diff)
    if study.shifts:
        out["gain_shift"] = {}
        for s in study.shifts:
            out["gain_shift"].setdefault(f"{s.finetune}-{s.scratch}", {})[s.budget] = \
                _points(s.diff)
    out["top1"] = {}
    for a in study.aggregates:
        out["top1"].setdefault(a.variant, {})[a.budget] = _points(a.top1)
    return out


def write_answer(directory: Path, doc: dict) -> list[Path]:
    """:func:`answer` as ``<directory>/<what>/<name>.json``, each written atomically."""
    return [atomic_write_json(Path(directory, what, f"{name}.json"), per_budget)
            for what, by_name in doc.items() for name, per_budget in by_name.items()]
