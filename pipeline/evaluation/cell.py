"""One study cell on the test split: what its training left, read and checked first
(:func:`load_cell`), then evaluated into a typed :class:`CellResult` (:func:`evaluate_cell`).

The classifier runs once over the test split (:func:`pipeline.models.batched_logits`, at the
autocast dtype of the params' precision: :mod:`pipeline.models.device`) and every metric comes
from those logits (:func:`pipeline.evaluation.metrics.classification_metrics`). With test-time
augmentation the other views run too (:mod:`pipeline.evaluation.tta`) and the same metrics come
from their mean softmax, beside the plain ones (never instead: the plain pass and its throughput
are as without TTA).

    >>> cell = load_cell(CellKey("scratch", "all", 0), Path("models"), classes)
    >>> result = evaluate_cell(cell, "scratch", images, labels, batch_size=256, device=cpu)
    >>> result.metrics.top1, result.study_cell(labels)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import RecordError
from ..explain import rollout
from ..layout import CellKey, budget_order, cell_dir
from ..models.classifier import ImageClassifier, batched_logits, forward_gflops
from ..models.device import autocast
from ..models.model_file import TrainedModel, load_model_file
from ..records import History, RunRecord
from .metrics import ClassificationMetrics, classification_metrics
from .study import Cell
from .tta import TTAViews, tta_logits


@dataclass(frozen=True, eq=False)
class TrainedCell:
    """What training left in a cell's dir: its record, its history and its model."""

    key: CellKey
    run: RunRecord
    history: History
    trained: TrainedModel


def load_cell(key: CellKey, models_dir: Path, classes: Sequence[str]) -> TrainedCell:
    """The cell ``key``'s files under ``models_dir``, each refused with one line (RecordError,
    CheckpointError) when it is missing or corrupt, or when the model was trained on other
    classes than ``classes`` (the test split's)."""
    run_dir = cell_dir(key, models_dir)
    run = RunRecord.read(run_dir)
    history = History.read_if_present(run_dir)
    trained = load_model_file(run_dir / run.model_file)
    if trained.classes != list(classes):
        raise RecordError(f"{run_dir / run.model_file} was trained on the classes "
                          f"{trained.classes}, the test split has {list(classes)}; re-run the "
                          f"stage that trains it (dvc repro)")
    return TrainedCell(key, run, history, trained)


@dataclass(frozen=True, eq=False)
class Evaluation:
    """A classifier on a labelled set: the plain pass, and with TTA the views' mean softmax."""

    metrics: ClassificationMetrics
    images_per_s: float  # of the plain pass
    tta: ClassificationMetrics | None = None
    tta_views: int = 0


def evaluate_classifier(classifier: ImageClassifier, images: np.ndarray, labels: np.ndarray, *,
                        batch_size: int, device: torch.device,
                        dtype: torch.dtype | None = None,
                        tta: TTAViews | None = None) -> Evaluation:
    """``classifier`` on uint8 ``images`` with int64 ``labels``, every metric computed once from
    its logits; with ``tta``, beside them, the same metrics of the views' mean softmax (the
    plain logits are the first view's)."""
    logits, images_per_s = batched_logits(classifier, images, batch_size=batch_size,
                                          device=device, dtype=dtype)
    metrics = classification_metrics(logits, labels)
    if tta is None:
        return Evaluation(metrics, images_per_s)
    tta_out, views = tta_logits(classifier, images, hflip=tta.hflip, shift=tta.shift,
                                batch_size=batch_size, device=device, dtype=dtype, plain=logits)
    return Evaluation(metrics, images_per_s, classification_metrics(tta_out, labels), views)


@dataclass(frozen=True, eq=False)
class CellResult:
    """One cell evaluated on the test split."""

    key: CellKey
    kind: str  # "scratch" | "finetune"
    run: RunRecord  # its training run
    model: str  # e.g. "192d/9L/4p@32"
    num_params: int  # the ViT's
    gflops: float  # forward GFLOPs per image
    images_per_s: float  # inference throughput of the plain pass
    device: str
    metrics: ClassificationMetrics  # the plain pass
    tta: ClassificationMetrics | None = None  # with test-time augmentation
    tta_views: int = 0

    def study_cell(self, labels: np.ndarray) -> Cell:
        """The cell as the study aggregates it (:func:`pipeline.evaluation.study.summarise`)."""
        with_tta = {} if self.tta is None else {
            "tta_top1": self.tta.top1, "tta_correct": self.tta.predictions == labels}
        return Cell(self.key.variant, self.kind, self.key.budget, self.key.seed,
                    self.run.labelled, self.metrics.top1, self.metrics.predictions == labels,
                    **with_tta)


def evaluate_cell(cell: TrainedCell, kind: str, images: np.ndarray, labels: np.ndarray, *,
                  batch_size: int, device: torch.device, dtype: torch.dtype | None = None,
                  tta: TTAViews | None = None) -> CellResult:
    """``cell``'s classifier on the test split (:func:`evaluate_classifier`)."""
    classifier = cell.trained.classifier
    ev = evaluate_classifier(classifier, images, labels, batch_size=batch_size, device=device,
                             dtype=dtype, tta=tta)
    cfg = cell.trained.cfg
    return CellResult(
        key=cell.key, kind=kind, run=cell.run,
        model=f"{cfg.embed_dim}d/{cfg.depth}L/{cfg.patch_size}p@{cfg.img_size}",
        num_params=sum(p.numel() for p in classifier.vit.parameters()),
        gflops=forward_gflops(classifier.vit), images_per_s=ev.images_per_s, device=str(device),
        metrics=ev.metrics, tta=ev.tta, tta_views=ev.tta_views)


def shown_cells(keys: Sequence[CellKey]) -> dict[str, CellKey]:
    """The cell each variant's own figures show (confusion, calibration, curves, attention):
    its largest budget, first seed (in the order of ``keys``: params order); the study's curve
    and tables show every cell."""
    shown: dict[str, CellKey] = {}
    for key in keys:
        best = shown.get(key.variant)
        if best is None or budget_order(key.budget) > budget_order(best.budget):
            shown[key.variant] = key
    return shown


def attention_images(labels: np.ndarray, n: int = 6) -> np.ndarray:
    """Indices of ``n`` test images for the attention figure: the first of each of the first
    ``n`` classes present (deterministic, and varied)."""
    firsts = [int(np.flatnonzero(labels == c)[0]) for c in np.unique(labels)]
    return np.array(firsts[:n], dtype=np.int64)


def attention_maps(cells: Mapping[str, TrainedCell], images: np.ndarray, *,
                   device: torch.device, dtype: torch.dtype | None) -> dict[str, np.ndarray]:
    """``{variant: (M, grid, grid)}`` attention rollout of each cell on ``images``."""
    out = {}
    for variant, cell in cells.items():
        classifier = cell.trained.classifier.eval().to(device)
        with torch.no_grad(), autocast(device, dtype):
            _, maps = rollout(classifier, torch.from_numpy(np.array(images)).to(device))
        out[variant] = maps.cpu().numpy()
    return out
