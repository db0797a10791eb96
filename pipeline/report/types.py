"""The report's input: :class:`VariantResult`, one trained variant evaluated on the test split.

A leaf of :mod:`pipeline.report`: every other module of the package may use it, it uses none of
them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..evaluation.metrics import ClassificationMetrics
from ..records import EpochRow, History

if TYPE_CHECKING:
    from ..evaluation.cell import CellResult


@dataclass(frozen=True, eq=False)  # eq=False: array fields make == ambiguous, identity is enough
class VariantResult:
    """One trained variant evaluated on the test split."""

    name: str  # e.g. "scratch_ti4", "finetune_b16": also a file name, so [A-Za-z0-9_.+-]
    kind: str  # "scratch" | "finetune"
    model: str  # short description, e.g. "192d/9L/4p@32"
    num_params: int
    gflops: float  # forward GFLOPs per image (may be nan)
    train_seconds: float
    images_per_s: float  # inference throughput measured at evaluation (may be nan)
    metrics: ClassificationMetrics = field(repr=False)  # on the test split, from its logits
    history: Sequence[EpochRow] = field(repr=False)  # one row per epoch, NaN where not logged
    attention: np.ndarray | None = field(default=None, repr=False)  # (M, g, g) rollout maps

    @classmethod
    def of_cell(cls, result: CellResult, history: History,
                attention: np.ndarray | None = None) -> VariantResult:
        """The variant as one evaluated study cell shows it: named after the cell's variant,
        with its training run's time and ``history``'s epochs."""
        return cls(name=result.key.variant, kind=result.kind, model=result.model,
                   num_params=result.num_params, gflops=result.gflops,
                   train_seconds=result.run.train_seconds, images_per_s=result.images_per_s,
                   metrics=result.metrics, history=history.epochs, attention=attention)
