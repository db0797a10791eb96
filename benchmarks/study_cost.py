"""What a study costs before it runs: optimizer steps, images and FLOPs of every cell of a params file.

For each (variant, budget) of ``params.yaml``, sized the way training sizes it (the label budget's
labelled images, the passes per epoch under ``train.min_steps``, ``pipeline/data/passes.py``):
labelled images, passes, optimizer steps, training images, and the FLOPs of training (torch's
FLOP counter on the meta device: forward, loss and backward; the frozen start of a fine-tune is
counted in full, since its backbone gradients are computed, then dropped) and of validation (a
forward pass over the validation split every epoch). Then per seed and for the whole study, and
the time at an assumed MFU of a GPU's dense peak, and, given a train loader's measured images/s
(``benchmarks/train_step.py`` prints it), the time the CPU-side augmentation needs.

With a ``tune`` section, the searches too: each (variant, budget) search's K trials, each at the
trial's length (``tune...epochs``, the schedule compressed) and validated on the search's
validation images, once (not per seed), pruning not counted (an upper bound); and the
``<variant>-tuned`` cells, at the cost of the recipe as written (a space over the learning rate,
weight decay or the like does not change a cell's FLOPs; one over epochs or batch size would).

    python benchmarks/study_cost.py --params params.yaml --mfu 0.3 \
        --loader-rate scratch_ti4=19000 --loader-rate finetune_b16=3500

The dataset's sizes come from its published splits (``--train-per-class`` overrides them).
Nothing is downloaded and no model is built in memory. ``--json FILE`` writes the figures.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from pipeline.config import load_params, trial_recipe
from pipeline.data.budgets import parse_budget
from pipeline.data.passes import batches_per_epoch, epoch_passes, min_batches
from pipeline.training.hardware import train_flops_per_batch

# train images and classes of the published train splits (before the validation split)
SPLITS = {"cifar10": (50_000, 10), "cifar100": (50_000, 100), "fashion_mnist": (60_000, 10)}


_PER_IMAGE: dict[str, int] = {}


def flops_per_image(cfg) -> int:
    """Training FLOPs of one image (counted once per config: the counter traces the model)."""
    key = repr(cfg)
    if key not in _PER_IMAGE:
        _PER_IMAGE[key] = train_flops_per_batch(cfg, 1)
    return _PER_IMAGE[key]


def cell_cost(cfg, train, budget: int | None, per_class: int, classes: int, val: int,
              world: int = 1) -> dict:
    """One cell (a variant at a budget, one seed) as training would size it."""
    labelled = classes * (per_class if budget is None else min(budget, per_class))
    accumulate = train.accumulate_grad_batches
    passes = epoch_passes(labelled, train.batch_size,
                          min_batches(train.epochs, train.min_steps, accumulate), world)
    batches = batches_per_epoch(labelled, passes, train.batch_size, world)
    steps = train.epochs * math.ceil(batches / accumulate)  # optimizer steps
    images = train.epochs * batches * train.batch_size * world
    per_image = flops_per_image(cfg)
    forward = per_image / 3  # forward only: the backward pass costs about twice the forward
    return {"labelled": labelled, "passes": passes, "steps": steps, "images": images,
            "gflops_per_image": per_image / 1e9, "train_flop": images * per_image,
            "val_flop": train.epochs * val * forward}


def study_cost(params, per_class: int, classes: int, val: int) -> list[dict]:
    """One row per (variant, budget) cell, for one seed; the tuned cells included."""
    rows = []
    for name in params.trained_variants:
        _, vp = params.variant(name)
        cfg = vp.model.vit_config(num_classes=classes)
        for b in params.prepare.budgets:
            budget = parse_budget(str(b))
            rows.append({"variant": name, "budget": str(b),
                         **cell_cost(cfg, vp.train, budget, per_class, classes, val)})
    return rows


def search_cost(params, per_class: int, classes: int, val: int) -> list[dict]:
    """One row per (search, budget): its K trials, once (a search does not repeat per seed)."""
    rows = []
    for arm, name, search in params.tune.searches():
        _, vp = params.variant(name)
        trial = trial_recipe(vp, search, {})
        cfg = trial.model.vit_config(num_classes=classes)
        for b in params.prepare.budgets:
            budget = parse_budget(str(b))
            val_images = val if search.validation == "full" or budget is None else min(
                val, budget * classes)
            one = cell_cost(cfg, trial.train, budget, per_class, classes, val_images)
            rows.append({"search": name, "arm": arm, "budget": str(b), "trials": search.trials,
                         "epochs": trial.train.epochs, "val_images": val_images,
                         "train_flop": search.trials * one["train_flop"],
                         "val_flop": search.trials * one["val_flop"],
                         "images": search.trials * one["images"]})
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--train-per-class", type=int, default=None,
                    help="train images per class after the validation split (default: from the "
                         "dataset's published split and prepare.val_fraction)")
    ap.add_argument("--mfu", type=float, default=0.3, help="assumed model FLOPs utilisation")
    ap.add_argument("--peak-tflops", type=float, default=989.4,
                    help="the GPU's dense peak (default: H100/H200 SXM, bf16)")
    ap.add_argument("--loader-rate", action="append", default=[], metavar="VARIANT=IMAGES_PER_S",
                    help="a variant's measured train-loader images/s (all workers)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    params = load_params(args.params)
    dataset = params.base.dataset
    if args.train_per_class is None and dataset not in SPLITS:
        ap.error(f"no published split size for {dataset!r}: pass --train-per-class")
    total, classes = SPLITS.get(dataset, (0, 0))
    if args.train_per_class is None:
        per_class = round(total * (1 - params.prepare.val_fraction) / classes)
    else:
        per_class = args.train_per_class
        classes = classes or 10
    val = round(total * params.prepare.val_fraction) if total else 0
    rates = dict(r.split("=", 1) for r in args.loader_rate)
    rows = study_cost(params, per_class, classes, val)
    seeds = len(params.base.seeds)

    print(f"{args.params}: {dataset}, {classes} classes, {per_class} train images per class after "
          f"the validation split ({val} images, validated every epoch); {seeds} seeds")
    print(f"{'variant':<20}{'budget':>7}{'labelled':>10}{'passes':>8}{'steps':>9}"
          f"{'images':>12}{'GFLOP/img':>11}{'PFLOP':>9}")
    for r in rows:
        pflop = (r["train_flop"] + r["val_flop"]) / 1e15
        print(f"{r['variant']:<20}{r['budget']:>7}{r['labelled']:>10,}{r['passes']:>8}"
              f"{r['steps']:>9,}{r['images']:>12,}{r['gflops_per_image']:>11.2f}{pflop:>9.1f}")
    searches = search_cost(params, per_class, classes, val)
    for r in searches:
        pflop = (r["train_flop"] + r["val_flop"]) / 1e15
        print(f"search {r['search']} ({r['arm']}) at budget {r['budget']}: {r['trials']} trials "
              f"x {r['epochs']} epochs, validated on {r['val_images']:,} images: "
              f"{pflop:.1f} PFLOP")
    per_seed = sum(r["train_flop"] + r["val_flop"] for r in rows)
    search_flop = sum(r["train_flop"] + r["val_flop"] for r in searches)
    flop = per_seed * seeds + search_flop
    sustained = args.mfu * args.peak_tflops * 1e12
    gpu_hours = flop / sustained / 3600
    print(f"per seed: {per_seed / 1e15:,.0f} PFLOP; the study ({seeds} seeds x "
          f"{len(params.prepare.budgets)} budgets x {len(params.trained_variants)} variants = "
          f"{len(rows) * seeds} cells, and {len(searches)} searches of "
          f"{search_flop / 1e15:,.0f} PFLOP): {flop / 1e18:.2f} EFLOP")
    print(f"GPU time at MFU {args.mfu:.0%} of {args.peak_tflops:g} TFLOP/s: {gpu_hours:.1f} h")
    loader_hours = {}
    for name, rate in rates.items():
        images = seeds * sum(r["images"] for r in rows if r["variant"] == name) + sum(
            r["images"] for r in searches if r["search"] == name)
        if not images:
            ap.error(f"--loader-rate {name}: no such variant in {args.params}")
        loader_hours[name] = images / float(rate) / 3600
        print(f"{name}: {images:,} augmented training images at {float(rate):,.0f}/s: "
              f"{loader_hours[name]:.1f} h of loader time")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "searches": searches, "seeds": seeds,
                                         "flop": flop,
                                         "gpu_hours": gpu_hours, "mfu": args.mfu,
                                         "peak_tflops": args.peak_tflops,
                                         "loader_hours": loader_hours}, indent=1))


if __name__ == "__main__":
    main()
