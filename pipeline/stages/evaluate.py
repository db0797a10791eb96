"""Stage ``evaluate``: every variant of params.yaml on the test split, side by side.

Writes ``<out>/metrics.json`` (DVC metrics, per variant: top-1, top-5, loss, ECE, params, GFLOPs,
train time, images/s), ``<out>/confusion/<variant>.csv`` (one row per test image, ``actual`` and
``predicted``: DVC's confusion-matrix plot) and the report in ``<out>/report``
(:mod:`pipeline.report`: ``report.html``, ``report.md``, figures, per-epoch curves).

MLflow: each model is logged as an MLflow model (``pt2``, preprocessing included: see
:mod:`pipeline.serving`) into its variant's training run, registered as
``<evaluate.registered_model>-<variant>``. Then the test metrics go into each variant's run
(``test/acc``, ``test/acc_top5``, ``test/loss``, ``test/ece``, ``test/images_per_s``,
``model/gflops``), linked to its logged model and the test split's dataset; the report into the
comparison's parent run, and a variant run reused from an earlier comparison is moved under the
current parent.

    python -m pipeline.stages.evaluate --data data/prepared --models models --out results
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_write_json, atomic_write_text
from ..comparison import COLOR_TAG, COLORS
from ..config import Params
from ..data import load_prepared
from ..evaluation import evaluate_model, forward_gflops, load_trained
from ..models import CheckpointError, VisionTransformer
from ..predict import Predictor
from ..report import VariantResult, build_report
from ..serving import log_serving_model
from ..training.history import HISTORY
from ..training.run import resolve_accelerator, resolve_precision
from ..training.tracking import (
    GROUP_TAG,
    PARENT_TAG,
    TrackingError,
    comparison_group,
    comparison_parent,
    split_datasets,
    tracking_uri,
)
from ._cli import stage_main

log = logging.getLogger("evaluate")


_AMP_DTYPE = {"bf16-mixed": torch.bfloat16, "bf16-true": torch.bfloat16,
              "16-mixed": torch.float16, "32-true": None}


def _device_and_dtype(params: Params) -> tuple[torch.device, torch.dtype | None]:
    """The device and autocast dtype training used (same fallbacks: see resolve_precision)."""
    trainer = params.base.trainer
    gpu = resolve_accelerator(trainer.accelerator) == "gpu"
    precision, _ = resolve_precision(trainer)
    return torch.device("cuda" if gpu else "cpu"), _AMP_DTYPE[precision]


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


def read_history(model_dir: Path) -> list[dict]:
    path = model_dir / HISTORY
    if not path.is_file():
        log.warning("no %s: %s has no curves in the report", path, model_dir.name)
        return []
    return json.loads(path.read_text())


def log_to_mlflow(params: Params, runs: dict[str, dict], metrics: dict[str, dict],
                  report_dir: Path, confusion_dir: Path, data_dir: Path,
                  model_ids: dict[str, str]) -> str | None:
    """Test metrics into each variant's run, linked to its logged model (``model_ids``: the model
    page shows them) and to the test split's dataset; the report into the comparison's parent run
    (moving reused variant runs under it). A failure is reported, not fatal: the results on disk
    are the record. Returns the parent run id."""
    try:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri())
        test = split_datasets(data_dir)["test"]
        exp = client.get_experiment_by_name(params.base.mlflow_experiment)
        if exp is None:
            raise TrackingError(f"no experiment {params.base.mlflow_experiment!r}")
        group = comparison_group(params)
        parent = comparison_parent(client, exp.experiment_id, group)
        for i, (name, m) in enumerate(metrics.items()):
            run_id = runs[name]["run_id"]
            client.set_tag(run_id, COLOR_TAG, COLORS[i % len(COLORS)])
            tags = client.get_run(run_id).data.tags
            if tags.get(PARENT_TAG) != parent:
                log.info("%s: run %s moves under this comparison's parent run %s", name, run_id,
                         parent)
                client.set_tag(run_id, PARENT_TAG, parent)
                client.set_tag(run_id, GROUP_TAG, group.key)
            for key, metric in METRICS.items():
                client.log_metric(run_id, metric, float(m[key]), model_id=model_ids.get(name),
                                  dataset_name=test.name, dataset_digest=test.digest)
            client.log_artifact(run_id, str(confusion_dir / f"{name}.csv"), "evaluation")
        for name, m in metrics.items():  # the parent's own view of the comparison
            client.log_metric(parent, f"test/acc.{name}", float(m["top1"]))
        client.log_artifacts(parent, str(report_dir), "report")
        return parent
    except Exception as e:  # noqa: BLE001 - any tracking failure must not lose the results
        log.warning("could not log the test results to MLflow (%s): %s", tracking_uri(), e)
        return None


# metrics.json key -> MLflow metric name, the same in every variant's run
METRICS = {"top1": "test/acc", "top5": "test/acc_top5", "loss": "test/loss", "ece": "test/ece",
           "images_per_s": "test/images_per_s", "gflops": "model/gflops"}


def run(params: Params, args: argparse.Namespace) -> dict[str, dict]:
    manifest, splits = load_prepared(Path(args.data))
    images, labels = splits["test"]
    labels = np.asarray(labels, dtype=np.int64)
    classes = list(manifest["classes"])
    device, dtype = _device_and_dtype(params)
    out, models_dir = Path(args.out), Path(args.models)
    runs: dict[str, dict] = {}
    models: dict[str, VisionTransformer] = {}
    results: list[VariantResult] = []
    shown = attention_images(labels)
    for name in params.variants:
        kind, _ = params.variant(name)
        model_dir = models_dir / name
        run_file = model_dir / "run.json"
        if not run_file.is_file():
            raise CheckpointError(f"no {run_file}: train the {name!r} variant first (dvc repro)")
        runs[name] = json.loads(run_file.read_text())
        model, _ = load_trained(model_dir / runs[name]["best_ckpt"])
        models[name] = model
        explainer = Predictor(model, classes, device=device)  # predict's own rollout path
        res = evaluate_model(model, images, labels, batch_size=params.evaluate.batch_size,
                             device=device, amp_dtype=dtype)
        cfg = model.cfg
        results.append(VariantResult(
            name=name, kind=kind,
            model=f"{cfg.embed_dim}d/{cfg.depth}L/{cfg.patch_size}p@{cfg.img_size}",
            num_params=res.num_params, gflops=forward_gflops(model),
            train_seconds=float(runs[name]["train_seconds"]), images_per_s=res.images_per_s,
            probs=res.probs, history=read_history(model_dir),
            attention=np.stack([explainer.explain(img) for img in images[shown]]),
        ))
        write_confusion_csv(out / "confusion" / f"{name}.csv", labels, res.predictions, classes)
        log.info("%s: test top-1 %.4f top-5 %.4f (%.0f images/s)", name, res.top1, res.top5,
                 res.images_per_s)
    summary = build_report(out / "report", results, labels=labels, images=np.asarray(images),
                           classes=classes, dataset=manifest["dataset"], attention_index=shown)
    metrics = {}
    for r in results:
        m = {k: v for k, v in summary[r.name].items() if k != "per_class_acc"}
        metrics[r.name] = {"kind": r.kind, "model": r.model, **m,
                           "best_val_acc": runs[r.name]["best_val_acc"],
                           "epochs": runs[r.name]["epochs"], "test_images": int(len(labels)),
                           "device": str(device)}
    atomic_write_json(out / "metrics.json", metrics)
    prefix, model_ids = params.evaluate.registered_model, {}
    try:
        for name, model in models.items():
            # unlike the metrics below (a record of results already on disk), a registration that
            # was asked for and failed fails the stage, so that the next dvc repro does it again
            registered = f"{prefix}-{name}" if prefix else None
            try:
                info = log_serving_model(model, run_id=runs[name]["run_id"], classes=classes,
                                         image_shape=tuple(manifest["image_shape"]),
                                         registered_name=registered)
            except Exception as e:
                raise TrackingError(f"could not log the {name!r} model to MLflow "
                                    f"({tracking_uri()})"
                                    f"{f' as {registered!r}' if registered else ''}: {e}") from e
            model_ids[name] = info.model_id
            log.info("%s: MLflow model %s%s", name, info.model_uri,
                     f", registered as {registered!r} v{info.registered_model_version}"
                     if registered else "")
    finally:  # the metrics, linked to the models logged so far
        log_to_mlflow(params, runs, metrics, out / "report", out / "confusion", Path(args.data),
                      model_ids)
    print((out / "report" / "report.md").read_text())
    return metrics


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default="data/prepared")
    parser.add_argument("--models", default="models",
                        help="where the variants' checkpoint dirs are (<models>/<variant>)")
    parser.add_argument("--out", default="results")


if __name__ == "__main__":
    stage_main(__doc__, add_args, run)
