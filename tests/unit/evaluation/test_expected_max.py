"""E[max of n trials] (pipeline/evaluation/expected_max.py) against a brute-force enumeration of
every ordered n-tuple of draws, and its properties: the mean at n = 1, growth with n, the best
score as its limit, ties, the compute axis and bad input."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from pipeline.evaluation.expected_max import expected_max


def _brute(scores, n):
    """Mean and std of max over all len(scores)**n equally likely ordered draws."""
    maxima = [max(t) for t in itertools.product(scores, repeat=n)]
    return float(np.mean(maxima)), float(np.std(maxima))


@pytest.mark.parametrize("scores", [
    [0.71, 0.74, 0.69, 0.75, 0.60],
    [0.5, 0.5, 0.7, 0.7, 0.7],  # ties
    [0.3],
    [0.9, 0.1, 0.9, 0.2],
])
def test_matches_brute_force_over_every_draw(scores):
    curve = expected_max(scores, n_max=4)
    for n, mean, std in zip(curve.n, curve.mean, curve.std):
        want_mean, want_std = _brute(scores, n)
        assert mean == pytest.approx(want_mean, abs=1e-12), n
        assert std == pytest.approx(want_std, abs=1e-9), n


def test_properties():
    rng = np.random.default_rng(0)
    scores = rng.uniform(0.6, 0.8, 12)
    curve = expected_max(scores)
    assert curve.n == tuple(range(1, 13))
    assert curve.mean[0] == pytest.approx(scores.mean())
    assert all(b >= a for a, b in zip(curve.mean, curve.mean[1:]))  # more trials never hurt
    assert curve.mean[-1] < scores.max() and expected_max(scores, n_max=500).mean[-1] == \
        pytest.approx(scores.max(), abs=1e-6)
    assert all(math.isnan(c) for c in curve.compute)  # no costs given


def test_compute_is_n_times_the_mean_cost():
    curve = expected_max([0.5, 0.6, 0.7], costs=[10.0, 20.0, 30.0])
    assert curve.compute == (20.0, 40.0, 60.0)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"scores": []}, "non-empty"),
    ({"scores": [0.5, float("nan")]}, "finite"),
    ({"scores": [0.5, 0.6], "n_max": 0}, "n_max"),
    ({"scores": [0.5, 0.6], "costs": [1.0]}, "costs"),
    ({"scores": [0.5, 0.6], "costs": [1.0, -1.0]}, "costs"),
])
def test_bad_input_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        expected_max(**kwargs)
