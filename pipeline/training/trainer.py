"""The Lightning Trainer of one training run, and the callbacks it runs with.

:func:`build_trainer` turns the trainer params (accelerator, devices, strategy, precision) and a
recipe (epochs, gradient clipping and accumulation) into a ``lightning.Trainer`` with the run's
callbacks (:func:`run_callbacks`): per-epoch history before the checkpoints (its rows go into
them), the best and the last checkpoint, learning rates, throughput and MFU, the tracking
callbacks, resuming, and EMA weights when the recipe asks. Checkpoints refuse non-finite weights
(:class:`~pipeline.training.checkpoint_io.FiniteCheckpointIO`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import (
    Callback,
    EMAWeightAveraging,
    LearningRateMonitor,
    ModelCheckpoint,
    ThroughputMonitor,
)
from lightning.pytorch.loggers import Logger

from ..config import Recipe, TrainerParams
from ..layout import BEST_CKPT, LAST_CKPT
from ..models.device import resolve_accelerator
from ..tracking.callbacks import RecordFailure, TrainingContext
from .checkpoint_io import FiniteCheckpointIO
from .hardware import build_strategy
from .history import EpochHistory

# resume.json and a resumed run's checkpoints are meant to be in the checkpoint dir
warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")


def batch_size_of(batch) -> int:
    """Images in an ``(images, labels)`` batch (ThroughputMonitor's ``batch_size_fn``)."""
    return len(batch[1])


def world_size_hint(trainer: TrainerParams) -> int:
    """Processes the Trainer will run, where the params say it (``devices: auto``: 1)."""
    devices = trainer.devices
    if isinstance(devices, list):
        per_node = len(devices)
    else:
        per_node = devices if isinstance(devices, int) else 1
    return per_node * trainer.num_nodes


@dataclass(frozen=True)
class Checkpoints:
    """The run's two checkpoint callbacks: the best val/acc, and the last epoch's."""

    best: ModelCheckpoint
    last: ModelCheckpoint

    @classmethod
    def in_dir(cls, out_dir: Path) -> Checkpoints:
        best = ModelCheckpoint(dirpath=out_dir, filename=Path(BEST_CKPT).stem, monitor="val/acc",
                               mode="max", enable_version_counter=False)
        # Every epoch, improved or not: Lightning 2.6's save_last=True rewrites last.ckpt only
        # in an epoch that also saved a top-k checkpoint, so a resume would lose the epochs since.
        last = ModelCheckpoint(dirpath=out_dir, filename=Path(LAST_CKPT).stem,
                               enable_version_counter=False)
        return cls(best, last)


def run_callbacks(out_dir: Path, checkpoints: Checkpoints, *, recipe: Recipe, data_dir: Path,
                  logger, resumable: Callback, batches_per_epoch: int) -> list[Callback]:
    """The callbacks of a training run, in the order they must run."""
    ema = recipe.train.ema_decay
    return [
        EpochHistory(out_dir),  # before the checkpoints: its rows go into them
        checkpoints.best,
        checkpoints.last,
        LearningRateMonitor(logging_interval="epoch"),
        # train/samples_per_sec, train/device/mfu, ... over a window of steps
        ThroughputMonitor(batch_size_of, window_size=max(2, min(100, batches_per_epoch))),
        RecordFailure(),
        resumable,
        TrainingContext(logger, data_dir),  # after resumable, which sets the run up
        *([EMAWeightAveraging(decay=ema)] if ema else []),
    ]


def build_trainer(trainer_params: TrainerParams, recipe: Recipe, *, precision: str,
                  logger: Logger, callbacks: list[Callback], out_dir: Path,
                  batches_per_epoch: int) -> L.Trainer:
    """The Trainer of one run: ``precision`` as resolved (:mod:`pipeline.models.device`)."""
    tr = recipe.train
    return L.Trainer(
        max_epochs=tr.epochs,
        accelerator=resolve_accelerator(trainer_params.accelerator),
        devices=trainer_params.devices,
        num_nodes=trainer_params.num_nodes,
        strategy=build_strategy(trainer_params.strategy),
        precision=precision,
        gradient_clip_val=tr.grad_clip,
        accumulate_grad_batches=tr.accumulate_grad_batches,
        logger=logger,
        callbacks=callbacks,
        plugins=[FiniteCheckpointIO()],
        default_root_dir=out_dir,
        log_every_n_steps=min(50, batches_per_epoch),
        deterministic=False,
    )
