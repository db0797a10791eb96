"""Stage ``evaluate``: every variant of params.yaml on the test split, side by side.

Reads each variant's trained-model file (``<models>/<variant>/model.safetensors``) and records
(``run.json``, ``history.json``) and nothing else of training. Runs each classifier once over the
test split (:func:`pipeline.models.batched_logits`, the autocast dtype of
:func:`pipeline.models.autocast_dtype` for the params' precision), computes every metric once from
the logits (:mod:`pipeline.evaluation.metrics`). With ``evaluate.tta`` it then runs the other
test-time augmentation views (:mod:`pipeline.evaluation.tta`) and computes the same metrics from
their mean softmax, reported beside the plain ones (never instead: the plain pass and its
throughput are as without TTA). It writes:

- ``<out>/metrics.json`` (DVC metrics, per variant: top-1, top-5, loss, ECE, params, GFLOPs, train
  time, images/s; with TTA, ``tta``: top-1, top-5, loss, ECE and the number of views);
- ``<out>/confusion/<variant>.csv`` (one row per test image, ``actual`` and ``predicted``: DVC's
  confusion-matrix plot);
- the report in ``<out>/report`` (:mod:`pipeline.report`, which renders the numbers it is given).

MLflow: this is the one stage that sees every variant, so it makes the comparison: it finds or
creates the comparison's parent run (keyed by the params the trained models depend on) and puts
every variant's training run (and a pretraining run of ours) under it; training runs know nothing
of comparisons. Each model is logged as an MLflow model (``pt2``, preprocessing included: see
:mod:`pipeline.serving`) into its variant's run, registered as
``<evaluate.registered_model>-<variant>``; then the test metrics go into each variant's run
(``test/acc``, ``test/acc_top5``, ``test/loss``, ``test/ece``, ``test/images_per_s``,
``model/gflops``; with TTA ``test/acc_tta``, ``test/acc_top5_tta``, ``test/loss_tta``,
``test/ece_tta``), linked to its logged model and the test split's dataset, and the report into
the parent run.

    python -m pipeline.stages.evaluate --data data/prepared --models models --out results
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import logging
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_write_json, atomic_write_text
from ..comparison import (
    COLOR_TAG,
    COLORS,
    GROUP_TAG,
    PARENT_TAG,
    comparison_group,
    comparison_parent,
)
from ..config import Params
from ..data import load_prepared
from ..data.lineage import split_datasets
from ..errors import ParamsError, RecordError, TrackingError
from ..evaluation.metrics import ClassificationMetrics, classification_metrics
from ..evaluation.study import Cell, Study, budget_order, summarise
from ..evaluation.tta import check_shift, describe_views, tta_logits
from ..explain import rollout
from ..models.artifact import load_classifier
from ..models.classifier import (
    autocast,
    autocast_dtype,
    batched_logits,
    forward_gflops,
    inference_device,
)
from ..records import read_history, read_run
from ..report import VariantResult, build_report
from ..serving import log_serving_model
from ..store import tracking_uri
from ._cli import stage_main

log = logging.getLogger("evaluate")

# metrics.json key -> MLflow metric name, the same in every variant's run
METRICS = {"top1": "test/acc", "top5": "test/acc_top5", "loss": "test/loss", "ece": "test/ece",
           "images_per_s": "test/images_per_s", "gflops": "model/gflops"}
# metrics.json's "tta" key -> MLflow metric name: test-time augmentation, beside the plain ones
TTA_METRICS = {"top1": "test/acc_tta", "top5": "test/acc_top5_tta", "loss": "test/loss_tta",
               "ece": "test/ece_tta"}


def write_confusion_csv(path: Path, labels, predictions, classes: list[str]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["actual", "predicted"])
    w.writerows((classes[a], classes[p]) for a, p in zip(labels, predictions))
    atomic_write_text(path, buf.getvalue())


def attention_images(labels: np.ndarray, n: int = 6) -> np.ndarray:
    """Indices of ``n`` test images for the attention figure: the first of each of the first
    ``n`` classes present (deterministic, and varied)."""
    firsts = [int(np.flatnonzero(labels == c)[0]) for c in np.unique(labels)]
    return np.array(firsts[:n], dtype=np.int64)


def pretraining_runs(params: Params, models_dir: Path) -> dict[str, str]:
    """``{pretrain_<name>: run id}`` of the pretraining runs of ours (``source: train``) that
    finished; they join the comparison as well."""
    runs = {}
    for name, pt in params.pretrained.items():
        run_dir = models_dir / "pretrained" / name / "checkpoints"
        if pt.source == "train" and (run_dir / "run.json").is_file():
            try:
                run_id = read_run(run_dir)["run_id"]
            except RecordError as e:
                log.warning("%s", e)
                continue
            if run_id:
                runs[f"pretrain_{name}"] = run_id
    return runs


def log_to_mlflow(params: Params, runs: dict[str, dict], records: dict[str, dict], study: Study,
                  report_dir: Path, confusion_dir: Path, data_dir: Path, models_dir: Path,
                  model_ids: dict[str, str], shown_cell: dict[str, str]) -> str | None:
    """The comparison in MLflow: every cell's run (and our pretraining runs) under the
    comparison's parent run, the test metrics in each cell's run, linked to its logged model
    (``model_ids`` by cell: the model page shows them) and to the test split's dataset; the
    study's aggregates (``top1_mean.<variant>.<budget>``, ``gain.<ft>-<scratch>.<budget>``; with
    TTA ``top1_tta_mean.<variant>.<budget>`` and ``tta_effect.<variant>.<budget>``; each with
    ``_low``/``_high``) and the report in the parent. A failure is reported, not fatal: the
    results on disk are the record. Returns the parent run id."""
    try:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri())
        test = split_datasets(data_dir)["test"]
        exp = client.get_experiment_by_name(params.base.mlflow_experiment)
        if exp is None:
            raise TrackingError(f"no experiment {params.base.mlflow_experiment!r}")
        group = comparison_group(params)
        parent = comparison_parent(client, exp.experiment_id, group)
        members = {key: r["run_id"] for key, r in runs.items() if r["run_id"]}
        members.update(pretraining_runs(params, models_dir))
        for key, run_id in members.items():
            if client.get_run(run_id).data.tags.get(PARENT_TAG) != parent:
                log.info("%s: run %s goes under this comparison's parent run %s", key, run_id,
                         parent)
                client.set_tag(run_id, PARENT_TAG, parent)
                client.set_tag(run_id, GROUP_TAG, group.key)
        colors = {v: COLORS[i % len(COLORS)] for i, v in enumerate(params.variants)}
        for key, m in records.items():
            run_id = runs[key]["run_id"]
            if not run_id:
                continue
            client.set_tag(run_id, COLOR_TAG, colors[m["variant"]])
            logged = [(metric, m[name]) for name, metric in METRICS.items()]
            if "tta" in m:
                logged += [(metric, m["tta"][name]) for name, metric in TTA_METRICS.items()]
            for metric, value in logged:
                client.log_metric(run_id, metric, float(value), model_id=model_ids.get(key),
                                  dataset_name=test.name, dataset_digest=test.digest)
        for variant, key in shown_cell.items():  # the cell the report's figures show
            if runs[key]["run_id"]:
                client.log_artifact(runs[key]["run_id"], str(confusion_dir / f"{variant}.csv"),
                                    "evaluation")
        # the parent's own view of the study: (name, which, interval), logged with _low/_high
        summary = [("top1_mean", f"{a.variant}.{a.budget}", a.top1) for a in study.aggregates]
        summary += [("gain", f"{g.finetune}-{g.scratch}.{g.budget}", g.diff)
                    for g in study.gains]
        for t in study.tta:
            summary += [("top1_tta_mean", f"{t.variant}.{t.budget}", t.top1),
                        ("tta_effect", f"{t.variant}.{t.budget}", t.effect)]
        for name, which, iv in summary:
            for what, value in (("", iv.mean), ("_low", iv.low), ("_high", iv.high)):
                client.log_metric(parent, f"{name}{what}.{which}", value)
        client.log_artifacts(parent, str(report_dir), "report")
        return parent
    except Exception as e:  # noqa: BLE001 - any tracking failure must not lose the results
        log.warning("could not log the test results to MLflow (%s): %s", tracking_uri(), e)
        return None


def cells_of(params: Params) -> list[tuple[str, str, int]]:
    """Every (variant, budget, seed) cell of the study, in params order."""
    budgets = sorted((str(b) for b in params.prepare.budgets), key=budget_order)
    return [(v, b, s) for v in params.variants for b in budgets for s in params.base.seeds]


def cell_key(variant: str, budget: str, seed: int) -> str:
    """The cell's dir under models/ (and its key in metrics.json)."""
    return f"{variant}/{budget}/seed{seed}"


