"""Stage ``evaluate``: every trained variant on the test split, side by side.

Writes per variant ``<out>/<variant>/metrics.json`` (DVC metrics: top-1, top-5, loss, parameter
count, images/s) and ``<out>/<variant>/confusion.csv`` (one row per test image, ``actual`` and
``predicted``: DVC's confusion-matrix plot), plus ``<out>/comparison.md``. The test metrics and
files are also logged into each variant's MLflow training run, and the model itself as an MLflow
model (``pt2``, preprocessing included: see :mod:`pipeline.serving`), registered as
``<evaluate.registered_model>-<variant>`` for ``mlflow models serve``.

    python -m pipeline.stages.evaluate --data data/prepared \
        --variant scratch=models/scratch --variant finetune=models/finetune --out results
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
from pathlib import Path

import torch

from ..atomic import atomic_write_json, atomic_write_text
from ..config import Params
from ..data import load_prepared
from ..evaluation import EvalResult, comparison_markdown, evaluate_model, load_trained
from ..models import CheckpointError
from ..training.run import resolve_accelerator, resolve_precision
from ..serving import log_serving_model
from ..training.tracking import TrackingError, tracking_uri
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


def log_to_mlflow(run_info: dict, metrics: dict, files: list[Path]) -> None:
    """Test metrics and result files into the variant's training run; a failure is reported,
    not fatal: the results on disk are the record."""
    try:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri())
        run_id = run_info["run_id"]
        for key in ("top1", "top5", "loss", "images_per_s"):
            name = {"top1": "acc", "top5": "acc_top5"}.get(key, key)
            client.log_metric(run_id, f"test/{name}", metrics[key])
        for f in files:
            client.log_artifact(run_id, str(f), "evaluation")
    except Exception as e:  # noqa: BLE001 - any tracking failure must not lose the results
        log.warning("could not log %s's test metrics to MLflow (%s): %s",
                    metrics["variant"], tracking_uri(), e)


def run(params: Params, args: argparse.Namespace) -> dict[str, dict]:
    manifest, splits = load_prepared(Path(args.data))
    images, labels = splits["test"]
    classes = list(manifest["classes"])
    device, dtype = _device_and_dtype(params)
    out = Path(args.out)
    rows: dict[str, dict] = {}
    runs: dict[str, dict] = {}
    models = {}
    for spec in args.variant:
        name, _, model_dir = spec.partition("=")
        model_dir = Path(model_dir)
        run_file = model_dir / "run.json"
        if not run_file.is_file():
            raise CheckpointError(f"no {run_file}: train the {name!r} variant first (dvc repro)")
        runs[name] = json.loads(run_file.read_text())
        model, _ = load_trained(model_dir / runs[name]["best_ckpt"])
        models[name] = model
        res: EvalResult = evaluate_model(model, images, labels, batch_size=params.evaluate.batch_size,
                                         device=device, amp_dtype=dtype)
        variant_out = out / name
        metrics = {
            "variant": name,
            "model": f"{model.cfg.embed_dim}d/{model.cfg.depth}L/{model.cfg.patch_size}p"
                     f"@{model.cfg.img_size}",
            "top1": res.top1, "top5": res.top5, "loss": res.loss,
            "num_params": res.num_params, "images_per_s": res.images_per_s,
            "best_val_acc": runs[name]["best_val_acc"], "train_seconds": runs[name]["train_seconds"],
            "test_images": int(len(labels)), "device": str(device),
        }
        atomic_write_json(variant_out / "metrics.json", metrics)
        write_confusion_csv(variant_out / "confusion.csv", labels, res.predictions, classes)
        rows[name] = metrics
        log.info("%s: test top-1 %.4f top-5 %.4f (%.0f images/s)", name, res.top1, res.top5,
                 res.images_per_s)
    table = atomic_write_text(out / "comparison.md", comparison_markdown(rows, manifest["dataset"]))
    for name, metrics in rows.items():
        log_to_mlflow(runs[name], metrics, [out / name / "metrics.json",
                                            out / name / "confusion.csv", table])
    prefix = params.evaluate.registered_model
    for name, model in models.items():
        # unlike the metrics above (a record of results already on disk), a registration that was
        # asked for and failed fails the stage, so that the next dvc repro does it again
        registered = f"{prefix}-{name}" if prefix else None
        try:
            info = log_serving_model(model, run_id=runs[name]["run_id"], classes=classes,
                                     image_shape=tuple(manifest["image_shape"]),
                                     registered_name=registered)
        except Exception as e:
            raise TrackingError(f"could not log the {name!r} model to MLflow ({tracking_uri()})"
                                f"{f' as {registered!r}' if registered else ''}: {e}") from e
        log.info("%s: MLflow model %s%s", name, info.model_uri,
                 f", registered as {registered!r} v{info.registered_model_version}"
                 if registered else "")
    print(table.read_text())
    return rows


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default="data/prepared")
    parser.add_argument("--variant", action="append", required=True, metavar="NAME=DIR",
                        help="a trained variant and its checkpoint dir; repeat per variant")
    parser.add_argument("--out", default="results")


if __name__ == "__main__":
    stage_main(__doc__, add_args, run)
