"""``history.json``: one row per epoch (train and val loss/accuracy, learning rate), for the report.

MLflow has the same numbers, but the evaluate stage must not need a tracking server to draw the
curves, and DVC versions the file with the checkpoints. The rows travel in every checkpoint
(callback state), and the file (:class:`~pipeline.records.History`) is rewritten atomically after
each validation, right before the checkpoints of that epoch are saved (this callback comes first
in the list), so a resumed run's file has exactly one row per finished epoch.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Callback

from ..records import EpochRow, History


def as_float(x: Any) -> float:
    """``x`` as a float, NaN where it is missing or not a number."""
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


class EpochHistory(Callback):
    def __init__(self, out_dir: str | Path) -> None:
        self.out_dir = Path(out_dir)
        self.history = History()

    @property
    def state_key(self) -> str:
        return "EpochHistory"

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        # the epoch's training metrics are not reduced until the epoch ends, after the
        # checkpoints; the module's metric objects hold them now (compute() syncs across ranks,
        # so every rank calls it)
        train_loss = as_float(pl_module.train_loss.compute())
        train_acc = as_float(pl_module.train_acc.compute())
        metrics = trainer.callback_metrics
        head_lr = trainer.optimizers[0].param_groups[-1]["lr"] if trainer.optimizers else math.nan
        row = EpochRow(epoch=trainer.current_epoch, train_loss=train_loss, train_acc=train_acc,
                       val_loss=as_float(metrics.get("val/loss")),
                       val_acc=as_float(metrics.get("val/acc")), lr=as_float(head_lr))
        self.history = self.history.with_row(row)
        if trainer.is_global_zero:
            self.history.write(self.out_dir)

    def state_dict(self) -> dict[str, Any]:
        return {"rows": [r.model_dump() for r in self.history.epochs]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = History(epochs=tuple(EpochRow(**r) for r in state_dict["rows"]))
