"""Pruning a hopeless trial from inside a Lightning fit: after each validation the monitored score
goes to the Optuna trial (``trial.report(score, step=epoch)``) and, when the study's pruner says
the trial should stop (``trial.should_prune()``), the Trainer stops at the end of that epoch.

Written here rather than taken from optuna-integration: its ``PyTorchLightningPruningCallback``
reads a private attribute of Lightning's Trainer and has broken with Lightning 1.6, 1.8 and 2.0.
This one uses Lightning's public ``trainer.should_stop`` and ends the fit cleanly (the run's
checkpoints and MLflow run end as after any early stop); the caller then raises
``optuna.TrialPruned`` (:meth:`PruneHopeless.raise_if_pruned`), so Optuna records the trial as
pruned, with the step it was pruned at. One process per trial: under DDP only global rank 0
reports and would decide alone.

    >>> prune = PruneHopeless(trial, monitor="val/acc")
    >>> trainer = L.Trainer(..., callbacks=[..., prune]); trainer.fit(module, datamodule=dm)
    >>> prune.raise_if_pruned()
"""

from __future__ import annotations

import math

from lightning.pytorch.callbacks import Callback


class PruneHopeless(Callback):
    """Reports ``monitor`` to ``trial`` after each validation; stops the fit when the study's
    pruner says to (``pruned_at``: the epoch, None while the trial goes on)."""

    def __init__(self, trial, monitor: str = "val/acc") -> None:
        self.trial = trial
        self.monitor = monitor
        self.pruned_at: int | None = None
        self.reported: dict[int, float] = {}

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            raise KeyError(f"no {self.monitor!r} in the logged metrics: nothing to prune on "
                           f"(logged: {sorted(trainer.callback_metrics)})")
        score, epoch = float(value), trainer.current_epoch
        if not math.isfinite(score):
            return  # a diverged epoch is not reported; the loss check stops such a run anyway
        self.trial.report(score, step=epoch)
        self.reported[epoch] = score
        if self.trial.should_prune():
            self.pruned_at = epoch
            trainer.should_stop = True

    def raise_if_pruned(self) -> None:
        """``optuna.TrialPruned`` if the fit was stopped by the pruner (call after the fit)."""
        if self.pruned_at is not None:
            import optuna

            raise optuna.TrialPruned(
                f"pruned after epoch {self.pruned_at}: {self.monitor} "
                f"{self.reported[self.pruned_at]:.4f}")
