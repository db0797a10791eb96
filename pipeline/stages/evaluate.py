"""Stage ``evaluate``: every cell of the study on the test split, aggregated, reported, tracked.

    python -m pipeline.stages.evaluate --test data/test --models models --out results

A thin CLI over library functions, each callable on its own:

1. :func:`pipeline.evaluation.cell.load_cell` reads every cell's model file and records first, so
   a bad one is refused with one line before anything is written;
2. :func:`pipeline.evaluation.cell.evaluate_cell` runs each cell's classifier once over the test
   split (with ``evaluate.tta`` also the other views, beside the plain figures);
3. :func:`pipeline.evaluation.study.summarise` aggregates the cells over seeds, with the paired
   gain per budget (recipes against recipes, tuned cells against tuned cells, and what tuning
   changed in the gain), and the searches' ``trials.json``
   (:mod:`pipeline.evaluation.search_summary`) join it: their protocol, choice, cost and
   expected best validation score after n trials;
4. :func:`pipeline.report.build_report` renders the report: the headline sentence first, then
   what it does not show (:mod:`pipeline.evaluation.caveats`, read off the data), the study, and
   each variant's figures (one cell: its largest budget, first seed); the shown cells' confusion
   CSVs are written for DVC;
5. :mod:`pipeline.evaluation.metrics_file` gives ``metrics/`` (the answer in points, a file per
   gain and variant: what ``dvc metrics`` reads), ``study.json`` and ``cells.json``; all of these outputs are written
   into a staging dir and moved into place together (:func:`pipeline.atomic.publish`), so a
   failed or killed run leaves the last good results where they were;
6. :mod:`pipeline.tracking` logs the shown cells' models (registered as
   ``<evaluate.registered_model>-<variant>``) and the comparison: every cell's run under one
   parent, its test metrics, the study's aggregates and the report in the parent.

It reads the test split (``--test``, the one stage that does) and the cells' dirs, nothing of
the training data. Outputs (:mod:`pipeline.layout`): ``<out>/metrics/``, ``<out>/study.json``,
``<out>/cells.json``, ``<out>/report/``, ``<out>/confusion/<variant>.csv``.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_json, atomic_write_text, publish, staging_dir
from ..config import Params
from ..data import load_split
from ..errors import ParamsError
from ..evaluation.caveats import caveats
from ..evaluation.cell import (
    attention_images,
    attention_maps,
    evaluate_cell,
    load_cell,
    shown_cells,
)
from ..evaluation.metrics_file import answer, cells_document, write_answer
from ..evaluation.search_summary import load_searches
from ..evaluation.study import summarise
from ..evaluation.tta import TTAViews, check_shift
from ..layout import (
    MODELS,
    RESULTS,
    TEST,
    cell_keys,
    cells_file,
    confusion_file,
    metrics_dir,
    report_dir,
    study_file,
)
from ..models.device import autocast_dtype, inference_device
from ..report import VariantResult, build_report, confusion_csv
from ..report.tables import lead_markdown, study_sentence
from ..tracking.comparison import log_comparison
from ..tracking.serving import model_name, register_models
from ._cli import stage_main

log = logging.getLogger("evaluate")


def tta_views(params: Params, image_shape: tuple[int, ...]) -> TTAViews | None:
    """``evaluate.tta`` as views, checked against the test images' size (ParamsError)."""
    tta = params.evaluate.tta
    if tta is None:
        return None
    try:
        check_shift(tta.shift, *image_shape[1:3])
    except ValueError as e:
        raise ParamsError(f"evaluate.tta.shift: {e}") from None
    return TTAViews(tta.hflip, tta.shift)


def run(params: Params, args: argparse.Namespace) -> dict:
    test_dir, out, models_dir = Path(args.test), Path(args.out), Path(args.models)
    manifest, images, labels = load_split(test_dir, "test")
    labels = np.asarray(labels, dtype=np.int64)
    classes = list(manifest["classes"])
    device = inference_device(params.base.trainer.accelerator)
    dtype = autocast_dtype(device, params.base.trainer.precision)
    tta = tta_views(params, np.shape(images))
    keys = cell_keys(params.trained_variants, params.prepare.budgets, params.base.seeds)
    cells = {k: load_cell(k, models_dir, classes) for k in keys}  # every file, before any work
    searches = load_searches(params, models_dir)  # each search's trials.json, before any work
    results = []
    for key, cell in cells.items():
        r = evaluate_cell(cell, params.variant(key.variant)[0], images, labels,
                          batch_size=params.evaluate.batch_size, device=device, dtype=dtype,
                          tta=tta)
        results.append(r)
        log.info("%s: test top-1 %.4f top-5 %.4f (%.0f images/s)%s", key, r.metrics.top1,
                 r.metrics.top5, r.images_per_s, "" if r.tta is None else
                 f"; with TTA ({r.tta_views} views) top-1 {r.tta.top1:.4f} top-5 {r.tta.top5:.4f}")
    study = summarise([r.study_cell(labels) for r in results],
                      tta_views="" if tta is None else tta.describe())
    study = replace(study, searches=tuple(searches))
    shown = shown_cells(keys)
    by_key = {r.key: r for r in results}
    index = attention_images(labels)
    maps = attention_maps({v: cells[k] for v, k in shown.items()}, np.asarray(images[index]),
                          device=device, dtype=dtype)
    # every output is written into a staging dir and then moved into place together: a failed
    # or killed run leaves the last good results (DVC keeps them: persist)
    staging = staging_dir(out)
    found = caveats(params, study, results, {v: cells[k].history for v, k in shown.items()},
                    models_dir)
    build_report(report_dir(staging),
                 [VariantResult.of_cell(by_key[k], cells[k].history, maps[v])
                  for v, k in shown.items()],
                 labels=labels, images=np.asarray(images), classes=classes,
                 dataset=manifest["dataset"], attention_index=index, study=study,
                 caveats=found)
    for v, k in shown.items():
        atomic_write_text(confusion_file(v, staging),
                          confusion_csv(labels, by_key[k].metrics.predictions, classes))
    metrics = answer(study)
    write_answer(metrics_dir(staging), metrics)
    atomic_write_json(study_file(staging), study.to_dict())
    atomic_write_json(cells_file(staging), cells_document(results, classes, len(labels)))
    publish(staging, out)
    confusion = {k: confusion_file(v, out) for v, k in shown.items()}
    model_ids: dict[str, str] = {}
    try:
        register_models({v: (cells[k].trained, cells[k].run.run_id, model_name(k))
                         for v, k in shown.items()},
                        prefix=params.evaluate.registered_model,
                        image_shape=tuple(manifest["image_shape"]), model_ids=model_ids)
    finally:  # the metrics, linked to the models logged so far
        log_comparison(params, results, study, test_dir=test_dir, models_dir=models_dir,
                       report_dir=report_dir(out), confusion=confusion,
                       model_ids={shown[v]: i for v, i in model_ids.items()},
                       description="\n".join([*lead_markdown(study, found),
                                              study_sentence(study), "",
                                              "Tables and figures: the report (artifact "
                                              "report/report.html)."]))
    print((report_dir(out) / "report.md").read_text())
    return metrics


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--test", default=str(TEST), help="the test split (stage prepare)")
    parser.add_argument("--models", default=str(MODELS),
                        help="where the cells' dirs are (<models>/<variant>/<budget>/seed<k>)")
    parser.add_argument("--out", default=str(RESULTS))


if __name__ == "__main__":
    stage_main(__doc__, add_args, run)
