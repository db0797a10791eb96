"""The test metrics computed from logits (pipeline/evaluation/metrics.py).

Checked against numpy computed by hand or independently: the ECE with known bins, the
reliability bins against the ECE, top-1/top-k, the cross-entropy (a numpy log-softmax), per-class
accuracy and the confusion matrix, the tie-breaking of the predictions, and refused inputs.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from pipeline.evaluation.metrics import (
    ClassificationMetrics,
    classification_metrics,
    row_normalise,
)


def _logits_of(probs) -> np.ndarray:
    """Logits whose softmax is ``probs`` (up to float32 rounding)."""
    return np.log(np.asarray(probs, dtype=np.float64)).astype(np.float32)


def _random_logits(rng: np.random.Generator, labels: np.ndarray, k: int, *, skill: float,
                   temperature: float = 1.0) -> np.ndarray:
    n = len(labels)
    z = rng.normal(0.0, 1.0, (n, k))
    z[np.arange(n), labels] += skill * rng.uniform(0.3, 1.7, n)
    return (z / temperature).astype(np.float32)


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def _ece_from_bins(m: ClassificationMetrics) -> float:
    conf, acc, count = m.reliability
    seen = count > 0
    return float(np.sum(count[seen] / count.sum() * np.abs(acc[seen] - conf[seen])))


def test_ece_of_a_constant_confidence():
    """All confidences 0.75, 60% correct: one bin ([11/15, 12/15)), ECE = |0.6 - 0.75| = 0.15."""
    logits = np.tile(np.array([math.log(12.0), 0, 0, 0, 0], np.float32), (10, 1))
    labels = np.array([0] * 6 + [1] * 4)
    m = classification_metrics(logits, labels, n_bins=15)
    assert m.probs[0, 0] == pytest.approx(0.75, abs=1e-6)
    assert m.ece == pytest.approx(0.15, abs=1e-6)
    conf, acc, count = m.reliability
    assert count.sum() == 10 and np.count_nonzero(count) == 1
    b = int(np.flatnonzero(count)[0])
    assert b == 11
    assert conf[b] == pytest.approx(0.75) and acc[b] == pytest.approx(0.6)
    assert m.top1 == pytest.approx(0.6) and m.n_bins == 15


def test_ece_and_reliability_bins_agree_with_a_hand_computation():
    """Three groups in known bins of 10: conf 0.95 all right, 0.55 half right, and saturated
    (a softmax of exactly 1.0) 3 of 4 right, which must land in the top bin (not a bin of its
    own, as torchmetrics would put it unclipped)."""
    hi = np.tile(_logits_of([0.95, 0.03, 0.02]), (10, 1))  # bin 9, 10/10 right
    mid = np.tile(_logits_of([0.55, 0.25, 0.20]), (6, 1))  # bin 5, 3/6 right
    sat = np.tile(np.array([100.0, 0.0, 0.0], np.float32), (4, 1))  # bin 9, 3/4 right
    logits = np.concatenate([hi, mid, sat])
    labels = np.array([0] * 10 + [0, 0, 0, 1, 1, 2] + [0, 0, 0, 1])
    m = classification_metrics(logits, labels, n_bins=10)
    assert m.probs[-1, 0] == 1.0  # saturated indeed
    conf, acc, count = m.reliability
    assert count.tolist() == [0, 0, 0, 0, 0, 6, 0, 0, 0, 14]
    assert acc[5] == pytest.approx(0.5) and acc[9] == pytest.approx(13 / 14)
    assert conf[9] == pytest.approx((10 * 0.95 + 4 * 1.0) / 14, abs=1e-6)
    assert np.isnan(conf[0]) and np.isnan(acc[0])
    hand = 6 / 20 * abs(0.5 - 0.55) + 14 / 20 * abs(13 / 14 - (9.5 + 4) / 14)
    assert m.ece == pytest.approx(hand, abs=1e-5)
    assert m.ece == pytest.approx(_ece_from_bins(m), abs=1e-6)


@pytest.mark.parametrize("temperature", [0.2, 1.0, 3.0])
def test_reliability_bins_agree_with_ece_on_random_logits(temperature):
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 7, 500)
    logits = _random_logits(rng, labels, 7, skill=2.5, temperature=temperature)
    for n_bins in (5, 15):
        m = classification_metrics(logits, labels, n_bins=n_bins)
        count = m.reliability[2]
        assert len(count) == n_bins and count.sum() == 500 and count.dtype == np.int64
        assert m.ece == pytest.approx(_ece_from_bins(m), abs=1e-5)


def test_accuracies_loss_and_confusion_equal_numpy():
    rng = np.random.default_rng(1)
    n, k = 300, 8
    labels = rng.integers(0, k, n)
    labels[labels == 7] = 6  # class 7 has no test image
    logits = _random_logits(rng, labels, k, skill=1.5)
    m = classification_metrics(logits, labels)
    pred = logits.argmax(1)
    top5 = np.argsort(-logits, axis=1)[:, :5]
    assert m.top_k == 5
    assert m.top1 == pytest.approx(np.mean(pred == labels), abs=1e-6)
    assert m.top5 == pytest.approx(np.mean((top5 == labels[:, None]).any(1)), abs=1e-6)
    assert m.top5 > m.top1
    nll = -_log_softmax(logits)[np.arange(n), labels].mean()
    assert m.loss == pytest.approx(nll, rel=1e-5)
    np.testing.assert_allclose(m.probs, np.exp(_log_softmax(logits)), rtol=1e-5, atol=1e-7)
    assert m.probs.dtype == np.float32 and m.probs.shape == (n, k)
    np.testing.assert_array_equal(m.predictions, pred)
    for c in range(7):
        assert m.per_class[c] == pytest.approx(np.mean(pred[labels == c] == c), abs=1e-9)
    assert np.isnan(m.per_class[7])
    counts = np.zeros((k, k), int)
    np.add.at(counts, (labels, pred), 1)
    np.testing.assert_array_equal(m.confusion, counts)
    assert m.confusion.dtype == np.int64


def test_tensor_inputs_equal_numpy_inputs():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 5, 64)
    logits = _random_logits(rng, labels, 5, skill=2.0)
    a = classification_metrics(logits, labels)
    b = classification_metrics(torch.tensor(logits, requires_grad=True), torch.tensor(labels))
    for key in ("top1", "top5", "loss", "ece"):
        assert getattr(a, key) == getattr(b, key), key
    np.testing.assert_array_equal(a.confusion, b.confusion)
    half = classification_metrics(torch.tensor(logits).to(torch.bfloat16), labels)
    assert half.probs.dtype == np.float32 and math.isfinite(half.loss)


def test_top_k_is_capped_by_the_number_of_classes():
    logits = np.array([[-50.0, 2.0, 1.0], [0.0, 1.0, 2.0]], np.float32)
    labels = np.array([0, 0])
    m = classification_metrics(logits, labels)
    assert m.top_k == 3
    assert m.top1 == 0.0 and m.top5 == 1.0  # top-3 of 3 classes
    two = classification_metrics(np.array([[0.0, 1.0], [1.0, 0.0]], np.float32), [0, 0])
    assert two.top_k == 2 and two.top1 == 0.5 and two.top5 == 1.0


def test_extreme_logits_give_a_finite_loss():
    """The cross-entropy of the logits, not a log of a probability that underflowed to 0."""
    logits = np.array([[-1e4, 1e4, 0.0], [3e4, 0.0, -3e4]], np.float32)
    labels = np.array([0, 0])
    m = classification_metrics(logits, labels)
    assert math.isfinite(m.loss)
    assert m.loss == pytest.approx((2e4 + 0.0) / 2, rel=1e-6)
    assert m.probs[0, 0] == 0.0 and m.top1 == 0.5
    assert math.isfinite(m.ece) and 0 <= m.ece <= 1


def test_predictions_break_ties_as_torch_argmax_and_match_the_counts():
    """Equal logits: the first one. Logits too close for a float32 softmax (probabilities tie):
    still the larger logit, the one the accuracy and the confusion matrix count."""
    logits = np.array([[1.0, 1.0, 0.0], [0.0, 2.0, 2.0], [3.0, 3.0, 3.0], [0.0, 1e-8, -5.0]],
                      np.float32)
    labels = np.array([0, 1, 0, 1])
    m = classification_metrics(logits, labels)
    assert m.predictions.tolist() == [0, 1, 0, 1]
    assert m.probs[3, 0] == m.probs[3, 1]  # tied probabilities, distinct logits
    assert m.top1 == 1.0
    np.testing.assert_array_equal(np.diag(m.confusion), [2, 2, 0])
    wrong = classification_metrics(logits, np.array([1, 2, 1, 0]))
    assert wrong.top1 == 0.0 and np.trace(wrong.confusion) == 0


def test_summary_is_plain_python_numbers():
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 3, 40)
    labels[labels == 2] = 1  # class "c" has no test image
    m = classification_metrics(_random_logits(rng, labels, 3, skill=1.0), labels)
    s = m.summary(["a", "b", "c"])
    assert set(s) == {"top1", "top5", "loss", "ece", "per_class_acc"}
    assert all(type(s[key]) is float for key in ("top1", "top5", "loss", "ece"))
    assert (s["top1"], s["loss"], s["ece"]) == (m.top1, m.loss, m.ece)
    assert list(s["per_class_acc"]) == ["a", "b", "c"]
    assert s["per_class_acc"]["a"] == m.per_class[0] and math.isnan(s["per_class_acc"]["c"])
    assert all(type(a) is float for a in s["per_class_acc"].values())
    json.dumps(s)
    with pytest.raises(ValueError, match="class names"):
        m.summary(["a", "b"])


def test_row_normalise():
    counts = np.array([[3, 1], [0, 0]])
    norm = row_normalise(counts)
    assert norm[0].tolist() == [0.75, 0.25] and np.isnan(norm[1]).all()


@pytest.mark.parametrize(("logits", "labels", "match"), [
    (np.zeros(4, np.float32), np.zeros(4, int), r"logits must be \(N, K\)"),
    (np.zeros((0, 3), np.float32), np.zeros(0, int), r"logits must be \(N, K\)"),
    (np.zeros((4, 1), np.float32), np.zeros(4, int), "K >= 2"),
    (np.zeros((4, 3), np.float32), np.zeros(3, int), r"labels must be \(N=4,\)"),
    (np.zeros((4, 3), np.float32), np.zeros((4, 1), int), r"labels must be \(N=4,\)"),
    (np.zeros((4, 3), np.float32), np.array([0, 1, 2, 3]), r"in \[0, K=3\)"),
    (np.zeros((4, 3), np.float32), np.array([0, -1, 2, 1]), r"in \[0, K=3\)"),
    (np.zeros((4, 3), np.float32), np.array([0.0, 1.0, 2.0, 1.0]), "integers"),
    (np.array([[0, np.nan, 1]] * 4, np.float32), np.zeros(4, int), "finite"),
    (np.array([[0, np.inf, 1]] * 4, np.float32), np.zeros(4, int), "finite"),
])
def test_bad_inputs_are_refused(logits, labels, match):
    with pytest.raises(ValueError, match=match):
        classification_metrics(logits, labels)


@pytest.mark.parametrize("n_bins", [0, -3, 2.5, True])
def test_bad_n_bins_is_refused(n_bins):
    with pytest.raises(ValueError, match="n_bins"):
        classification_metrics(np.zeros((2, 2), np.float32), [0, 1], n_bins=n_bins)
