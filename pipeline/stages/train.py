"""Stages ``train_scratch`` and ``finetune``: one Lightning training run of one variant.

- ``scratch``: the ``train_scratch.model`` ViT from random initialisation.
- ``finetune``: the ``finetune.model`` ViT initialised from the ``pretrained`` stage's weights
  (new zero-initialised head), backbone frozen for ``finetune.freeze_epochs`` epochs, then
  trained at ``lr * backbone_lr_scale``.

    python -m pipeline.stages.train scratch --data data/prepared --out models/scratch
    python -m pipeline.stages.train finetune --data data/prepared --out models/finetune \
        --pretrained models/pretrained/model.safetensors

An interrupted run resumes from ``<out>/last.ckpt`` when started again with the same params, data
and pretrained weights (``dvc repro`` keeps ``<out>``: ``persist: true``); ``PIPELINE_FRESH=1``
or ``--fresh`` starts afresh.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import lightning as L

from ..config import Params
from ..data import read_manifest
from ..data.prepare import MANIFEST
from ..models import build_vit, load_pretrained
from ..training.resume import file_sha256
from ..training.run import TrainResult, fit
from ._cli import stage_main

log = logging.getLogger("train")


def run(params: Params, args: argparse.Namespace) -> TrainResult:
    data, out = Path(args.data), Path(args.out)
    manifest = read_manifest(data)
    stage_params = params.train_scratch if args.variant == "scratch" else params.finetune
    L.seed_everything(params.base.seed)  # the same seed gives the same initial weights
    cfg = stage_params.model.vit_config(num_classes=manifest["num_classes"])
    model = build_vit("custom", **cfg.to_dict())
    stage = "train_scratch" if args.variant == "scratch" else "finetune"
    # what the run is made of; a change of any of it starts a new run instead of resuming
    logged = {"base": params.base.model_dump(), stage: stage_params.model_dump(),
              "dataset": manifest["dataset"], "model.variant": stage_params.model.variant,
              "data.manifest_sha256": file_sha256(data / MANIFEST)}
    extra = {}
    if args.variant == "finetune":
        load_pretrained(model, args.pretrained)
        logged["pretrained.sha256"] = file_sha256(args.pretrained)
        extra = dict(freeze_epochs=params.finetune.freeze_epochs,
                     backbone_lr_scale=params.finetune.backbone_lr_scale)
    result = fit(
        name=args.variant, stage=stage, model=model, params=stage_params,
        trainer_params=params.base.trainer, experiment=params.base.mlflow_experiment,
        seed=params.base.seed, data_dir=data, out_dir=out, logged_params=logged,
        fresh=True if args.fresh else None, **extra,
    )
    log.info("%s: best val/acc %.4f in %.0f s (MLflow run %s)",
             args.variant, result.best_val_acc, result.train_seconds, result.run_id)
    return result


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("variant", choices=["scratch", "finetune"])
    parser.add_argument("--data", default="data/prepared")
    parser.add_argument("--out", required=True, help="checkpoint dir, e.g. models/scratch")
    parser.add_argument("--pretrained", default="models/pretrained/model.safetensors",
                        help="weights to start from (finetune only)")
    parser.add_argument("--fresh", action="store_true",
                        help="do not resume an interrupted run (same as PIPELINE_FRESH=1)")


if __name__ == "__main__":
    stage_main(__doc__, add_args, run)
