"""Stages ``tune_scratch@<variant>-<budget>`` and ``tune_finetune@<variant>-<budget>``: the
search over a variant's recipe at one label budget, declared in ``tune.<arm>.<variant>``
(:mod:`pipeline.config.tune`; :mod:`pipeline.tuning.search` runs it).

It reads the prepared train and val splits (never the test split, which is in a dir of its own)
and, for a fine-tune variant, the pretrained weights; it writes the search dir
``models/<variant>-tuned/search/<budget>`` (the Optuna journal, ``trials.json``, the MLflow parent
run's id) and ``models/<variant>-tuned/choice/<budget>/chosen.json``, which the tuned cells train. Killed,
it resumes with its finished trials when started again (``dvc repro`` keeps the search dir:
``persist: true``).

    python -m pipeline.stages.tune scratch --budget all
    # another worker on the same search (a shared journal file or an RDB URL):
    python -m pipeline.stages.tune scratch --budget all --storage postgresql://... --join
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..config import Params, Recipe
from ..data import read_manifest
from ..data.splits import MANIFEST
from ..errors import ParamsError
from ..hashing import file_sha256
from ..layout import PREPARED, chosen_file, search_dir
from ..records import SearchRecord
from ..tracking.searches import SearchRun
from ..tracking.uri import check_tracking
from ..training.start import start_model
from ..tuning.search import SearchJob, run_search, space_record
from ._cli import pretrained_weights, stage_main

log = logging.getLogger("tune")


def run(params: Params, args: argparse.Namespace) -> SearchRecord:
    found = params.search(args.variant)
    if found is None or args.variant not in params.variants:
        raise ParamsError(f"no search for {args.variant!r} in params: tune.scratch and "
                          f"tune.finetune list {[v for _, v, _ in params.tune.searches()]}")
    arm, search = found
    _, recipe = params.variant(args.variant)
    budget = str(args.budget)
    if budget != "all" and budget not in {str(b) for b in params.prepare.budgets}:
        raise ParamsError(f"--budget {budget}: not in prepare.budgets {params.prepare.budgets}")
    data = Path(args.data)
    manifest = read_manifest(data)
    identity = {"data.manifest_sha256": file_sha256(data / MANIFEST),
                "trainer": params.base.trainer.model_dump(mode="json")}
    weights = None
    if arm == "finetune":
        weights = pretrained_weights(args.pretrained, recipe)
        identity["pretrained.sha256"] = file_sha256(weights)
    num_classes = int(manifest["num_classes"])

    def start(trial_recipe: Recipe, seed: int):
        return start_model(trial_recipe, num_classes=num_classes, seed=seed, pretrained=weights)

    out = Path(args.out) if args.out else search_dir(args.variant, budget)
    job = SearchJob(arm=arm, variant=args.variant, budget=budget, search=search, recipe=recipe,
                    data_dir=data, out_dir=out,
                    chosen_file=Path(args.chosen) if args.chosen else chosen_file(args.variant,
                                                                                  budget),
                    trainer_params=params.base.trainer, start=start, identity=identity)
    check_tracking()  # an unreachable server fails here, before any trial
    name = f"{args.variant}/{budget}"
    tracked = SearchRun(params.base.mlflow_experiment, name, out, {
        "arm": arm, "variant": args.variant, "budget": budget, "sampler": search.sampler.name,
        "sampler.seed": search.sampler.seed, "trials": search.trials,
        "objective": search.objective, "validation": search.validation,
        "train_seed": search.seed, "epochs": search.epochs or recipe.train.epochs,
        "pruning": search.prune.model_dump() if search.prune else None,
        **{f"space.{k}": v for k, v in space_record(search).items()}}, spec=job.spec())
    record, choice = run_search(job, storage_url=args.storage, join=args.join,
                                on_trial=tracked.log_trial)
    if args.join:
        log.info("%s: this worker is done; the first worker writes the choice", name)
        return record
    record = record.model_copy(update={"run_id": tracked.run_id})
    tracked.finish(record)
    if choice is None:
        raise RuntimeError(f"search {name}: no trial completed ({len(record.trials)} counted: "
                           f"{sorted({t.state for t in record.trials})}); see {out}/trials.json")
    record.write(out)
    choice.write(job.chosen_file.parent)
    log.info("%s: chose trial %d (val/acc %.4f of %d trials): %s", name, choice.trial,
             choice.value, choice.trials, choice.overrides)
    return record


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("variant", help="a variant with a search in tune.scratch or tune.finetune")
    parser.add_argument("--budget", default="all",
                        help="labelled train images per class, or 'all' (default)")
    parser.add_argument("--data", default=str(PREPARED))
    parser.add_argument("--out", default=None,
                        help="the search dir (default: models/<variant>-tuned/search/<budget>)")
    parser.add_argument("--chosen", default=None,
                        help="the choice's file (default: models/<variant>-tuned/choice/"
                             "<budget>/chosen.json)")
    parser.add_argument("--pretrained", default=None,
                        help="weights a fine-tune variant's trials start from (default "
                             "models/pretrained/<its pretrained>/model.safetensors)")
    parser.add_argument("--storage", default=None,
                        help="Optuna storage shared by several workers: a journal file on "
                             "shared storage or an RDB URL (default: the search dir's journal)")
    parser.add_argument("--join", action="store_true",
                        help="an extra worker on a running search: runs trials, writes no choice")


if __name__ == "__main__":
    stage_main(__doc__, add_args, run)
