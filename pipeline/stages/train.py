"""Stages ``train_scratch@<name>`` and ``finetune@<name>``: one Lightning training run of one variant.

``<name>`` is a key of ``scratch`` or ``finetune`` in params.yaml:
- a ``scratch`` variant: its ViT from random initialisation;
- a ``finetune`` variant: its ViT initialised from the weights of ``pretrained.<its pretrained>``
  (new zero-initialised head), backbone frozen for ``freeze_epochs`` epochs, then trained at
  ``lr * backbone_lr_scale``.

``<name>-tuned`` (a variant with a search in ``tune``): its recipe with what the search chose at
this budget (``models/<name>-tuned/choice/<budget>/chosen.json``, or ``--chosen``) applied; the cell's MLflow
params and its model file's metadata carry the chosen values.

One study cell: the variant at a label budget (``--budget``) with one seed (``--seed``), in its
dir ``models/<variant>/<budget>/seed<k>`` (:mod:`pipeline.layout`); ``--all-seeds`` (what the
DVC stages run) trains every seed of ``base.seeds`` one after another in this process (one process
start, one set of imports), keeping a cell that was already trained with the same params and the
same code, so adding a seed trains only the new one:

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
from dataclasses import dataclass
from pathlib import Path

from ..config import Params, Recipe, apply_overrides, base_name
from ..data import read_manifest
from ..data.budgets import parse_budget
from ..data.splits import MANIFEST
from ..errors import RecordError
from ..hashing import code_digest, file_sha256
from ..layout import PREPARED, CellKey, budget_dir, cell_dir, chosen_file
from ..records import Choice, RunRecord
from ..training.fit import TrainingJob, fit
from ..training.start import start_model
from ._cli import pretrained_weights, stage_main

log = logging.getLogger("train")


@dataclass(frozen=True)
class Cells:
    """What every seed's cell of one stage run shares, read and hashed once: the recipe (with a
    search's choice applied), its weights, the data, and the params the runs are made of."""

    kind: str
    recipe: Recipe
    tuned: Choice | None
    weights: Path | None  # a fine-tune variant's pretrained weights
    num_classes: int
    logged: dict  # without the cell's own seed and budget
    code: str


def cells(params: Params, args: argparse.Namespace) -> Cells:
    data = Path(args.data)
    kind, vp = params.variant(args.variant)
    manifest = read_manifest(data)
    tuned = None
    if args.variant not in params.variants:  # <name>-tuned: the search's choice
        chosen = getattr(args, "chosen", None)
        path = Path(chosen) if chosen else chosen_file(base_name(args.variant), args.budget)
        tuned = Choice.read(path.parent)
        if (tuned.variant, tuned.budget) != (base_name(args.variant), str(args.budget)):
            raise RecordError(f"{path} is the choice of {tuned.variant} at budget "
                              f"{tuned.budget}, not of {args.variant} at {args.budget}; "
                              "re-run the search (dvc repro)")
        vp = apply_overrides(vp, tuned.overrides)
    # what the runs are made of; a change of any of it starts a new run instead of resuming
    # (not the list of seeds: adding one must not restart the cells already there)
    logged = {"base": params.base.model_dump(exclude={"seeds"}), "variant": vp.model_dump(),
              "dataset": manifest["dataset"], "model.variant": vp.model.variant, "kind": kind,
              "data.manifest_sha256": file_sha256(data / MANIFEST)}
    if tuned is not None:
        logged["tuned"] = {"overrides": dict(tuned.overrides), "trial": tuned.trial,
                           "val_acc": tuned.value, "trials": tuned.trials}
    weights = None
    if kind == "finetune":  # any checkpoint layout, a model file of ours included
        weights = pretrained_weights(args.pretrained, vp)
        logged["pretrained.sha256"] = file_sha256(weights)
    # the code this stage runs: a finished cell of other code is retrained
    return Cells(kind, vp, tuned, weights, int(manifest["num_classes"]), logged, code_digest())


def run(params: Params, args: argparse.Namespace) -> list[RunRecord]:
    every = getattr(args, "all_seeds", False)
    seeds = params.base.seeds if every else [
        params.base.seeds[0] if args.seed is None else args.seed]
    if every:
        group = Path(args.out) if args.out else budget_dir(args.variant, args.budget)
        outs = [group / f"seed{s}" for s in seeds]
    else:
        outs = [Path(args.out) if args.out else cell_dir(CellKey(args.variant, args.budget,
                                                                 seeds[0]))]
    shared = cells(params, args)
    return [train_cell(params, args, shared, seed, out) for seed, out in zip(seeds, outs)]


def train_cell(params: Params, args: argparse.Namespace, shared: Cells, seed: int,
               out: Path) -> RunRecord:
    """One cell: ``args.variant`` at ``args.budget`` with ``seed``, in ``out``."""
    key = CellKey(args.variant, args.budget, seed)
    logged = {**shared.logged,
              "cell": {"seed": seed, "budget": args.budget}}  # not "budget": the DataModule's
    # the cell's seed gives its initial weights (and data order, ...)
    model = start_model(shared.recipe, num_classes=shared.num_classes, seed=seed,
                        pretrained=shared.weights)
    stage = "train_scratch" if shared.kind == "scratch" else "finetune"
    job = TrainingJob(
        name=str(key), recipe=shared.recipe, stage=stage + ("_tuned" if shared.tuned else ""),
        seed=seed, data_dir=Path(args.data), out_dir=out, logged_params=logged,
        budget=parse_budget(args.budget),
        tags={"variant": args.variant, "seed": str(seed), "budget": args.budget},
        code=shared.code)
    record = fit(job, model, params.base.trainer,
                 params.base.mlflow_experiment, fresh=True if args.fresh else None)
    if record.run_id is not None:  # global rank 0 (the other ranks have no run)
        log.info("%s: best val/acc %.4f in %.0f s (MLflow run %s)",
                 key, record.best_val_acc, record.train_seconds, record.run_id)
    return record


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("variant", help="a key of scratch or finetune in params.yaml")
    parser.add_argument("--seed", type=int, default=None,
                        help="the cell's seed (default: the first of base.seeds)")
    parser.add_argument("--all-seeds", action="store_true",
                        help="every seed of base.seeds, one after another in this process, each "
                             "in <out>/seed<k> (--out: the budget's dir); a cell already trained "
                             "with these params and this code is kept")
    parser.add_argument("--budget", default="all",
                        help="labelled train images per class, or 'all' (default)")
    parser.add_argument("--data", default=str(PREPARED))
    parser.add_argument("--out", default=None,
                        help="the cell's dir (default: models/<variant>/<budget>/seed<k>); "
                             "with --all-seeds the budget's dir (models/<variant>/<budget>)")
    parser.add_argument("--pretrained", default=None,
                        help="weights to start from (finetune only; default "
                             "models/pretrained/<its pretrained>/model.safetensors)")
    parser.add_argument("--chosen", default=None,
                        help="a <variant>-tuned cell's choice (default models/<variant>-tuned/"
                             "choice/<budget>/chosen.json)")
    parser.add_argument("--fresh", action="store_true",
                        help="do not resume an interrupted run (same as PIPELINE_FRESH=1)")


if __name__ == "__main__":
    stage_main(__doc__, add_args, run)
