"""Pruning through a real Lightning Trainer (pipeline/tuning/pruning.py): each validation's
score reaches the Optuna trial, a hopeless trial stops at the end of the epoch its pruner names
and is recorded as pruned, a good one runs to the end; a missing metric is named."""

from __future__ import annotations

import lightning as L
import optuna
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from pipeline.tuning.pruning import PruneHopeless


class _Scripted(L.LightningModule):
    """A model whose val/acc per epoch is given: a real fit, with known scores."""

    def __init__(self, accs: list[float], metric: str = "val/acc") -> None:
        super().__init__()
        self.accs, self.metric = accs, metric
        self.w = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch, batch_idx):
        return (self.w - 1.0).pow(2).sum()

    def validation_step(self, batch, batch_idx):
        self.log(self.metric, self.accs[self.current_epoch])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.zeros(4, 1)), batch_size=2)

    def val_dataloader(self):
        return DataLoader(TensorDataset(torch.zeros(2, 1)), batch_size=2)


def _fit(trial, accs, metric="val/acc"):
    prune = PruneHopeless(trial, monitor="val/acc")
    trainer = L.Trainer(max_epochs=len(accs), accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, callbacks=[prune])
    trainer.fit(_Scripted(accs, metric))
    return trainer, prune


def test_a_hopeless_trial_stops_at_its_pruned_epoch_and_is_recorded_pruned():
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(0),
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=2,
                                                                   n_warmup_steps=1))
    epochs = {}

    def objective(trial):
        accs = scripts[trial.number]
        trainer, prune = _fit(trial, accs)
        epochs[trial.number] = trainer.current_epoch
        prune.raise_if_pruned()
        return max(accs)

    scripts = [[0.5, 0.6, 0.7, 0.8], [0.5, 0.65, 0.75, 0.85],  # the startup trials: complete
               [0.2, 0.1, 0.1, 0.1],  # below the median from epoch 1 (after the warmup step)
               [0.6, 0.7, 0.8, 0.9]]  # above it: runs to the end
    study.optimize(objective, n_trials=4)
    states = [t.state for t in study.trials]
    assert states == [optuna.trial.TrialState.COMPLETE] * 2 + [
        optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.COMPLETE]
    pruned = study.trials[2]
    assert pruned.intermediate_values == pytest.approx({0: 0.2, 1: 0.1})  # each epoch, then stop
    assert pruned.last_step == 1 and epochs[2] == 2 < 4  # stopped at the end of epoch 1
    assert study.trials[3].intermediate_values == pytest.approx({0: 0.6, 1: 0.7, 2: 0.8, 3: 0.9})
    assert epochs[3] == 4 and study.best_trial.number == 3


def test_a_missing_metric_is_named():
    study = optuna.create_study()
    trial = study.ask()
    with pytest.raises(KeyError, match="no 'val/acc' in the logged metrics"):
        _fit(trial, [0.5, 0.6], metric="val/top1")
