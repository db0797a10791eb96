"""The workspace layout: every path the pipeline reads or writes under ``data/``, ``models/`` and
``results/``, and the key of a study cell. One module, so that the stages, the tests and
``dvc.yaml`` (checked against it by ``tests/unit/test_layout.py``) agree on where things are.

    data/raw/                                   downloads and raw files (not a DVC output)
    data/prepared/                              train and val splits (stage prepare): training
    data/test/                                  the test split (stage prepare): evaluate only
    models/pretrained/<name>/model.safetensors  pretrained weights (stage pretrained@<name>)
    models/pretrained/<name>/checkpoints/       its training run, when pretrained here
    models/<variant>/<budget>/seed<k>/          one study cell (stages train_scratch, finetune):
        model.safetensors  run.json  history.json        what later stages read
        resume.json  last.ckpt  best.ckpt  unsent_metrics.jsonl   resuming only
    results/metrics/<what>/<name>.json          the answer, in points (stage evaluate; DVC's
                                                metrics: gain/<ft>-<scratch>, gain_shift/...,
                                                top1/<variant>; one row each in dvc metrics show)
    results/study.json                          the study in full (intervals, searches, TTA)
    results/cells.json                          every cell's test figures
    results/report/                             the report
    results/confusion/<variant>.csv             actual, predicted per test image

A *cell* is one training run: a variant at a label budget (labelled images per class, or
``all``) with one seed; :class:`CellKey` names it, ``<variant>/<budget>/seed<k>``, which is also
its dir under ``models/``, its MLflow run name and its key in ``cells.json``.

    >>> key = CellKey("scratch_ti4", "100", 0)
    >>> cell_dir(key)
    PosixPath('models/scratch_ti4/100/seed0')
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

# the top-level dirs, relative to the workspace (the DVC root)
DATA_RAW = Path("data/raw")
PREPARED = Path("data/prepared")  # train and val: what training and tuning read
TEST = Path("data/test")  # the test split: only evaluate reads it
MODELS = Path("models")
RESULTS = Path("results")

PRETRAINED = "pretrained"  # models/pretrained: the weights sources (a reserved variant name)
CHECKPOINTS = "checkpoints"  # a pretraining run's dir inside its weights' dir

# the files of a training run's dir
MODEL_FILE = "model.safetensors"  # the trained model: what evaluation, predict, serving read
RUN_FILE = "run.json"  # written last: the run finished (pipeline.records.RunRecord)
HISTORY_FILE = "history.json"  # one row per epoch (pipeline.records.History)
RESUME_FILE = "resume.json"  # the MLflow run and params fingerprint, written at the start
LAST_CKPT = "last.ckpt"  # Lightning's, every epoch: resuming only
BEST_CKPT = "best.ckpt"  # Lightning's, best val/acc: the model file is exported from it
SPOOL_FILE = "unsent_metrics.jsonl"  # metrics MLflow did not take (an outage)

# a searched variant's tuned cells are named <variant>-tuned; beside their budget dirs, per
# budget: the search (its Optuna storage, trials.json, its MLflow parent run) and its choice
TUNED_SUFFIX = "-tuned"
SEARCH = "search"
CHOICE = "choice"
CHOSEN_FILE = "chosen.json"  # the search's choice: what the tuned cells train
TRIALS_FILE = "trials.json"  # every trial: params, state, validation curve, compute
STUDY_FILE = "study.journal"  # Optuna's journal storage: a killed search resumes from it

# the files of results/
METRICS = "metrics"  # what `dvc metrics show` reads: a file per gain and variant, in points
STUDY_JSON = "study.json"
CELLS_FILE = "cells.json"
REPORT = "report"
CONFUSION = "confusion"


@dataclass(frozen=True)
class CellKey:
    """One study cell: ``variant`` at label budget ``budget`` ("10", ..., "all") with ``seed``."""

    variant: str
    budget: str
    seed: int

    def __str__(self) -> str:
        return f"{self.variant}/{self.budget}/seed{self.seed}"

    @property
    def parts(self) -> tuple[str, str, str]:
        return self.variant, self.budget, f"seed{self.seed}"

    @classmethod
    def parse(cls, text: str) -> CellKey:
        """``"<variant>/<budget>/seed<k>"`` -> the key; ValueError otherwise."""
        parts = text.split("/")
        if len(parts) != 3 or not all(parts) or not re.fullmatch(r"seed\d+", parts[2]):
            raise ValueError(f"{text!r} is not a cell key <variant>/<budget>/seed<k>")
        return cls(parts[0], parts[1], int(parts[2][4:]))


def budget_order(budget: str) -> tuple[int, int]:
    """Sort key of a budget: by size, ``all`` last."""
    return (1, 0) if budget == "all" else (0, int(budget))


def cell_keys(variants: Iterable[str], budgets: Iterable[object], seeds: Iterable[int]
              ) -> list[CellKey]:
    """Every cell of a study: variants in the order given, budgets smallest first, then seeds."""
    ordered = sorted((str(b) for b in budgets), key=budget_order)
    seeds = list(seeds)
    return [CellKey(v, b, s) for v in variants for b in ordered for s in seeds]


def cell_dir(key: CellKey, models: Path = MODELS) -> Path:
    """``models/<variant>/<budget>/seed<k>``: the cell's training run."""
    return Path(models, *key.parts)


def budget_dir(variant: str, budget: str, models: Path = MODELS) -> Path:
    """``models/<variant>/<budget>``: the cells of every seed (one stage trains them all)."""
    return Path(models, variant, str(budget))


def search_dir(variant: str, budget: str, models: Path = MODELS) -> Path:
    """``models/<variant>-tuned/search/<budget>``: the search over ``variant``'s recipe at
    ``budget`` (Optuna storage, ``trials.json``)."""
    return Path(models, variant + TUNED_SUFFIX, SEARCH, str(budget))


def chosen_file(variant: str, budget: str, models: Path = MODELS) -> Path:
    """``models/<variant>-tuned/choice/<budget>/chosen.json``: what that search chose."""
    return Path(models, variant + TUNED_SUFFIX, CHOICE, str(budget), CHOSEN_FILE)


def pretrained_dir(name: str, models: Path = MODELS) -> Path:
    """``models/pretrained/<name>``: one weights source."""
    return Path(models, PRETRAINED, name)


def pretrained_file(name: str, models: Path = MODELS) -> Path:
    """``models/pretrained/<name>/model.safetensors``: the weights a fine-tune variant starts
    from."""
    return pretrained_dir(name, models) / MODEL_FILE


def pretraining_dir(name: str, models: Path = MODELS) -> Path:
    """``models/pretrained/<name>/checkpoints``: the training run of weights pretrained here."""
    return pretrained_dir(name, models) / CHECKPOINTS


def metrics_dir(results: Path = RESULTS) -> Path:
    return Path(results, METRICS)


def study_file(results: Path = RESULTS) -> Path:
    return Path(results, STUDY_JSON)


def cells_file(results: Path = RESULTS) -> Path:
    return Path(results, CELLS_FILE)


def report_dir(results: Path = RESULTS) -> Path:
    return Path(results, REPORT)


def confusion_dir(results: Path = RESULTS) -> Path:
    return Path(results, CONFUSION)


def confusion_file(variant: str, results: Path = RESULTS) -> Path:
    """``results/confusion/<variant>.csv``: the variant's shown cell, per test image."""
    return confusion_dir(results) / f"{variant}.csv"