def run(params: Params, args: argparse.Namespace) -> dict:
    data_dir, out, models_dir = Path(args.data), Path(args.out), Path(args.models)
    manifest, splits = load_prepared(data_dir)
    images, labels = splits["test"]
    labels = np.asarray(labels, dtype=np.int64)
    classes = list(manifest["classes"])
    device = inference_device(params.base.trainer.accelerator)
    dtype = autocast_dtype(device, params.base.trainer.precision)
    tta = params.evaluate.tta
    if tta is not None:
        try:
            check_shift(tta.shift, *np.shape(images)[1:3])
        except ValueError as e:
            raise ParamsError(f"evaluate.tta.shift: {e}") from None
    cells = cells_of(params)
    keys = [cell_key(*c) for c in cells]
    # every cell's files are read (and refused with one line) before any work
    runs = {k: read_run(models_dir / k) for k in keys}
    histories = {k: read_history(models_dir / k) for k in keys}
    trained = {k: load_classifier(models_dir / k / runs[k]["model_file"]) for k in keys}
    for k, t in trained.items():
        if t.classes != classes:
            raise RecordError(f"{models_dir / k / runs[k]['model_file']} was trained on the "
                              f"classes {t.classes}, the test split has {classes}; "
                              f"re-run the stage that trains it (dvc repro)")
    # each variant's figures (confusion, calibration, curves, attention) show one cell: its
    # largest budget, first seed; the study's curve and tables show every cell
    largest = max((b for _, b, _ in cells), key=budget_order)
    shown_cell = {v: cell_key(v, largest, params.base.seeds[0]) for v in params.variants}
    shown = attention_images(labels)
    study_cells, records, results = [], {}, []
    for (variant, budget, seed), k in zip(cells, keys):
        kind, _ = params.variant(variant)
        t = trained[k]
        logits, images_per_s = batched_logits(t.classifier, images,
                                              batch_size=params.evaluate.batch_size,
                                              device=device, dtype=dtype)
        m = classification_metrics(logits, labels)
        mt, views, with_tta = None, 0, {}
        if tta is not None:  # beside the plain figures: their logits are the first view's
            tta_out, views = tta_logits(t.classifier, images, hflip=tta.hflip, shift=tta.shift,
                                        batch_size=params.evaluate.batch_size, device=device,
                                        dtype=dtype, plain=logits)
            mt = classification_metrics(tta_out, labels)
            with_tta = {"tta_top1": mt.top1, "tta_correct": mt.predictions == labels}
        study_cells.append(Cell(variant, kind, budget, seed, int(runs[k]["labelled"]), m.top1,
                                m.predictions == labels, **with_tta))
        cfg = t.cfg
        r = VariantResult(
            name=variant, kind=kind,
            model=f"{cfg.embed_dim}d/{cfg.depth}L/{cfg.patch_size}p@{cfg.img_size}",
            num_params=sum(p.numel() for p in t.classifier.vit.parameters()),
            gflops=forward_gflops(t.classifier.vit),
            train_seconds=float(runs[k]["train_seconds"]), images_per_s=images_per_s,
            metrics=m, history=histories[k], attention=None)
        records[k] = {"variant": variant, "budget": budget, "seed": seed,
                      "labelled": int(runs[k]["labelled"]),
                      "passes": int(runs[k].get("passes", 1)),
                      "steps": int(runs[k].get("steps", 0)),
                      **variant_record(r, m, runs[k], len(labels), device, classes)}
        if mt is not None:
            records[k]["tta"] = {**{key: float(getattr(mt, key)) for key in TTA_METRICS},
                                 "views": views}
        if shown_cell[variant] == k:
            with torch.no_grad(), autocast(device, dtype):
                _, maps = rollout(t.classifier,
                                  torch.from_numpy(np.array(images[shown])).to(device))
            results.append(dataclasses.replace(r, attention=maps.cpu().numpy()))
            write_confusion_csv(out / "confusion" / f"{variant}.csv", labels, m.predictions,
                                classes)
        log.info("%s: test top-1 %.4f top-5 %.4f (%.0f images/s)%s", k, m.top1, m.top5,
                 images_per_s, "" if mt is None else
                 f"; with TTA ({views} views) top-1 {mt.top1:.4f} top-5 {mt.top5:.4f}")
    study = summarise(study_cells, tta_views="" if tta is None else
                      describe_views(hflip=tta.hflip, shift=tta.shift))
    build_report(out / "report", results, labels=labels, images=np.asarray(images),
                 classes=classes, dataset=manifest["dataset"], attention_index=shown,
                 study=study)
    metrics = {"study": study.to_dict(), "cells": records}
    atomic_write_json(out / "metrics.json", metrics)
    model_ids: dict[str, str] = {}
    shown_runs = {v: runs[k] for v, k in shown_cell.items()}
    try:
        register(params, {v: trained[k] for v, k in shown_cell.items()}, shown_runs, manifest,
                 model_ids)
    finally:  # the metrics, linked to the models logged so far
        log_to_mlflow(params, runs, records, study, out / "report", out / "confusion",
                      data_dir, models_dir, {shown_cell[v]: i for v, i in model_ids.items()},
                      shown_cell)
    print((out / "report" / "report.md").read_text())
    return metrics


