"""Stages ``train_scratch@<name>`` and ``finetune@<name>``: one Lightning training run of one variant.

``<name>`` is a key of ``scratch`` or ``finetune`` in params.yaml:
- a ``scratch`` variant: its ViT from random initialisation;
- a ``finetune`` variant: its ViT initialised from the weights of ``pretrained.<its pretrained>``
  (new zero-initialised head), backbone frozen for ``freeze_epochs`` epochs, then trained at
  ``lr * backbone_lr_scale``.

One study cell: the variant at a label budget (``--budget``) with one seed (``--seed``), in its
dir ``models/<variant>/<budget>/seed<k>`` (:mod:`pipeline.layout`):

    python -m pipeline.stages.train scratch_ti4 --budget 100 --seed 0
    python -m pipeline.stages.train finetune_b16 --budget all --seed 1 \
        --pretrained models/pretrained/b16_in21k/model.safetensors

Writes ``<out>/model.safetensors`` (the trained model: weights, config, class names,
preprocessing) and ``run.json``, what later stages read; the ``evaluate`` stage puts the MLflow
run under the comparison's parent run. An interrupted run resumes from ``<out>/last.ckpt`` when
started again with the same params, data and pretrained weights (``dvc repro`` keeps ``<out>``:
``persist: true``); ``PIPELINE_FRESH=1`` or ``--fresh`` starts afresh.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import lightning as L

from ..config import Params
from ..data import read_manifest
from ..data.budgets import parse_budget
from ..data.splits import MANIFEST
from ..hashing import file_sha256
from ..layout import PREPARED, CellKey, cell_dir, pretrained_file
from ..models.classifier import ImageClassifier
from ..models.vit import VisionTransformer
from ..models.weights import load_pretrained
from ..records import RunRecord
from ..training.fit import TrainingJob, fit
from ._cli import stage_main

log = logging.getLogger("train")


def run(params: Params, args: argparse.Namespace) -> RunRecord:
    data = Path(args.data)
    kind, vp = params.variant(args.variant)
    seed = params.base.seeds[0] if args.seed is None else args.seed
    key = CellKey(args.variant, args.budget, seed)
    out = Path(args.out) if args.out else cell_dir(key)
    budget = parse_budget(args.budget)
    manifest = read_manifest(data)
    L.seed_everything(seed)  # the cell's seed gives its initial weights (and data order, ...)
    vit = VisionTransformer(vp.model.vit_config(num_classes=manifest["num_classes"]))
    # what the run is made of; a change of any of it starts a new run instead of resuming
    # (not the list of seeds: adding one must not restart the cells already there)
    logged = {"base": params.base.model_dump(exclude={"seeds"}), "variant": vp.model_dump(),
              "dataset": manifest["dataset"], "model.variant": vp.model.variant, "kind": kind,
              "cell": {"seed": seed, "budget": args.budget},  # not "budget": the DataModule's
              "data.manifest_sha256": file_sha256(data / MANIFEST)}
    if kind == "finetune":  # any checkpoint layout, a model file of ours included
        weights = Path(args.pretrained) if args.pretrained else pretrained_file(vp.pretrained)
        load_pretrained(vit, weights)
        logged["pretrained.sha256"] = file_sha256(weights)
    job = TrainingJob(
        name=str(key), stage="train_scratch" if kind == "scratch" else "finetune", recipe=vp,
        seed=seed, data_dir=data, out_dir=out, logged_params=logged, budget=budget,
        tags={"variant": args.variant, "seed": str(seed), "budget": args.budget})
    record = fit(job, ImageClassifier(vit, **vp.model.normalisation), params.base.trainer,
                 params.base.mlflow_experiment, fresh=True if args.fresh else None)
    if record.run_id is not None:  # global rank 0 (the other ranks have no run)
        log.info("%s: best val/acc %.4f in %.0f s (MLflow run %s)",
                 key, record.best_val_acc, record.train_seconds, record.run_id)
    return record


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("variant", help="a key of scratch or finetune in params.yaml")
    parser.add_argument("--seed", type=int, default=None,
                        help="the cell's seed (default: the first of base.seeds)")
    parser.add_argument("--budget", default="all",
                        help="labelled train images per class, or 'all' (default)")
    parser.add_argument("--data", default=str(PREPARED))
    parser.add_argument("--out", default=None,
                        help="the cell's dir (default: models/<variant>/<budget>/seed<k>)")
    parser.add_argument("--pretrained", default=None,
                        help="weights to start from (finetune only; default "
                             "models/pretrained/<its pretrained>/model.safetensors)")
    parser.add_argument("--fresh", action="store_true",
                        help="do not resume an interrupted run (same as PIPELINE_FRESH=1)")


if __name__ == "__main__":
    stage_main(__doc__, add_args, run)
