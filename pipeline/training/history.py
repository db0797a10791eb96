"""``history.json``: one row per epoch (train and val loss/accuracy, learning rate), for the report.

MLflow has the same numbers, but the evaluate stage must not need a tracking server to draw the
curves, and DVC versions the file with the checkpoints. The rows travel in every checkpoint
(callback state), and the file is rewritten atomically after each validation, right before the
checkpoints of that epoch are saved (this callback comes first in the list), so a resumed run's
file has exactly one row per finished epoch.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Callback

from ..atomic import atomic_write_json
from ..records import HISTORY


def _value(x: Any) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


class EpochHistory(Callback):
    def __init__(self, out_dir: str | Path) -> None:
        self.path = Path(out_dir) / HISTORY
        self.rows: list[dict[str, float]] = []

    @property
    def state_key(self) -> str:
        return "EpochHistory"

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        # the epoch's training metrics are not reduced until the epoch ends, after the
        # checkpoints; the module's metric objects hold them now (compute() syncs across ranks,
        # so every rank calls it)
        train_loss = _value(pl_module.train_loss.compute())
        train_acc = _value(pl_module.train_acc.compute())
        metrics = trainer.callback_metrics
        head_lr = trainer.optimizers[0].param_groups[-1]["lr"] if trainer.optimizers else math.nan
        row = {"epoch": trainer.current_epoch, "train/loss": train_loss, "train/acc": train_acc,
               "val/loss": _value(metrics.get("val/loss")),
               "val/acc": _value(metrics.get("val/acc")), "lr": _value(head_lr)}
        self.rows = [r for r in self.rows if r["epoch"] < row["epoch"]] + [row]
        if trainer.is_global_zero:
            atomic_write_json(self.path, self.rows)

    def state_dict(self) -> dict[str, Any]:
        return {"rows": list(self.rows)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = list(state_dict["rows"])