def variant_record(r: VariantResult, m: ClassificationMetrics, run: dict, n_test: int,
                   device: torch.device, classes: list[str]) -> dict:
    """One cell's entry of metrics.json (plain numbers, what ``dvc metrics diff`` compares)."""
    summary = {k: v for k, v in m.summary(classes).items() if k != "per_class_acc"}
    return {"kind": r.kind, "model": r.model, **summary, "num_params": int(r.num_params),
            "gflops": float(r.gflops), "train_seconds": float(r.train_seconds),
            "images_per_s": float(r.images_per_s), "best_val_acc": run["best_val_acc"],
            "epochs": run["epochs"], "test_images": int(n_test), "device": str(device)}


def register(params: Params, trained: dict, runs: dict[str, dict], manifest: dict,
             model_ids: dict[str, str]) -> None:
    """Each classifier as an MLflow model in its training run (``model_ids`` gets its id), and
    registered if params ask. Unlike the metrics (a record of results already on disk), a
    registration that was asked for and failed fails the stage, so the next dvc repro does it
    again."""
    prefix = params.evaluate.registered_model
    for name, t in trained.items():
        registered = f"{prefix}-{name}" if prefix else None
        try:
            info = log_serving_model(t.classifier, run_id=runs[name]["run_id"],
                                     classes=t.classes,
                                     image_shape=tuple(manifest["image_shape"]),
                                     registered_name=registered)
        except Exception as e:
            raise TrackingError(f"could not log the {name!r} model to MLflow ({tracking_uri()})"
                                f"{f' as {registered!r}' if registered else ''}: {e}") from e
        model_ids[name] = info.model_id
        log.info("%s: MLflow model %s%s", name, info.model_uri,
                 f", registered as {registered!r} v{info.registered_model_version}"
                 if registered else "")


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default="data/prepared")
    parser.add_argument("--models", default="models",
                        help="where the variants' checkpoint dirs are (<models>/<variant>)")
    parser.add_argument("--out", default="results")


if __name__ == "__main__":
    stage_main(__doc__, add_args, run)
