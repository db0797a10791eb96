"""What the answer does not show, read off the data: the report states these under its headline.

Each check returns a sentence or nothing:

- :func:`tta_calibration`: test-time augmentation raised a variant's expected calibration error
  (mean over seeds) by more than 2 points and a fifth;
- :func:`still_falling`: a shown cell's training loss fell by more than 2% over its last
  epochs (a tenth of them, at least 3): the runs had not converged;
- :func:`recipes_differ`: the arms of a gain train different recipes, so the gain is
  pretraining together with its recipe;
- :func:`pretraining_cost`: what the pretraining cost (seconds, FLOPs), which no fine-tuned
  cell's train time counts; or that the weights were trained elsewhere.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..config import Params
from ..config.recipe import FinetuneRecipe, Recipe
from ..errors import RecordError
from ..layout import pretraining_dir
from ..records import History, RunRecord
from .cell import CellResult
from .study import Study

ECE_RISE_POINTS = 2.0  # TTA's ECE above the plain one by this many points ...
ECE_RISE_RATIO = 1.2  # ... and by this factor
LOSS_DROP = 0.02  # the training loss fell by more than this fraction over the last epochs


def tta_calibration(results: Sequence[CellResult]) -> str | None:
    by_variant: dict[str, list[tuple[float, float]]] = {}
    for r in results:
        if r.tta is not None:
            by_variant.setdefault(r.key.variant, []).append((r.metrics.ece, r.tta.ece))
    worse = []
    for v, pairs in by_variant.items():
        plain, tta = (100 * float(np.mean(x)) for x in zip(*pairs))
        if tta - plain > ECE_RISE_POINTS and tta > ECE_RISE_RATIO * plain:
            worse.append(f"{v} {plain:.1f}% → {tta:.1f}%")
    if not worse:
        return None
    return ("Test-time augmentation raised the expected calibration error (mean over seeds: "
            f"{'; '.join(worse)}): it helps top-1 but its probabilities are less calibrated "
            "than the plain pass's; the headline figures are the plain ones.")


def still_falling(histories: Mapping[str, History]) -> str | None:
    falling = []
    for v, history in histories.items():
        losses = [r.train_loss for r in history.epochs if np.isfinite(r.train_loss)]
        k = max(3, len(losses) // 10)
        if len(losses) <= k:
            continue
        before, last = losses[-k - 1], losses[-1]
        if before > 0 and (before - last) / before > LOSS_DROP:
            falling.append(f"{v} {before:.3f} → {last:.3f} over its last {k} epochs")
    if not falling:
        return None
    return ("The training loss was still falling at the last epoch (the shown cell, first "
            f"seed: {'; '.join(falling)}): these runs had not converged, and longer training "
            "could change the comparison.")


def _recipe(recipe: Recipe) -> str:
    tr, opt = recipe.train, recipe.train.optimizer
    text = f"{opt.name} lr {opt.lr:g}, weight decay {opt.weight_decay:g}, {tr.epochs} epochs"
    if isinstance(recipe, FinetuneRecipe):
        text += (f", backbone lr ×{recipe.backbone_lr_scale:g}, frozen for "
                 f"{recipe.freeze_epochs} epochs")
    return text


def recipes_differ(params: Params, study: Study) -> str | None:
    pairs = []
    for g in study.gains:
        if g.scratch not in params.variants or g.finetune not in params.variants:
            continue  # tuned cells: their searches' choices are in the searches table
        sc, ft = _recipe(params.variant(g.scratch)[1]), _recipe(params.variant(g.finetune)[1])
        if sc != ft and (g.finetune, g.scratch) not in [p[:2] for p in pairs]:
            pairs.append((g.finetune, g.scratch, f"{g.scratch}: {sc}; {g.finetune}: {ft}"))
    if not pairs:
        return None
    return ("The arms train different recipes as written (" + " | ".join(p[2] for p in pairs)
            + "): each such gain is pretraining together with its recipe"
            + (", which is why both arms are also tuned with the same search budget."
               if study.searches else "."))


def pretraining_cost(params: Params, study: Study, models_dir: Path) -> str | None:
    from ..models.classifier import forward_gflops
    from ..models.vit import VisionTransformer

    used = {params.variant(a.variant)[1].pretrained for a in study.aggregates
            if a.kind == "finetune"}
    parts = []
    for name in sorted(used):
        spec = params.pretrained[name]
        if spec.source != "train" or spec.pretrain is None:
            parts.append(f"{name}: trained elsewhere ({spec.source}), its cost not counted here")
            continue
        try:
            run = RunRecord.read(pretraining_dir(name, models_dir))
        except RecordError:
            continue
        images = run.labelled * run.passes * run.epochs
        # the head's classes change the count by 2 x width x classes: 10 stands for any
        vit = VisionTransformer(spec.pretrain.model.vit_config(num_classes=10))
        tflops = 3 * forward_gflops(vit) * images / 1e3
        parts.append(f"{name}, {run.train_seconds:.0f} s of training and about {tflops:.1f} "
                     f"TFLOPs: {run.epochs} epochs over {run.labelled:,} {spec.pretrain.dataset} "
                     "images, at 3× the forward FLOPs per image")
    if not parts:
        return None
    return ("The pretraining is done once and shared by every fine-tuned cell; no cell's train "
            "time counts it, and the scratch arm gets no such compute. " + "; ".join(parts)
            + ".")


def caveats(params: Params, study: Study, results: Sequence[CellResult],
            histories: Mapping[str, History], models_dir: Path) -> list[str]:
    found = [tta_calibration(results), still_falling(histories),
             recipes_differ(params, study), pretraining_cost(params, study, models_dir)]
    return [c for c in found if c]
