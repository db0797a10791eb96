"""The test metrics of a classifier, computed once from its logits.

:func:`classification_metrics` takes the (N, K) logits on the test split and the (N,) labels and
returns a :class:`ClassificationMetrics`: top-1 and top-min(5, K) accuracy, the mean
cross-entropy, the expected calibration error, per-class accuracy, the confusion matrix, the
reliability bins and the softmax probabilities. The report (:mod:`pipeline.report`) renders these
numbers and computes none; the evaluate stage writes :meth:`ClassificationMetrics.summary` into
``cells.json``.

- Accuracies, the ECE and the confusion matrix come from torchmetrics' functional API
  (``multiclass_accuracy``, ``multiclass_calibration_error``, ``multiclass_confusion_matrix``),
  the implementation the training loop's accuracy uses. Accuracies and the confusion matrix are
  computed on the logits (top-1 is their ``torch.argmax``: the first of equal logits), the loss is
  ``torch.nn.functional.cross_entropy`` of the logits (finite for any finite logits).
- The ECE and the reliability bins are computed on the softmax probabilities clipped just below
  1: ``n_bins`` equal-width bins of the top-1 probability, left-closed as torchmetrics bins them,
  the top bin closed (``[1 - 1/n_bins, 1]``). torchmetrics would put a confidence of exactly 1.0
  (a float32 softmax saturates there) in a bin of its own; clipped, the ECE and the reliability
  bins agree exactly: ``sum(count / N * |accuracy - confidence|)`` over non-empty bins is the ECE.

    >>> m = classification_metrics(logits, labels)
    >>> m.top1, m.ece, m.confusion.shape
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_calibration_error,
    multiclass_confusion_matrix,
)

_BELOW_ONE = np.nextafter(np.float32(1.0), np.float32(0.0))


@dataclass(frozen=True, eq=False)  # eq=False: array fields make == ambiguous, identity is enough
class ClassificationMetrics:
    """The metrics of one classifier on one labelled set of N images and K classes."""

    top1: float
    top5: float  # top-``top_k`` accuracy
    top_k: int  # min(5, K)
    loss: float  # mean cross-entropy of the logits
    ece: float  # expected calibration error over ``n_bins`` bins (L1)
    n_bins: int
    per_class: np.ndarray = field(repr=False)  # (K,) accuracy, nan for a class with no image
    confusion: np.ndarray = field(repr=False)  # (K, K) int64 counts, rows the true class
    # (mean confidence, accuracy, count) per bin, (n_bins,) each; nan for an empty bin
    reliability: tuple[np.ndarray, np.ndarray, np.ndarray] = field(repr=False)
    probs: np.ndarray = field(repr=False)  # (N, K) float32 softmax of the logits
    # (N,) argmax of the logits; when not given, that of ``probs``
    _predictions: np.ndarray | None = field(default=None, repr=False)

    @property
    def predictions(self) -> np.ndarray:
        """(N,) top-1 classes, the first of equal maxima (``torch.argmax``): the predictions the
        accuracies and the confusion matrix count."""
        if self._predictions is not None:
            return self._predictions
        return torch.from_numpy(np.ascontiguousarray(self.probs)).argmax(dim=1).numpy()

    @property
    def num_classes(self) -> int:
        return int(self.probs.shape[1])

    def summary(self, classes: Sequence[str]) -> dict:
        """``{"top1", "top5", "loss", "ece", "per_class_acc": {class: acc}}`` in plain Python
        numbers (nan for a class with no test image), for ``cells.json``."""
        if len(classes) != self.num_classes:
            raise ValueError(f"{len(classes)} class names for {self.num_classes} classes")
        return {
            "top1": float(self.top1), "top5": float(self.top5), "loss": float(self.loss),
            "ece": float(self.ece),
            "per_class_acc": {str(c): float(a) for c, a in zip(classes, self.per_class)},
        }


def row_normalise(counts: np.ndarray) -> np.ndarray:
    """Each row divided by its sum; nan for a class with no test images."""
    totals = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, counts / np.maximum(totals, 1), np.nan)


def _as_inputs(logits, labels) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 (N, K) logits and int64 (N,) labels on the CPU, validated."""
    # np.array copies: a memory-mapped, read-only array (the prepared test split) is not writable
    logits = torch.as_tensor(np.array(logits) if not isinstance(logits, torch.Tensor)
                             else logits).detach().cpu()
    labels = torch.as_tensor(np.array(labels) if not isinstance(labels, torch.Tensor)
                             else labels).detach().cpu()
    if logits.ndim != 2 or logits.shape[0] == 0 or logits.shape[1] < 2:
        raise ValueError(f"logits must be (N, K) with N > 0 and K >= 2, got shape "
                         f"{tuple(logits.shape)}")
    if not (logits.is_floating_point() or logits.dtype in (torch.int32, torch.int64)):
        raise ValueError(f"logits must be real numbers, got {logits.dtype}")
    n, k = logits.shape
    if labels.ndim != 1 or len(labels) != n:
        raise ValueError(f"labels must be (N={n},), got shape {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be integers, got {labels.dtype}")
    labels = labels.long()
    if labels.min() < 0 or labels.max() >= k:
        raise ValueError(f"labels must be in [0, K={k}), got [{labels.min()}, {labels.max()}]")
    logits = logits.float()
    if not torch.isfinite(logits).all():
        raise ValueError("logits must be finite")
    return logits, labels


def _reliability(probs: torch.Tensor, labels: torch.Tensor,
                 n_bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean confidence, accuracy, count) per bin of the ECE, as torchmetrics bins (``probs``
    clipped below 1); nan confidence and accuracy for an empty bin."""
    conf, pred = probs.max(dim=1)
    edges = torch.linspace(0, 1, n_bins + 1, dtype=conf.dtype)
    idx = (torch.bucketize(conf, edges, right=True) - 1).numpy()
    count = np.bincount(idx, minlength=n_bins)
    conf_sum = np.bincount(idx, weights=conf.double().numpy(), minlength=n_bins)
    correct = np.bincount(idx, weights=(pred == labels).double().numpy(), minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        return conf_sum / count, correct / count, count.astype(np.int64)


def classification_metrics(logits: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray,
                           *, n_bins: int = 15) -> ClassificationMetrics:
    """The metrics of (N, K) ``logits`` against (N,) ``labels`` in [0, K); see the module
    docstring. ValueError on bad shapes, labels out of range or non-finite logits."""
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    logits, labels = _as_inputs(logits, labels)
    k = logits.shape[1]
    top_k = min(5, k)
    probs = torch.softmax(logits, dim=1)
    clipped = probs.clamp(0.0, float(_BELOW_ONE))
    confusion = multiclass_confusion_matrix(logits, labels, k).numpy().astype(np.int64)
    return ClassificationMetrics(
        top1=multiclass_accuracy(logits, labels, k, average="micro").item(),
        top5=multiclass_accuracy(logits, labels, k, top_k=top_k, average="micro").item(),
        top_k=top_k,
        loss=torch.nn.functional.cross_entropy(logits, labels).item(),
        ece=multiclass_calibration_error(clipped, labels, k, n_bins=n_bins, norm="l1").item(),
        n_bins=n_bins,
        per_class=np.diag(row_normalise(confusion)).copy(),
        confusion=confusion,
        reliability=_reliability(clipped, labels, n_bins),
        probs=probs.numpy(),
        _predictions=logits.argmax(dim=1).numpy(),
    )
