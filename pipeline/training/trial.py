"""One trial of a search: a training run that leaves no files. The recipe trains on the cell's
labelled subset and is validated after every epoch on the search's validation images; what comes
back is the validation curve, its best value (what a training cell keeps), and the compute spent
(seconds, training FLOPs from :func:`~pipeline.training.hardware.train_flops_per_batch`).

No checkpoints, no MLflow run of its own and no model file: the search records the trial
(:mod:`pipeline.tuning.search`). Extra callbacks (a pruner) ride along; a trial runs on one
device (more workers on one search scale a search out, not DDP inside a trial).

    >>> fit = fit_trial(recipe, model, data_dir=Path("data/prepared"), budget=None, seed=0,
    ...                 trainer_params=params.base.trainer)
    >>> fit.best, fit.curve
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback, EMAWeightAveraging

from ..config import Recipe, TrainerParams
from ..models.classifier import ImageClassifier
from ..models.device import resolve_accelerator, resolve_precision
from .checkpoint_io import FiniteCheckpointIO
from .fit import TrainingJob, training_data
from .hardware import train_flops_per_batch
from .lightning_module import LitClassifier


@dataclass(frozen=True)
class TrialFit:
    curve: list[float]  # validation top-1 after each epoch run
    epochs: int  # epochs run (fewer than the recipe's when stopped early)
    steps: int  # optimizer steps
    seconds: float  # the fit, wall clock
    flops: float  # training FLOPs (forward and backward, every batch), the counter's estimate
    flops_per_epoch: float = field(default=0.0)

    @property
    def best(self) -> float:
        """The best validation top-1 over the epochs (NaN if none was finite)."""
        finite = [v for v in self.curve if math.isfinite(v)]
        return max(finite) if finite else math.nan


class ValCurve(Callback):
    """Collects ``val/acc`` after each validation epoch (not the sanity check)."""

    def __init__(self) -> None:
        self.values: list[float] = []

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get("val/acc")
        self.values.append(math.nan if value is None else float(value))


def fit_trial(recipe: Recipe, model: ImageClassifier, *, data_dir: Path, budget: int | None,
              seed: int, trainer_params: TrainerParams, val_budget: int | None = None,
              callbacks: list[Callback] = ()) -> TrialFit:
    """Train ``model`` with ``recipe`` on ``data_dir``'s train split (``budget`` images per
    class, chosen by ``seed``), validating every epoch on its val split (``val_budget`` images
    per class, or all)."""
    quiet = [logging.getLogger(n) for n in ("lightning.pytorch.utilities.rank_zero",
                                            "lightning.fabric.utilities.seed")]
    levels = [q.level for q in quiet]
    for q in quiet:  # one trial after another: not Lightning's banner each time
        q.setLevel(logging.WARNING)
    try:
        return _fit(recipe, model, data_dir=data_dir, budget=budget, seed=seed,
                    trainer_params=trainer_params, val_budget=val_budget, callbacks=callbacks)
    finally:
        for q, level in zip(quiet, levels, strict=True):
            q.setLevel(level)


def _fit(recipe: Recipe, model: ImageClassifier, *, data_dir: Path, budget: int | None,
         seed: int, trainer_params: TrainerParams, val_budget: int | None,
         callbacks: list[Callback]) -> TrialFit:
    L.seed_everything(seed, workers=True)
    with tempfile.TemporaryDirectory(prefix="trial-") as tmp:
        job = TrainingJob(name="trial", stage="tune", recipe=recipe, seed=seed,
                          data_dir=Path(data_dir), out_dir=Path(tmp), budget=budget,
                          val_budget=val_budget)
        data = training_data(job, trainer_params)
        dm = data.datamodule
        if dm.num_classes != model.cfg.num_classes:
            raise ValueError(f"{data_dir} has {dm.num_classes} classes but the model head has "
                             f"{model.cfg.num_classes}")
        module = LitClassifier(model, recipe, classes=list(dm.classes))
        accelerator = resolve_accelerator(trainer_params.accelerator)
        precision, _ = resolve_precision(trainer_params.precision, accelerator)
        curve = ValCurve()
        ema = recipe.train.ema_decay
        tr = recipe.train
        trainer = L.Trainer(
            max_epochs=tr.epochs, accelerator=accelerator, devices=1, precision=precision,
            gradient_clip_val=tr.grad_clip, accumulate_grad_batches=tr.accumulate_grad_batches,
            logger=False, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=tmp,
            plugins=[FiniteCheckpointIO()],
            callbacks=[curve, *callbacks, *([EMAWeightAveraging(decay=ema)] if ema else [])],
        )
        start = time.perf_counter()
        trainer.fit(module, datamodule=dm)
        seconds = time.perf_counter() - start
    per_batch = train_flops_per_batch(model.cfg, tr.batch_size)
    batches = trainer.global_step * tr.accumulate_grad_batches
    return TrialFit(curve=curve.values, epochs=len(curve.values), steps=trainer.global_step,
                    seconds=seconds, flops=float(per_batch * batches),
                    flops_per_epoch=float(per_batch * data.batches_per_epoch))
